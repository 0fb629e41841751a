//! The `arepl-send` test client: a deterministic write stream and malformed input, for
//! the integration tests and the VM suite.

pub mod client;
pub mod malformed;
pub mod workload;
