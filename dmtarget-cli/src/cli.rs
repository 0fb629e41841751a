//! The `arepl` command line, as clap definitions; shared by the binary and the
//! man page and completion generator.

use std::net::SocketAddr;
use std::path::PathBuf;

use arepl_core::table::DEFAULT_QUEUE_MB;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "arepl",
    version,
    about = "Manage dm-arepl asynchronous replication"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a replicated device NAME on top of a block device.
    Create {
        /// Name of the new device-mapper device (/dev/mapper/NAME).
        name: String,
        /// Local block device that receives every write.
        #[arg(long)]
        dev: PathBuf,
        /// replicad address on the primary link (ip:port or [ipv6]:port).
        #[arg(long)]
        primary: SocketAddr,
        /// replicad address on the backup link.
        #[arg(long)]
        backup: Option<SocketAddr>,
        /// Bound of the in-kernel replication queue, in MiB.
        #[arg(long, default_value_t = DEFAULT_QUEUE_MB)]
        queue_mb: u32,
        /// Volume name the receiver checks (defaults to NAME).
        #[arg(long)]
        volume: Option<String>,
        /// Spill device for when no link is up and the queue is full (first 4 KiB
        /// zeroes, or this volume's spill log).
        #[arg(long)]
        spill: Option<PathBuf>,
    },
    /// Remove a replicated device.
    Remove {
        /// Name of the device-mapper device.
        name: String,
    },
    /// Show the state of one or all replicated devices.
    Status {
        /// Only this device.
        name: Option<String>,
    },
}

/// The clap command, for generating man pages and shell completions.
pub fn command() -> clap::Command {
    Cli::command()
}
