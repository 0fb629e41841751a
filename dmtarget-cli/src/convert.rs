//! `arepl convert` and `arepl revert`: stacking replication under a live LV and taking
//! it away again, the way LVM stacks its own layers.
//!
//! Convert: the LV's table is copied to a new hidden device (`VG-LV-arepl_real`), and
//! an arepl table over that device is loaded into the LV's own device and swapped in
//! with suspend/resume. The LV's device keeps its number, so mounts and open files
//! never notice. Revert swaps the original table back the same way.

use std::time::Duration;

use crate::cli::LinkArgs;
use crate::dm::{DeviceMapper, TargetLine};
use crate::drain::{wait_drained, Backlog};
use crate::lvm::{LvName, LVM_UUID_PREFIX};
use crate::setup::{arepl_table, ensure_module, load_key, resolve_device};

/// How long revert waits, with the LV suspended, for writes that arrived after the
/// queue first drained.
const SUSPENDED_DRAIN: Duration = Duration::from_secs(10);

/// Puts replication under `lv`; returns what was done, for the administrator.
pub fn convert(
    dm: &DeviceMapper,
    lv: &LvName,
    link: &LinkArgs,
    spill: Option<&str>,
) -> Result<String, String> {
    let name = lv.dm_name();
    let real = lv.real_name();
    let state = dm.state(&name)?.ok_or_else(|| lv.missing_reason())?;
    let uuid = state.uuid.unwrap_or_default();
    if !uuid.starts_with(LVM_UUID_PREFIX) {
        return Err(format!(
            "{name} is not an LVM logical volume (uuid '{uuid}'); use arepl create for \
             other devices"
        ));
    }
    let table = dm.table(&name)?;
    if table.iter().any(|line| line.kind == "arepl") {
        return Err(format!(
            "{lv} is already converted (its table is an arepl table)"
        ));
    }
    if dm.state(&real)?.is_some() {
        return Err(format!(
            "{real} already exists, but {lv} is not converted: a leftover of an interrupted \
             convert? Check `dmsetup table {real}` and remove it (dmsetup remove {real})"
        ));
    }
    if state.suspended {
        return Err(format!("{lv} is suspended; resume it first"));
    }
    let spill_dev = spill.map(|s| resolve_device(dm, s, "spill")).transpose()?;
    ensure_module(dm)?;

    let sectors: u64 = table.iter().map(|line| line.length).sum();
    let volume = link.volume.clone().unwrap_or_else(|| name.clone());
    // Validated before anything changes; the local device is filled in below.
    arepl_table("0:0", sectors, link, &volume, spill_dev.as_deref())?;
    load_key(link, &volume)?;

    let real_uuid = format!("AREPL-{uuid}-real");
    let real_state = dm.create(&real, Some(&real_uuid), &table, true)?;
    let arepl = arepl_table(
        &real_state.devnum,
        sectors,
        link,
        &volume,
        spill_dev.as_deref(),
    )?;
    let undo_real = |err: String| {
        let _ = dm.remove(&real);
        err
    };
    dm.load(&name, std::slice::from_ref(&arepl))
        .map_err(|e| undo_real(e.into()))?;
    if let Err(err) = dm.suspend(&name) {
        let _ = dm.clear_inactive(&name);
        return Err(undo_real(err.into()));
    }
    if let Err(err) = dm.resume(&name) {
        // The swap failed: put the original table back and make the LV live again.
        let _ = dm.clear_inactive(&name);
        let _ = dm.load(&name, &table);
        let restored = dm.resume(&name);
        let _ = dm.remove(&real);
        return Err(match restored {
            Ok(()) => format!("{err}; {lv} is back on its original table"),
            Err(again) => format!("{err}; restoring the original table failed too: {again}"),
        });
    }
    Ok(format!(
        "converted {lv}: {name} now replicates to {} (volume {volume}); original table \
         moved to {real} ({})\n  table: {arepl}",
        link.primary, real_state.devnum
    ))
}

/// Takes replication away from `lv` once its queue is drained (or at once with
/// `force`); returns what was done.
pub fn revert(
    dm: &DeviceMapper,
    lv: &LvName,
    force: bool,
    timeout: Duration,
) -> Result<String, String> {
    let name = lv.dm_name();
    let real = lv.real_name();
    if dm.state(&name)?.is_none() {
        return Err(lv.missing_reason());
    }
    let table = dm.table(&name)?;
    let local = match table.as_slice() {
        [line] if line.kind == "arepl" => line.params.split(' ').next().unwrap_or("").to_string(),
        _ => {
            return Err(format!(
                "{lv} is not converted (its table is not an arepl table)"
            ))
        }
    };
    let real_state = dm.state(&real)?.ok_or_else(|| {
        format!("{lv} has an arepl table but no {real}: not made by arepl convert")
    })?;
    if real_state.devnum != local {
        return Err(format!(
            "{lv}'s arepl table sits on {local}, not on {real} ({}): not made by arepl convert",
            real_state.devnum
        ));
    }
    let original: Vec<TargetLine> = dm.table(&real)?;

    let mut lost = None;
    if force {
        // A paused target is torn down at once, without waiting for the link.
        dm.message(&name, "pause")?;
        lost = Some(Backlog::of(dm, &name)?);
    } else {
        let left = wait_drained(dm, &name, timeout)?;
        if left.writes > 0 {
            return Err(format!(
                "{lv}: {} writes ({} bytes) still not acknowledged by the replica after {} s \
                 (is a link up? `arepl status {lv}`); nothing changed. Retry, or use --force \
                 to revert now without them",
                left.writes,
                left.bytes,
                timeout.as_secs()
            ));
        }
    }
    dm.suspend(&name)?;
    if !force {
        let left = wait_drained(dm, &name, SUSPENDED_DRAIN)?;
        if left.writes > 0 {
            dm.resume(&name)?;
            return Err(format!(
                "{lv}: {} writes written meanwhile were not acknowledged within {} s; nothing \
                 changed, retry",
                left.writes,
                SUSPENDED_DRAIN.as_secs()
            ));
        }
    }
    if let Err(err) = dm.load(&name, &original) {
        dm.resume(&name)?;
        return Err(err.into());
    }
    dm.resume(&name)?;
    dm.remove(&real)?;
    let mut done = format!("reverted {lv}: original table restored, {real} removed");
    if let Some(lost) = lost.filter(|l| l.writes > 0) {
        done.push_str(&format!(
            "\n  forced: {} writes ({} bytes) were not acknowledged and are missing from \
             the replica (kept in the spill log, if it has one)",
            lost.writes, lost.bytes
        ));
    }
    Ok(done)
}
