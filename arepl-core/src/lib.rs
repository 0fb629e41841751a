//! Replication logic shared by the `dm-arepl` kernel module and the userspace tools.
//!
//! Every module here is `no_std`, allocation-free and safe, so the kernel module can
//! compile the very same source files (it includes them by path) while `cargo test`
//! exercises them in userspace.
#![no_std]
#![warn(missing_docs)]

pub mod activity_log;
pub mod auth;
pub mod copy_plan;
pub mod copy_policy;
pub mod crc32c;
pub mod digest;
pub mod fifo;
pub mod history;
pub mod liveness;
pub mod range_table;
pub mod rate;
pub mod regions;
pub mod spill;
pub mod status;
pub mod table;
pub mod verify;
pub mod wire;
pub mod xxh64;
