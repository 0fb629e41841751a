//! Plain-device operations (create, remove), state queries and target messages.

use std::path::Path;
use std::time::Duration;

use crate::cli::LinkArgs;
use crate::dm::DeviceMapper;
use crate::drain::{wait_drained, Backlog};
use crate::lvm::{self, LVM_UUID_PREFIX};
use crate::report::DeviceReport;
use crate::setup::{arepl_table, ensure_module, load_key, resolve_device};

/// Whether device `name` exists with an arepl table.
pub fn is_arepl(dm: &DeviceMapper, name: &str) -> Result<bool, String> {
    if dm.state(name)?.is_none() {
        return Ok(false);
    }
    Ok(dm.table(name)?.iter().any(|line| line.kind == "arepl"))
}

/// Creates arepl device `name` on block device `dev`.
pub fn create(
    dm: &DeviceMapper,
    name: &str,
    dev: &Path,
    link: &LinkArgs,
    spill: Option<&str>,
) -> Result<String, String> {
    if dm.state(name)?.is_some() {
        return Err(format!("a device named {name} already exists"));
    }
    let local = resolve_device(dm, &dev.display().to_string(), "local")?;
    let spill = spill.map(|s| resolve_device(dm, s, "spill")).transpose()?;
    let sectors = block_device_sectors(dev)?;
    let volume = link.volume.clone().unwrap_or_else(|| name.to_string());
    let table = arepl_table(&local, sectors, link, &volume, spill.as_deref())?;
    ensure_module(dm)?;
    load_key(link, &volume)?;
    let state = dm.create(
        name,
        Some(&format!("AREPL-{name}")),
        std::slice::from_ref(&table),
        false,
    )?;
    Ok(format!(
        "created /dev/mapper/{name} ({}): {table}",
        state.devnum
    ))
}

/// Removes arepl device `name` after its queue drained (at once with `force`).
pub fn remove(
    dm: &DeviceMapper,
    name: &str,
    force: bool,
    timeout: Duration,
) -> Result<String, String> {
    if !is_arepl(dm, name)? {
        return Err(format!("{name} is not an arepl device"));
    }
    let left = if force {
        dm.message(name, "pause")?;
        Backlog::of(dm, name)?
    } else {
        wait_drained(dm, name, timeout)?
    };
    if left.writes > 0 && !force {
        return Err(format!(
            "{name}: {} writes ({} bytes) still not acknowledged after {} s; nothing changed. \
             Retry, or use --force",
            left.writes,
            left.bytes,
            timeout.as_secs()
        ));
    }
    dm.remove(name)?;
    let mut done = format!("removed {name}");
    if left.writes > 0 {
        done.push_str(&format!(
            "; {} writes ({} bytes) were not acknowledged and are missing from the replica \
             (kept in the spill log, if it has one)",
            left.writes, left.bytes
        ));
    }
    Ok(done)
}

/// Reports of arepl devices: `only` (a device-mapper name), or all of them.
pub fn reports(dm: &DeviceMapper, only: Option<&str>) -> Result<Vec<DeviceReport>, String> {
    let names = match only {
        Some(name) if dm.state(name)?.is_none() => return Err(format!("no device {name}")),
        Some(name) if !is_arepl(dm, name)? => return Err(format!("{name} is not an arepl device")),
        Some(name) => vec![name.to_string()],
        None => dm.list()?,
    };
    let mut reports = Vec::new();
    for name in names {
        // Devices can vanish between the listing and the query.
        let (Some(state), Ok(table), Ok(status)) =
            (dm.state(&name)?, dm.table(&name), dm.status(&name))
        else {
            continue;
        };
        let (Some(table), Some(status)) = (table.first(), status.first()) else {
            continue;
        };
        if table.kind != "arepl" {
            continue;
        }
        let lv = state
            .uuid
            .filter(|uuid| uuid.starts_with(LVM_UUID_PREFIX))
            .and_then(|_| lvm::lv_of_dm_name(&name))
            .map(|lv| lv.to_string());
        reports.push(DeviceReport::new(&name, lv, &table.params, &status.params)?);
    }
    Ok(reports)
}

/// Size of a block device in 512-byte sectors.
fn block_device_sectors(dev: &Path) -> Result<u64, String> {
    use std::io::{Seek, SeekFrom};
    let mut file =
        std::fs::File::open(dev).map_err(|err| format!("cannot open {}: {err}", dev.display()))?;
    let bytes = file
        .seek(SeekFrom::End(0))
        .map_err(|err| format!("cannot read the size of {}: {err}", dev.display()))?;
    if bytes == 0 || bytes % 512 != 0 {
        return Err(format!(
            "{} has size {bytes} bytes: not a usable block device",
            dev.display()
        ));
    }
    Ok(bytes / 512)
}
