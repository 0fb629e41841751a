//! Device-mapper access through the `dmsetup` command.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> Result<String, String> {
    let output = Command::new("dmsetup")
        .args(args)
        .output()
        .map_err(|err| format!("cannot run dmsetup: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "dmsetup {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| "dmsetup printed non-UTF-8 output".into())
}

/// Size of a block device in 512-byte sectors.
pub fn device_sectors(dev: &Path) -> Result<u64, String> {
    let output = Command::new("blockdev")
        .arg("--getsz")
        .arg(dev)
        .output()
        .map_err(|err| format!("cannot run blockdev: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "cannot read the size of {}: {}",
            dev.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().parse().map_err(|_| {
        format!(
            "blockdev printed '{}' as the size of {}",
            text.trim(),
            dev.display()
        )
    })
}

pub fn create(name: &str, table: &str) -> Result<(), String> {
    run(&["create", name, "--table", table]).map(drop)
}

pub fn remove(name: &str) -> Result<(), String> {
    run(&["remove", name]).map(drop)
}

/// `dmsetup status` lines of arepl devices: `name: start len arepl words...`.
pub fn status_lines(name: Option<&str>) -> Result<Vec<String>, String> {
    let mut args = vec!["status", "--target", "arepl"];
    args.extend(name);
    let text = run(&args)?;
    Ok(text
        .lines()
        .filter(|line| !line.is_empty() && *line != "No devices found")
        .map(|line| match name {
            // With a single name dmsetup leaves the name out.
            Some(name) => format!("{name}: {line}"),
            None => line.to_string(),
        })
        .collect())
}
