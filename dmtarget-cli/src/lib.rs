//! The `arepl` tool's command-line definition, shared with the documentation generator.

pub mod cli;
