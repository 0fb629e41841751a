//! `arepl up` and `arepl down`: apply or tear down the volumes of the configuration
//! directory, each on its own, so one broken volume does not keep the others down.
//!
//! A volume taken down cleanly (queue drained) leaves a marker in [`STATE_DIR`]; the
//! next `up` then skips the initial copy, since the replica already equals the volume.
//! Without the marker (first start, crash, forced down) `up` copies the whole volume.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::InitialSync;
use crate::config::{load_dir, Target, VolumeConfig};
use crate::convert::{convert, revert};
use crate::dm::DeviceMapper;
use crate::lvm::LvName;
use crate::ops;

/// Where clean-shutdown markers live.
pub const STATE_DIR: &str = "/var/lib/arepl";
/// How long `down` waits for each queue to drain.
const DOWN_DRAIN: Duration = Duration::from_secs(120);

fn marker(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join(format!("{id}.clean"))
}

/// Applies every selected volume; returns an error if any failed.
pub fn up(
    dm: &DeviceMapper,
    dir: &Path,
    only: Option<&str>,
    state_dir: &Path,
) -> Result<(), String> {
    for_each(dir, only, |volume| {
        let clean = marker(state_dir, &volume.id);
        let mut link = volume.link.clone();
        if link.initial_sync == InitialSync::Full && clean.exists() {
            println!(
                "{}: taken down cleanly last time; no initial copy",
                volume.id
            );
            link.initial_sync = InitialSync::None;
        }
        let done = match &volume.target {
            Target::Lv(lv) => {
                let lv = LvName::parse(lv)?;
                if ops::is_arepl(dm, &lv.dm_name())? {
                    return Ok(format!("{}: {lv} is already up", volume.id));
                }
                convert(dm, &lv, &link, volume.spill.as_deref())?
            }
            Target::Device { name, device } => {
                if ops::is_arepl(dm, name)? {
                    return Ok(format!("{}: {name} is already up", volume.id));
                }
                ops::create(dm, name, device, &link, volume.spill.as_deref())?
            }
        };
        // Used once: a crash from now on must lead to a full copy again.
        let _ = std::fs::remove_file(&clean);
        Ok(done)
    })
}

/// Tears down every selected volume; returns an error if any failed.
pub fn down(
    dm: &DeviceMapper,
    dir: &Path,
    only: Option<&str>,
    force: bool,
    state_dir: &Path,
) -> Result<(), String> {
    for_each(dir, only, |volume| {
        let name = match &volume.target {
            Target::Lv(lv) => LvName::parse(lv)?.dm_name(),
            Target::Device { name, .. } => name.clone(),
        };
        if !ops::is_arepl(dm, &name)? {
            return Ok(format!("{}: not up", volume.id));
        }
        let done = match &volume.target {
            Target::Lv(lv) => revert(dm, &LvName::parse(lv)?, force, DOWN_DRAIN)?,
            Target::Device { name, .. } => ops::remove(dm, name, force, DOWN_DRAIN)?,
        };
        // Clean only if nothing can write to the volume any more: an LV still open (a
        // mount) after revert would take writes the replica never sees.
        let still_open = dm.state(&name)?.is_some_and(|state| state.open_count > 0);
        if force || still_open {
            let _ = std::fs::remove_file(marker(state_dir, &volume.id));
            if still_open {
                println!(
                    "{}: {name} is still open, so writes may follow; the next up copies the \
                     whole volume",
                    volume.id
                );
            }
        } else {
            std::fs::create_dir_all(state_dir)
                .and_then(|()| std::fs::write(marker(state_dir, &volume.id), b""))
                .map_err(|err| {
                    format!(
                        "{}: down, but cannot record it in {}: {err}",
                        volume.id,
                        state_dir.display()
                    )
                })?;
        }
        Ok(done)
    })
}

fn for_each(
    dir: &Path,
    only: Option<&str>,
    mut apply: impl FnMut(&VolumeConfig) -> Result<String, String>,
) -> Result<(), String> {
    let mut failed = 0;
    let mut matched = false;
    for loaded in load_dir(dir)? {
        let result = loaded.and_then(|volume| {
            if only.is_some_and(|id| id != volume.id) {
                return Ok(None);
            }
            apply(&volume).map(Some)
        });
        match result {
            Ok(Some(done)) => {
                matched = true;
                println!("{done}");
            }
            Ok(None) => {}
            Err(err) => {
                matched = true;
                failed += 1;
                eprintln!("arepl: {err}");
            }
        }
    }
    if let Some(id) = only.filter(|_| !matched) {
        return Err(format!("no volume {id} in {}", dir.display()));
    }
    match failed {
        0 => Ok(()),
        n => Err(format!("{n} volume(s) failed")),
    }
}
