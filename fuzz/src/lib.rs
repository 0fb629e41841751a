//! Fuzzing of `replicad`'s receive path: the frame decoder, the session's sequencer and
//! the `Hello` handshake. The targets in `fuzz_targets/` call [`session::run`] and
//! [`hello::run`]; `seed-corpus` writes their seed inputs from [`seeds`].

pub mod hello;
pub mod input;
pub mod seeds;
pub mod session;
pub mod stream;
