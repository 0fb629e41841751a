//! Device-mapper through its ioctl interface (the `devicemapper` crate): the few
//! operations `arepl` needs, with errors worded for an administrator.

use std::fmt;
use std::path::{Path, PathBuf};

use devicemapper::{
    errors, DevId, Device, DmError, DmFlags, DmName, DmOptions, DmUdevFlags, DmUuid, DM,
};

/// One table line: start and length in sectors, target type, parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLine {
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub length: u64,
    /// Target type (`linear`, `arepl`, ...).
    pub kind: String,
    /// Everything after the type.
    pub params: String,
}

impl fmt::Display for TargetLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.start, self.length, self.kind, self.params
        )
    }
}

/// What device-mapper says about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// `major:minor`.
    pub devnum: String,
    /// The device's UUID, if it has one.
    pub uuid: Option<String>,
    /// Openers (mounts, processes, stacked devices).
    pub open_count: i32,
    /// Whether I/O is held (suspended).
    pub suspended: bool,
}

/// A device-mapper context (an open `/dev/mapper/control`).
pub struct DeviceMapper {
    dm: DM,
}

impl fmt::Debug for DeviceMapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceMapper")
    }
}

/// A failed device-mapper operation, naming the operation and the device.
#[derive(Debug)]
pub struct DmFailure(String);

impl fmt::Display for DmFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DmFailure {}

impl From<DmFailure> for String {
    fn from(err: DmFailure) -> String {
        err.0
    }
}

type Result<T> = std::result::Result<T, DmFailure>;

/// The errno text of an ioctl failure ("ENXIO: No such device or address"), or the
/// library's own words; its Display of ioctl errors dumps raw headers.
fn reason(err: &DmError) -> String {
    match err {
        DmError::Core(errors::Error::Ioctl(_, _, _, errno)) => errno.to_string(),
        other => other.to_string(),
    }
}

/// Linux's ENXIO: device-mapper's answer for a name it does not know.
const ENXIO: i32 = 6;

fn is_missing(err: &DmError) -> bool {
    matches!(err, DmError::Core(errors::Error::Ioctl(_, _, _, errno)) if **errno as i32 == ENXIO)
}

fn name(text: &str) -> Result<&DmName> {
    DmName::new(text)
        .map_err(|err| DmFailure(format!("invalid device name '{text}': {}", reason(&err))))
}

impl DeviceMapper {
    /// Opens the control device.
    pub fn open() -> Result<Self> {
        DM::new().map(|dm| Self { dm }).map_err(|err| {
            DmFailure(format!(
                "cannot open /dev/mapper/control (are you root, is dm-mod loaded?): {}",
                reason(&err)
            ))
        })
    }

    /// State of device `dev`, or `None` if there is no such device.
    pub fn state(&self, dev: &str) -> Result<Option<DeviceState>> {
        match self.dm.device_info(&DevId::Name(name(dev)?)) {
            Ok(info) => Ok(Some(DeviceState {
                devnum: info.device().to_string(),
                uuid: info.uuid().map(|uuid| uuid.to_string()),
                open_count: info.open_count(),
                suspended: info.flags().contains(DmFlags::DM_SUSPEND),
            })),
            Err(err) if is_missing(&err) => Ok(None),
            Err(err) => Err(DmFailure(format!("cannot query {dev}: {}", reason(&err)))),
        }
    }

    /// The live table of `dev`.
    pub fn table(&self, dev: &str) -> Result<Vec<TargetLine>> {
        self.lines(
            dev,
            DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
            "table",
        )
    }

    /// The status lines of `dev`'s live table.
    pub fn status(&self, dev: &str) -> Result<Vec<TargetLine>> {
        // NOFLUSH: reading status must not wait for queued I/O.
        self.lines(
            dev,
            DmOptions::default().set_flags(DmFlags::DM_NOFLUSH),
            "status",
        )
    }

    fn lines(&self, dev: &str, options: DmOptions, what: &str) -> Result<Vec<TargetLine>> {
        let (_, lines) = self
            .dm
            .table_status(&DevId::Name(name(dev)?), options)
            .map_err(|err| {
                DmFailure(format!("cannot read the {what} of {dev}: {}", reason(&err)))
            })?;
        Ok(lines
            .into_iter()
            .map(|(start, length, kind, params)| TargetLine {
                start,
                length,
                kind,
                params,
            })
            .collect())
    }

    /// Names of all devices, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .dm
            .list_devices()
            .map_err(|err| DmFailure(format!("cannot list devices: {}", reason(&err))))?
            .into_iter()
            .map(|(name, _, _)| name.to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Whether the kernel has the `arepl` target (the module is loaded).
    pub fn has_target(&self, kind: &str) -> Result<bool> {
        let versions = self
            .dm
            .list_versions()
            .map_err(|err| DmFailure(format!("cannot list targets: {}", reason(&err))))?;
        Ok(versions.iter().any(|(name, ..)| name == kind))
    }

    /// Creates `dev` with `table` and makes it live. A hidden device gets no udev
    /// symlinks and no /dev/mapper node of ours. On failure nothing is left behind.
    pub fn create(
        &self,
        dev: &str,
        uuid: Option<&str>,
        table: &[TargetLine],
        hidden: bool,
    ) -> Result<DeviceState> {
        let dm_name = name(dev)?;
        let uuid = uuid
            .map(|text| {
                DmUuid::new(text)
                    .map_err(|err| DmFailure(format!("invalid uuid '{text}': {}", reason(&err))))
            })
            .transpose()?;
        let options = if hidden {
            hidden_options()
        } else {
            DmOptions::default()
        };
        self.dm
            .device_create(dm_name, uuid, options)
            .map_err(|err| DmFailure(format!("cannot create {dev}: {}", reason(&err))))?;
        let made_live = self
            .load(dev, table)
            .and_then(|()| self.resume(dev))
            .and_then(|()| {
                self.state(dev)?
                    .ok_or_else(|| DmFailure(format!("{dev} vanished")))
            });
        match made_live {
            Ok(state) => {
                if !hidden {
                    devnode::ensure(dev, &state.devnum);
                }
                Ok(state)
            }
            Err(err) => {
                let _ = self
                    .dm
                    .device_remove(&DevId::Name(dm_name), DmOptions::default());
                Err(err)
            }
        }
    }

    /// Loads `table` into the inactive slot of `dev`; the target's constructor runs
    /// now, so this is where a refused table line fails.
    pub fn load(&self, dev: &str, table: &[TargetLine]) -> Result<()> {
        let lines: Vec<(u64, u64, String, String)> = table
            .iter()
            .map(|l| (l.start, l.length, l.kind.clone(), l.params.clone()))
            .collect();
        self.dm
            .table_load(&DevId::Name(name(dev)?), &lines, DmOptions::default())
            .map(drop)
            .map_err(|err| {
                DmFailure(format!(
                    "the kernel refused the table for {dev} ({}); its reason is in the kernel \
                     log (dmesg | grep device-mapper)",
                    reason(&err)
                ))
            })
    }

    /// Drops a table loaded into the inactive slot.
    pub fn clear_inactive(&self, dev: &str) -> Result<()> {
        self.dm
            .table_clear(&DevId::Name(name(dev)?))
            .map(drop)
            .map_err(|err| {
                DmFailure(format!(
                    "cannot clear the inactive table of {dev}: {}",
                    reason(&err)
                ))
            })
    }

    /// Suspends `dev`: waits for its in-flight I/O and freezes a mounted filesystem.
    pub fn suspend(&self, dev: &str) -> Result<()> {
        self.dm
            .device_suspend(
                &DevId::Name(name(dev)?),
                DmOptions::default().set_flags(DmFlags::DM_SUSPEND),
            )
            .map(drop)
            .map_err(|err| DmFailure(format!("cannot suspend {dev}: {}", reason(&err))))
    }

    /// Resumes `dev`, making a loaded inactive table live.
    pub fn resume(&self, dev: &str) -> Result<()> {
        self.dm
            .device_suspend(&DevId::Name(name(dev)?), DmOptions::default())
            .map(drop)
            .map_err(|err| DmFailure(format!("cannot resume {dev}: {}", reason(&err))))
    }

    /// Removes `dev` (fails while it is open).
    pub fn remove(&self, dev: &str) -> Result<()> {
        self.dm
            .device_remove(&DevId::Name(name(dev)?), DmOptions::default())
            .map_err(|err| DmFailure(format!("cannot remove {dev}: {}", reason(&err))))?;
        devnode::forget(dev);
        Ok(())
    }

    /// Sends a target message (`dmsetup message dev 0 text`).
    pub fn message(&self, dev: &str, text: &str) -> Result<()> {
        self.dm
            .target_msg(&DevId::Name(name(dev)?), Some(0), text)
            .map(drop)
            .map_err(|err| {
                DmFailure(format!(
                    "{dev} refused message '{text}' ({}); the kernel log says why",
                    reason(&err)
                ))
            })
    }
}

/// Options for a layer device nobody should mount or scan, as LVM creates its own.
fn hidden_options() -> DmOptions {
    DmOptions::default().set_udev_flags(
        DmUdevFlags::DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG
            | DmUdevFlags::DM_UDEV_DISABLE_DISK_RULES_FLAG
            | DmUdevFlags::DM_UDEV_DISABLE_OTHER_RULES_FLAG,
    )
}

/// `major:minor` of a block device node.
pub fn devnum_of(path: &Path) -> std::result::Result<String, String> {
    match devicemapper::devnode_to_devno(path) {
        Ok(Some(devno)) => Ok(Device::from(devno).to_string()),
        Ok(None) => Err(format!("{} is not a block device", path.display())),
        Err(err) => Err(format!("cannot stat {}: {}", path.display(), reason(&err))),
    }
}

/// `/dev/mapper/NAME` nodes when udev does not run (small systems, test VMs):
/// without udev nobody else creates them, as libdevmapper's fallback would.
mod devnode {
    use super::*;

    fn udev_running() -> bool {
        Path::new("/run/udev/control").exists()
    }

    fn path(dev: &str) -> PathBuf {
        Path::new("/dev/mapper").join(dev)
    }

    /// Makes `/dev/mapper/dev` point at `/dev/dm-N` unless udev does that.
    pub(super) fn ensure(dev: &str, devnum: &str) {
        if udev_running() || path(dev).exists() {
            return;
        }
        let Some(minor) = devnum.split_once(':').map(|(_, minor)| minor) else {
            return;
        };
        let _ = std::os::unix::fs::symlink(format!("../dm-{minor}"), path(dev));
    }

    /// Removes the symlink `ensure` made.
    pub(super) fn forget(dev: &str) {
        if udev_running() {
            return;
        }
        let link = path(dev);
        if link
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            let _ = std::fs::remove_file(link);
        }
    }
}
