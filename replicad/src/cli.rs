//! The `replicad` command line, in the library so that documentation generators (man
//! pages, shell completions) build from the same definition as the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::protection::SnapshotMode;

/// The `replicad` command line.
#[derive(Debug, Parser)]
#[command(
    name = "replicad",
    version,
    about = "Apply dm-arepl replication streams on the DR host",
    long_about = "Apply dm-arepl replication streams on the DR host.\n\n\
        Serves with `replicad --listen ADDR:PORT --target PATH --state-dir DIR` or \
        `replicad --config FILE` (TOML with listen, target, state_dir, metrics_listen, \
        before_resync, resync_snapshot, resync_snapshot_size, key_file, next_key_file, \
        metrics_allow_remote; flags override it). \
        One session at a time: a new sender for the same volume takes over from the active \
        one. SIGTERM or SIGINT makes applied entries durable and exits. \
        Logs go to stderr; RUST_LOG filters them (default: info).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A subcommand; none serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to serve.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Options of the serving form.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file with `listen`, `target`, `state_dir` and optionally `metrics_listen`;
    /// flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept replication links on (`ip:port` or `[ipv6]:port`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// File or block device the replicated writes are applied to.
    #[arg(long, value_name = "PATH")]
    pub target: Option<PathBuf>,
    /// Directory for the durable sequence and volume identity.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Before a resync overwrites a consistent replica, run CMD with `sh -c` (env:
    /// AREPL_VOLUME, AREPL_TARGET, AREPL_HISTORY, AREPL_DURABLE_SEQ,
    /// AREPL_RESYNC_HISTORY); a non-zero exit refuses the resync.
    #[arg(long, value_name = "CMD")]
    pub before_resync: Option<String>,
    /// Before a resync overwrites a consistent replica on an LVM logical volume, keep
    /// its image in the snapshot LV_arepl_resync until the resync completes (auto,
    /// the default), or not (none).
    #[arg(long, value_name = "MODE")]
    pub resync_snapshot: Option<SnapshotMode>,
    /// Size of that snapshot: lvcreate -l when it has a % (default 100%ORIGIN), else -L.
    #[arg(long, value_name = "SIZE")]
    pub resync_snapshot_size: Option<String>,
    /// Senders must prove this pre-shared key (64 hex digits, root-only file) before
    /// any frame of theirs is applied; read at each handshake.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// During a key rollover, a second key senders may prove instead.
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub next_key_file: Option<PathBuf>,
    /// Allow --metrics-listen on a non-loopback address (/metrics is unauthenticated).
    #[arg(long)]
    pub metrics_allow_remote: bool,
    /// Only check the target and state directory, then exit.
    #[arg(long)]
    pub check: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the persisted durable sequence and volume identity, and the live figures of
    /// a running replicad when its metrics address is known.
    Status {
        /// State directory to read.
        #[arg(long, value_name = "DIR", required_unless_present = "config")]
        state_dir: Option<PathBuf>,
        /// Take the state directory (and `metrics_listen`) from this config file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also fetch live metrics from a replicad serving them on ADDR:PORT.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<SocketAddr>,
        /// Only say whether the replica is a consistent image (for promotion tools):
        /// exit 0 if it is, 3 if it is not (resyncing, diverged, or no history).
        #[arg(long, conflicts_with = "metrics")]
        check_consistent: bool,
    },
}

/// The clap command, for generating man pages and completions.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_definition_is_consistent() {
        command().debug_assert();
    }
}
