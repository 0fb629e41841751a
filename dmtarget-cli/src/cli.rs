//! The `arepl` command line, as clap definitions; shared by the binary and the
//! man page and completion generator.

use std::net::SocketAddr;
use std::path::PathBuf;

use arepl_core::table::{
    SpillFullPolicy, DEFAULT_KO_COUNT, DEFAULT_QUEUE_MB, DEFAULT_REGION_KB, DEFAULT_RESYNC_MBPS,
};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Default directory of the persistent configuration.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/arepl";

#[derive(Debug, Parser)]
#[command(
    name = "arepl",
    version,
    about = "Manage dm-arepl asynchronous block replication",
    long_about = "Manage dm-arepl asynchronous block replication: put it under an LVM logical \
                  volume online (convert/revert) or on a plain block device (create/remove), \
                  report its state (status), steer its links (switch-link, pause, resume) and \
                  apply the volumes described in /etc/arepl/*.toml at boot (up/down)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How the replication of a device is set up; shared by convert and create.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LinkArgs {
    /// replicad address on the primary link (ip:port or [ipv6]:port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub primary: SocketAddr,
    /// replicad address on the backup link, used while the primary link is down.
    #[arg(long, value_name = "ADDR:PORT")]
    pub backup: Option<SocketAddr>,
    /// Bound of the in-kernel replication queue, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_QUEUE_MB)]
    pub queue_mb: u32,
    /// Volume name replicad checks (defaults to the device-mapper name).
    #[arg(long)]
    pub volume: Option<String>,
    /// What the replica holds now: `full` copies the whole volume to it first (the
    /// replica is consistent once that is acknowledged); `none` when it already is
    /// an identical copy (both blank, or seeded).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = InitialSync::Full)]
    pub initial_sync: InitialSync,
    /// Periods of 5 s a live replicad may acknowledge nothing before its session is
    /// dropped and made again (0: never).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KO_COUNT)]
    pub ko_count: u32,
    /// Size of a dirty-tracking region in KiB: a power of two from 64 to 1048576. A
    /// resync after --on-spill-full bitmap copies every region written meanwhile.
    #[arg(long, value_name = "KIB", default_value_t = DEFAULT_REGION_KB)]
    pub region_kb: u32,
    /// What writes do when the memory queue and the spill log are both full (or no
    /// link is up and no spill device can take them): `block` makes writers wait until
    /// a link drains the log; `bitmap` stops queueing data and tracks dirty regions for
    /// a later resync, so writers go on at local speed.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = OnSpillFull::Bitmap)]
    pub on_spill_full: OnSpillFull,
    /// Rate limit of resync and initial-copy reads, in MiB/s, 0 to 100000 (0:
    /// unlimited).
    #[arg(long, value_name = "MIB/S", default_value_t = DEFAULT_RESYNC_MBPS)]
    pub resync_mbps: u32,
    /// Whether each write carries a checksum of its payload (XXH64) that replicad
    /// checks (as DRBD's data-integrity-alg): `off` saves the primary a pass over every
    /// byte sent and leaves the payload to TCP's own checksum.
    #[arg(long, value_enum, value_name = "ON|OFF", default_value_t = Switch::On)]
    pub wire_crc: Switch,
    /// Authenticate the links with the pre-shared key in FILE (64 hex digits, readable
    /// by root only; replicad holds the same with --key-file): loaded into the kernel
    /// keyring as the logon key arepl:VOLUME and named on the table line.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// With --key-file: whether the links are encrypted (kernel TLS, AES-128-GCM).
    #[arg(long, value_enum, value_name = "ON|OFF", default_value_t = Switch::On)]
    pub encrypt: Switch,
}

/// A feature turned on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

/// Whether the volume is copied to the replica first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialSync {
    /// Copy the whole volume, in order with new writes.
    Full,
    /// The replica is already identical.
    None,
}

/// What writes do when neither the memory queue nor the spill log can take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSpillFull {
    /// Writers wait until a link drains the log.
    Block,
    /// Track dirty regions for a later resync; writers go on at local speed.
    Bitmap,
}

impl OnSpillFull {
    /// The table line's policy.
    pub fn policy(self) -> SpillFullPolicy {
        match self {
            Self::Block => SpillFullPolicy::Block,
            Self::Bitmap => SpillFullPolicy::Bitmap,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Put replication under an active LVM logical volume, online: its table moves to a
    /// hidden VG-LV-arepl_real device and an arepl table over it is loaded into the LV's
    /// own device with suspend/load/resume, so mounts and open files keep working.
    Convert {
        /// The logical volume, VG/LV.
        lv: String,
        #[command(flatten)]
        link: LinkArgs,
        /// Spill device for when no link is up and the queue is full: an LV (VG/LV) or
        /// a block device path. Its first 4 KiB must be zeroes, or hold this volume's
        /// spill log.
        #[arg(long, value_name = "VG/LV|DEV")]
        spill: Option<String>,
    },
    /// Take replication away from a converted LV: waits until the queue is drained, then
    /// loads the LV's original table back, online.
    Revert {
        /// The logical volume, VG/LV.
        lv: String,
        /// Do not wait for the queue: writes not yet acknowledged never reach the replica
        /// (the command says how many).
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the queue to drain.
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        timeout: u64,
    },
    /// Create a replicated device NAME on top of a block device.
    Create {
        /// Name of the new device-mapper device (/dev/mapper/NAME).
        name: String,
        /// Local block device that receives every write.
        #[arg(long, value_name = "DEV")]
        dev: PathBuf,
        #[command(flatten)]
        link: LinkArgs,
        /// Spill device for when no link is up and the queue is full (first 4 KiB
        /// zeroes, or this volume's spill log).
        #[arg(long, value_name = "DEV")]
        spill: Option<PathBuf>,
    },
    /// Remove a replicated device made by create (waits up to 30 s for the queue).
    Remove {
        /// Name of the device-mapper device.
        name: String,
    },
    /// Show the state of one or all replicated devices.
    Status {
        /// Only this device (device-mapper name or VG/LV).
        name: Option<String>,
        /// Machine-readable output (schema in docs/status-json.md).
        #[arg(long)]
        json: bool,
        /// Print again every --interval seconds until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between two reports with --watch.
        #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
        interval: f64,
    },
    /// End the session on the active link and continue on the other one.
    SwitchLink {
        /// Device-mapper name or VG/LV.
        name: String,
    },
    /// Stop sending: writes queue (and spill) until resume.
    Pause {
        /// Device-mapper name or VG/LV.
        name: String,
    },
    /// Resume sending after pause.
    Resume {
        /// Device-mapper name or VG/LV.
        name: String,
    },
    /// Check the replica against this volume, online: each chunk is hashed on both sides
    /// at the same point of the write order, so writes running meanwhile cause no false
    /// alarm. Progress and mismatches show in status.
    Verify {
        /// Device-mapper name or VG/LV.
        name: String,
        /// Send the chunks found different again.
        #[arg(long)]
        repair: bool,
        /// Wait until every check is acknowledged and report; exit status 3 if chunks
        /// differed.
        #[arg(long)]
        wait: bool,
    },
    /// Set up every volume described in CONFIG_DIR/*.toml that is not up yet.
    Up {
        /// Directory of the volume descriptions.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
        config_dir: PathBuf,
        /// Only this volume (its file name without .toml).
        only: Option<String>,
    },
    /// Tear down every volume described in CONFIG_DIR/*.toml, after draining it.
    Down {
        /// Directory of the volume descriptions.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
        config_dir: PathBuf,
        /// Only this volume (its file name without .toml).
        only: Option<String>,
        /// Do not wait for queues to drain.
        #[arg(long)]
        force: bool,
    },
}

/// The clap command, for generating man pages and shell completions.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_link(extra: &[&str]) -> LinkArgs {
        let mut argv = vec!["arepl", "create", "db", "--dev", "/dev/sdb"];
        argv.extend(["--primary", "10.0.0.2:7788"]);
        argv.extend(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Create { link, .. } => link,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn region_spill_full_and_resync_options() {
        let link = create_link(&[]);
        assert_eq!(link.region_kb, DEFAULT_REGION_KB);
        assert_eq!(link.on_spill_full, OnSpillFull::Bitmap);
        assert_eq!(link.resync_mbps, DEFAULT_RESYNC_MBPS);
        assert_eq!(link.wire_crc, Switch::On);
        let link = create_link(&[
            "--region-kb",
            "128",
            "--on-spill-full",
            "block",
            "--resync-mbps",
            "40",
            "--wire-crc",
            "off",
        ]);
        assert_eq!(link.wire_crc, Switch::Off);
        assert_eq!(link.region_kb, 128);
        assert_eq!(link.on_spill_full, OnSpillFull::Block);
        assert_eq!(link.on_spill_full.policy(), SpillFullPolicy::Block);
        assert_eq!(link.resync_mbps, 40);
        let argv = ["arepl", "convert", "vg/lv", "--primary", "10.0.0.2:1"];
        let bad = [&argv[..], &["--on-spill-full", "drop"]].concat();
        assert!(Cli::try_parse_from(bad).is_err());
        let ok = [
            &argv[..],
            &["--on-spill-full", "bitmap", "--region-kb", "64"],
        ]
        .concat();
        assert!(Cli::try_parse_from(ok).is_ok());
    }
}
