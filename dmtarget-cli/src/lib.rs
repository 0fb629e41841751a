//! The `arepl` tool: its command line (shared with the documentation generator) and
//! the pieces the binary is made of.

pub mod cli;
pub mod config;
pub mod convert;
pub mod dm;
pub mod drain;
pub mod lvm;
pub mod ops;
pub mod report;
pub mod setup;
pub mod updown;
