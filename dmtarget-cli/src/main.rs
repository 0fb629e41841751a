//! `arepl`: put dm-arepl replication on LVM volumes and block devices, and report it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dmtarget_cli::cli::{Cli, Command};
use dmtarget_cli::convert::{convert, revert};
use dmtarget_cli::dm::DeviceMapper;
use dmtarget_cli::lvm::LvName;
use dmtarget_cli::ops;
use dmtarget_cli::report::{render_json, render_text};
use dmtarget_cli::setup::dm_name_of;
use dmtarget_cli::updown::{self, STATE_DIR};

/// How long `arepl remove` waits for the queue to drain.
const REMOVE_DRAIN: Duration = Duration::from_secs(30);

/// Exit status of `arepl verify --wait` when chunks differed.
const EXIT_MISMATCHES: u8 = 3;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("arepl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let dm = DeviceMapper::open()?;
    match cli.command {
        Command::Convert { lv, link, spill } => {
            println!(
                "{}",
                convert(&dm, &LvName::parse(&lv)?, &link, spill.as_deref())?
            );
        }
        Command::Revert { lv, force, timeout } => {
            let timeout = Duration::from_secs(timeout);
            println!("{}", revert(&dm, &LvName::parse(&lv)?, force, timeout)?);
        }
        Command::Create {
            name,
            dev,
            link,
            spill,
        } => {
            let spill = spill.map(|p| p.display().to_string());
            println!(
                "{}",
                ops::create(&dm, &name, &dev, &link, spill.as_deref())?
            );
        }
        Command::Remove { name } => println!("{}", ops::remove(&dm, &name, false, REMOVE_DRAIN)?),
        Command::Status {
            name,
            json,
            watch,
            interval,
        } => {
            let name = name.as_deref().map(dm_name_of).transpose()?;
            let interval = Duration::try_from_secs_f64(interval)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or("--interval must be a positive number of seconds")?;
            loop {
                let reports = ops::reports(&dm, name.as_deref())?;
                if json {
                    println!("{}", render_json(reports));
                } else {
                    print!("{}", render_text(&reports));
                }
                if !watch {
                    break;
                }
                std::thread::sleep(interval);
                if !json {
                    println!();
                }
            }
        }
        Command::SwitchLink { name } => message(&dm, &name, "switch-link")?,
        Command::Pause { name } => message(&dm, &name, "pause")?,
        Command::Resume { name } => message(&dm, &name, "resume")?,
        Command::Verify { name, repair, wait } => {
            message(&dm, &name, if repair { "verify repair" } else { "verify" })?;
            if wait {
                return verify_result(&dm, &name);
            }
        }
        Command::Up { config_dir, only } => {
            updown::up(&dm, &config_dir, only.as_deref(), Path::new(STATE_DIR))?;
        }
        Command::Down {
            config_dir,
            only,
            force,
        } => updown::down(
            &dm,
            &config_dir,
            only.as_deref(),
            force,
            Path::new(STATE_DIR),
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for the verify just started on `name` to end, and says what it found.
fn verify_result(dm: &DeviceMapper, name: &str) -> Result<ExitCode, String> {
    let dev = dm_name_of(name)?;
    loop {
        let report = ops::reports(dm, Some(&dev))?
            .pop()
            .ok_or_else(|| format!("{name} is gone"))?;
        let verify = report
            .verify
            .ok_or_else(|| format!("{name}: no verify runs"))?;
        if !verify.running {
            println!(
                "{name}: verify of {} bytes done: {} chunks differ, {} sent again",
                verify.total_bytes, verify.mismatches, verify.repaired
            );
            return Ok(if verify.mismatches == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_MISMATCHES)
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn message(dm: &DeviceMapper, name: &str, text: &str) -> Result<(), String> {
    let dev = dm_name_of(name)?;
    if !ops::is_arepl(dm, &dev)? {
        return Err(format!("{name} is not an arepl device"));
    }
    dm.message(&dev, text)?;
    println!("{name}: {text} sent");
    Ok(())
}
