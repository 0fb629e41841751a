//! Keeping the replica's last consistent image before a resync overwrites it: the
//! operator's `--before-resync` hook, then an LVM snapshot when the target is a logical
//! volume (`--resync-snapshot auto`, the default).
//!
//! A resync copies blocks in no write order, so until it completes the target is no
//! image of any moment; if the primary is lost meanwhile, the image kept here is all the
//! disaster-recovery site has. A protection that fails refuses the resync: nothing is
//! written and the sender tries again later.
//!
//! Blocking: the applier runs it on its own thread, so `Ack` heartbeats keep flowing
//! while a snapshot is taken.

use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use arepl_core::history::History;
use serde::Deserialize;

/// Snapshot size when none is configured: as large as the origin, so the snapshot can
/// never fill up whatever the resync rewrites.
pub const DEFAULT_SNAPSHOT_SIZE: &str = "100%ORIGIN";
/// Appended to the LV's name for the snapshot's.
pub const SNAPSHOT_SUFFIX: &str = "_arepl_resync";

/// Whether a resync takes an LVM snapshot of the target first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum SnapshotMode {
    /// When the target is an LVM logical volume.
    #[default]
    #[serde(rename = "auto")]
    #[value(name = "auto")]
    Auto,
    /// Never: a resync overwrites the only image (unless the hook keeps one).
    #[serde(rename = "none")]
    #[value(name = "none")]
    Disabled,
}

/// The LVM programs; tests point them at scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvmTools {
    /// `lvs`.
    pub lvs: PathBuf,
    /// `lvcreate`.
    pub lvcreate: PathBuf,
    /// `lvremove`.
    pub lvremove: PathBuf,
}

impl Default for LvmTools {
    fn default() -> Self {
        Self {
            lvs: "lvs".into(),
            lvcreate: "lvcreate".into(),
            lvremove: "lvremove".into(),
        }
    }
}

/// How a resync protects the replica's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncProtection {
    /// Shell command run first (`sh -c`); a failure refuses the resync.
    pub before_resync: Option<String>,
    /// Whether to snapshot an LVM target.
    pub snapshot: SnapshotMode,
    /// The snapshot's size: `lvcreate -l` when it has a `%`, else `-L`.
    pub snapshot_size: String,
    /// The LVM programs.
    pub lvm: LvmTools,
}

impl Default for ResyncProtection {
    fn default() -> Self {
        Self {
            before_resync: None,
            snapshot: SnapshotMode::Auto,
            snapshot_size: DEFAULT_SNAPSHOT_SIZE.to_string(),
            lvm: LvmTools::default(),
        }
    }
}

/// The image about to be protected, as the hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// The volume's name.
    pub volume: &'a str,
    /// The target's path.
    pub target: &'a Path,
    /// The history the image belongs to (`None`: recorded before histories).
    pub history: Option<History>,
    /// Its durable sequence.
    pub durable_seq: u64,
    /// The history the resync runs under.
    pub resync_history: History,
}

/// Why the image could not be protected: the resync is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtectionError {
    /// The hook failed or could not run.
    #[error("before-resync hook failed: {0}; the resync is refused and nothing was written")]
    Hook(String),
    /// `lvcreate` failed.
    #[error(
        "LVM snapshot {snapshot} for the resync failed: {detail}; the resync is refused and \
         nothing was written (--resync-snapshot none, or resync_snapshot = \"none\", lets it \
         run unprotected)"
    )]
    Snapshot {
        /// The snapshot's `VG/LV`.
        snapshot: String,
        /// What went wrong.
        detail: String,
    },
}

/// A logical volume, `VG/LV`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lv {
    vg: String,
    lv: String,
}

impl fmt::Display for Lv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vg, self.lv)
    }
}

impl ResyncProtection {
    /// Runs the hook, then snapshots an LVM target. Returns the snapshot (`VG/LV`) now
    /// held, to be removed once the resync is complete.
    pub fn protect(&self, image: &Image<'_>) -> Result<Option<String>, ProtectionError> {
        if let Some(command) = &self.before_resync {
            run_hook(command, image)?;
        }
        let snapshot = match self.snapshot {
            SnapshotMode::Disabled => None,
            SnapshotMode::Auto => match self.logical_volume(image.target)? {
                Some(lv) => Some(self.snapshot_of(&lv)?),
                None => None,
            },
        };
        if self.before_resync.is_none() && snapshot.is_none() {
            tracing::warn!(
                "the replica's last consistent image (durable seq {}) is not protected before \
                 this resync: no before-resync hook is configured and no LVM snapshot was taken",
                image.durable_seq
            );
        }
        Ok(snapshot)
    }

    /// Removes the snapshot `name` (`VG/LV`); one already gone is fine.
    pub fn remove_snapshot(&self, name: &str) -> Result<(), String> {
        if !self.lv_exists(name) {
            return Ok(());
        }
        let mut lvremove = Command::new(&self.lvm.lvremove);
        lvremove.args(["-y", name]);
        run(&mut lvremove).map(drop).map_err(|err| err.to_string())
    }

    /// The LV the target is, if it is one. Anything else (a file, another block device,
    /// no LVM installed) gets no snapshot, said at info level. A device that the kernel
    /// says is an LVM volume but `lvs` cannot name (a sandbox without access to LVM's
    /// locks, say) is an error: the resync must not run unprotected by accident.
    ///
    /// `lvs` runs only for a device the kernel says LVM made: it scans every block
    /// device of the host, and a scan that reads a device whose writes cannot complete
    /// blocks the resync with it (in a test VM, the primary's own device, waiting for
    /// this very receiver).
    fn logical_volume(&self, target: &Path) -> Result<Option<Lv>, ProtectionError> {
        let device = match BlockDevice::of(target) {
            Ok(device) => device,
            Err(why) => {
                tracing::info!("no LVM snapshot before the resync: {why}");
                return Ok(None);
            }
        };
        if !device.lvm_uuid {
            tracing::info!(
                "no LVM snapshot before the resync: {} is not an LVM logical volume (no LVM \
                 device-mapper uuid)",
                device.lvm_path.display()
            );
            return Ok(None);
        }
        let mut lvs = Command::new(&self.lvm.lvs);
        lvs.args(["--noheadings", "-o", "vg_name,lv_name"])
            .arg(&device.lvm_path);
        let listed = match run(&mut lvs) {
            Ok(output) => parse_lvs(&output).ok_or_else(|| "no VG and LV name".to_string()),
            Err(RunError::Spawn(why)) => {
                tracing::info!("no LVM snapshot before the resync: {why}");
                return Ok(None);
            }
            Err(RunError::Failed(why)) => Err(why),
        };
        listed.map(Some).map_err(|why| ProtectionError::Snapshot {
            snapshot: format!("of {}", device.lvm_path.display()),
            detail: format!("it is an LVM logical volume, but lvs cannot name it: {why}"),
        })
    }

    /// Creates `<lv>_arepl_resync` in the LV's group, or keeps the one an interrupted
    /// resync left (it holds the image from before that resync, the one to keep).
    fn snapshot_of(&self, lv: &Lv) -> Result<String, ProtectionError> {
        let name = format!("{}{SNAPSHOT_SUFFIX}", lv.lv);
        let snapshot = format!("{}/{name}", lv.vg);
        if self.lv_exists(&snapshot) {
            tracing::info!("keeping LVM snapshot {snapshot}, left by an earlier resync");
            return Ok(snapshot);
        }
        let size_flag = if self.snapshot_size.contains('%') {
            "-l"
        } else {
            "-L"
        };
        let mut lvcreate = Command::new(&self.lvm.lvcreate);
        lvcreate
            .args(["-s", "-n", &name, size_flag, &self.snapshot_size])
            .arg(lv.to_string());
        run(&mut lvcreate).map_err(|err| ProtectionError::Snapshot {
            snapshot: snapshot.clone(),
            detail: err.to_string(),
        })?;
        tracing::info!(
            "LVM snapshot {snapshot} of {lv} ({size_flag} {}) keeps the replica's image \
             until the resync completes",
            self.snapshot_size
        );
        Ok(snapshot)
    }

    fn lv_exists(&self, name: &str) -> bool {
        let mut lvs = Command::new(&self.lvm.lvs);
        lvs.args(["--noheadings", "-o", "lv_name", name]);
        run(&mut lvs).is_ok()
    }
}

/// Runs `command` with `sh -c`, the image described in its environment.
fn run_hook(command: &str, image: &Image<'_>) -> Result<(), ProtectionError> {
    tracing::info!("running before-resync hook: {command}");
    let history = image.history.map(|h| h.to_string()).unwrap_or_default();
    let mut hook = Command::new("sh");
    hook.args(["-c", command])
        .env("AREPL_VOLUME", image.volume)
        .env("AREPL_TARGET", image.target)
        .env("AREPL_HISTORY", history)
        .env("AREPL_DURABLE_SEQ", image.durable_seq.to_string())
        .env("AREPL_RESYNC_HISTORY", image.resync_history.to_string());
    run(&mut hook).map_err(|err| ProtectionError::Hook(err.to_string()))?;
    tracing::info!("before-resync hook succeeded");
    Ok(())
}

/// How a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RunError {
    /// It could not be started (not installed, say).
    #[error("{0}")]
    Spawn(String),
    /// It ran and failed.
    #[error("{0}")]
    Failed(String),
}

/// Runs a command to its end, its output logged line by line (these run only when a
/// resync begins or ends); the error says how it failed, with the last line of its
/// stderr.
fn run(command: &mut Command) -> Result<Output, RunError> {
    // LVM complains about every descriptor it inherits; replicad has sockets open.
    command
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(Stdio::null());
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .output()
        .map_err(|err| RunError::Spawn(format!("cannot run {program}: {err}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(stderr.lines())
    {
        tracing::info!("{program}: {line}");
    }
    if output.status.success() {
        return Ok(output);
    }
    let said = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| format!(" ({})", line.trim()))
        .unwrap_or_default();
    Err(RunError::Failed(format!(
        "{program} {}{said}",
        output.status
    )))
}

/// A block device as LVM sees it.
#[derive(Debug)]
struct BlockDevice {
    /// The path to ask `lvs` about: symlinks resolved, and a device-mapper node (which
    /// `lvs` does not take) named by its `/dev/mapper` path.
    lvm_path: PathBuf,
    /// The kernel says LVM made it (device-mapper uuid `LVM-...`).
    lvm_uuid: bool,
}

impl BlockDevice {
    /// The device `target` is; `Err` says why it is none.
    fn of(target: &Path) -> Result<Self, String> {
        let device = std::fs::canonicalize(target)
            .map_err(|err| format!("cannot resolve {}: {err}", target.display()))?;
        let is_block =
            std::fs::metadata(&device).is_ok_and(|meta| meta.file_type().is_block_device());
        if !is_block {
            return Err(format!(
                "the target {} is not a block device",
                target.display()
            ));
        }
        let dm_node = device
            .file_name()
            .and_then(|name| name.to_str())
            .filter(|name| name.starts_with("dm-"))
            .map(str::to_string);
        let sysfs = |file: &str| {
            let node = dm_node.as_ref()?;
            std::fs::read_to_string(format!("/sys/block/{node}/dm/{file}")).ok()
        };
        let lvm_uuid = sysfs("uuid").is_some_and(|uuid| uuid.starts_with("LVM-"));
        let lvm_path = match sysfs("name") {
            Some(name) => Path::new("/dev/mapper").join(name.trim()),
            None => device,
        };
        Ok(Self { lvm_path, lvm_uuid })
    }
}

/// `VG LV` from `lvs --noheadings -o vg_name,lv_name`.
fn parse_lvs(output: &Output) -> Option<Lv> {
    let text = String::from_utf8_lossy(&output.stdout);
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(vg), Some(lv), None) => Some(Lv {
            vg: vg.to_string(),
            lv: lv.to_string(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const RESYNC: History = History {
        uuid: [5; 16],
        counter: 2,
    };

    fn image(target: &Path) -> Image<'_> {
        Image {
            volume: "db",
            target,
            history: Some(History {
                uuid: [5; 16],
                counter: 1,
            }),
            durable_seq: 42,
            resync_history: RESYNC,
        }
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// LVM programs that log their arguments to `lvm.log` in `dir`; `lvs` lists only
    /// the LVs named in `lvs.list`.
    fn fake_lvm(dir: &Path, lvcreate_status: u8) -> LvmTools {
        let log = dir.join("lvm.log");
        let list = dir.join("lvs.list");
        std::fs::write(&list, "").unwrap();
        LvmTools {
            lvs: script(
                dir,
                "lvs",
                &format!(
                    "echo lvs \"$@\" >> {log:?}\nlast=\"\"; for a in \"$@\"; do last=\"$a\"; done\n\
                     grep -qx \"$last\" {list:?}"
                ),
            ),
            lvcreate: script(
                dir,
                "lvcreate",
                &format!(
                    "echo lvcreate \"$@\" >> {log:?}\necho '  Insufficient free space' >&2\n\
                     exit {lvcreate_status}"
                ),
            ),
            lvremove: script(dir, "lvremove", &format!("echo lvremove \"$@\" >> {log:?}")),
        }
    }

    fn log(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("lvm.log")).unwrap_or_default()
    }

    #[test]
    fn a_file_target_gets_no_snapshot_and_no_lvm_call() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.img");
        std::fs::write(&target, [0u8; 512]).unwrap();
        let protection = ResyncProtection {
            lvm: fake_lvm(dir.path(), 0),
            ..ResyncProtection::default()
        };
        assert_eq!(protection.protect(&image(&target)), Ok(None));
        assert_eq!(log(dir.path()), "");
    }

    #[test]
    fn the_hook_sees_the_image_and_its_failure_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.img");
        std::fs::write(&target, [0u8; 512]).unwrap();
        let env = dir.path().join("env");
        let protection = ResyncProtection {
            before_resync: Some(format!("env | grep ^AREPL_ | sort > {env:?}")),
            snapshot: SnapshotMode::Disabled,
            ..ResyncProtection::default()
        };
        assert_eq!(protection.protect(&image(&target)), Ok(None));
        let seen = std::fs::read_to_string(&env).unwrap();
        assert_eq!(
            seen,
            format!(
                "AREPL_DURABLE_SEQ=42\nAREPL_HISTORY=05050505-0505-0505-0505-050505050505:1\n\
                 AREPL_RESYNC_HISTORY=05050505-0505-0505-0505-050505050505:2\n\
                 AREPL_TARGET={}\nAREPL_VOLUME=db\n",
                target.display()
            )
        );
        let failing = ResyncProtection {
            before_resync: Some("echo checking; echo 'no space for a backup' >&2; exit 3".into()),
            ..protection
        };
        let err = failing.protect(&image(&target)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "before-resync hook failed: sh exit status: 3 (no space for a backup); the resync \
             is refused and nothing was written"
        );
    }

    #[test]
    fn a_snapshot_is_created_kept_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let protection = ResyncProtection {
            lvm: fake_lvm(dir.path(), 0),
            ..ResyncProtection::default()
        };
        let lv = Lv {
            vg: "vg_dr".to_string(),
            lv: "db".to_string(),
        };
        assert_eq!(
            protection.snapshot_of(&lv),
            Ok("vg_dr/db_arepl_resync".to_string())
        );
        assert_eq!(
            log(dir.path()),
            "lvs --noheadings -o lv_name vg_dr/db_arepl_resync\n\
             lvcreate -s -n db_arepl_resync -l 100%ORIGIN vg_dr/db\n"
        );
        // Left by an interrupted resync: kept, not created again.
        std::fs::write(dir.path().join("lvs.list"), "vg_dr/db_arepl_resync\n").unwrap();
        std::fs::remove_file(dir.path().join("lvm.log")).unwrap();
        let sized = ResyncProtection {
            snapshot_size: "2G".to_string(),
            ..protection.clone()
        };
        assert_eq!(
            sized.snapshot_of(&lv),
            Ok("vg_dr/db_arepl_resync".to_string())
        );
        assert!(!log(dir.path()).contains("lvcreate"));
        assert_eq!(protection.remove_snapshot("vg_dr/db_arepl_resync"), Ok(()));
        assert!(log(dir.path()).ends_with("lvremove -y vg_dr/db_arepl_resync\n"));
        // Gone already: nothing to do.
        std::fs::write(dir.path().join("lvs.list"), "").unwrap();
        std::fs::remove_file(dir.path().join("lvm.log")).unwrap();
        assert_eq!(protection.remove_snapshot("vg_dr/db_arepl_resync"), Ok(()));
        assert!(!log(dir.path()).contains("lvremove"));
        // An absolute size goes to -L.
        std::fs::write(dir.path().join("lvs.list"), "").unwrap();
        sized.snapshot_of(&lv).unwrap();
        assert!(log(dir.path()).contains("lvcreate -s -n db_arepl_resync -L 2G vg_dr/db\n"));
    }

    #[test]
    fn a_failed_lvcreate_refuses_and_names_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let protection = ResyncProtection {
            lvm: fake_lvm(dir.path(), 5),
            ..ResyncProtection::default()
        };
        let lv = Lv {
            vg: "vg".to_string(),
            lv: "db".to_string(),
        };
        let err = protection.snapshot_of(&lv).unwrap_err().to_string();
        assert!(
            err.starts_with("LVM snapshot vg/db_arepl_resync for the resync failed: "),
            "{err}"
        );
        assert!(
            err.contains("exit status: 5 (Insufficient free space)"),
            "{err}"
        );
        assert!(err.contains("--resync-snapshot none"), "{err}");
    }

    #[test]
    fn lvs_output_and_missing_programs() {
        let output = |stdout: &str| Output {
            status: Command::new("true").status().unwrap(),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        };
        assert_eq!(
            parse_lvs(&output("  vg_dr   db\n")),
            Some(Lv {
                vg: "vg_dr".to_string(),
                lv: "db".to_string()
            })
        );
        assert_eq!(parse_lvs(&output("")), None);
        assert_eq!(parse_lvs(&output("  a b c\n")), None);
        let err = run(&mut Command::new("/nonexistent/lvs")).unwrap_err();
        assert!(matches!(err, RunError::Spawn(_)), "{err}");
        assert!(
            err.to_string().starts_with("cannot run /nonexistent/lvs: "),
            "{err}"
        );
        assert!(BlockDevice::of(Path::new("/nonexistent/target")).is_err());
        let err = BlockDevice::of(Path::new("/dev/null")).unwrap_err();
        assert!(err.ends_with("is not a block device"), "{err}");
    }
}
