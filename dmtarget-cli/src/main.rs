//! `arepl`: create, remove and inspect dm-arepl replicated devices.

mod dmsetup;
mod status_report;

use std::net::SocketAddr;
use std::process::ExitCode;

use arepl_core::table::TableArgs;
use clap::Parser;
use dmtarget_cli::cli::{Cli, Command};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("arepl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Create {
            name,
            dev,
            primary,
            backup,
            queue_mb,
            volume,
            spill,
        } => {
            let sectors = dmsetup::device_sectors(&dev)?;
            let args = create_args(
                &dev,
                primary,
                backup,
                queue_mb,
                volume.as_deref().unwrap_or(&name),
                spill.as_deref(),
            )?;
            let table = format!("0 {sectors} arepl {}", args.join(" "));
            dmsetup::create(&name, &table)?;
            println!("created /dev/mapper/{name}: {table}");
            Ok(())
        }
        Command::Remove { name } => dmsetup::remove(&name),
        Command::Status { name } => {
            let lines = dmsetup::status_lines(name.as_deref())?;
            print!("{}", status_report::render(&lines)?);
            Ok(())
        }
    }
}

/// Table arguments after `arepl`, checked with the parser the kernel module uses, so a
/// mistake is reported here rather than as a bare EINVAL from the kernel.
fn create_args(
    dev: &std::path::Path,
    primary: SocketAddr,
    backup: Option<SocketAddr>,
    queue_mb: u32,
    volume: &str,
    spill: Option<&std::path::Path>,
) -> Result<Vec<String>, String> {
    let utf8 = |path: &std::path::Path| {
        path.to_str()
            .map(str::to_string)
            .ok_or_else(|| format!("device path {} is not UTF-8", path.display()))
    };
    let mut args = vec![utf8(dev)?, primary.to_string()];
    args.extend(backup.map(|b| b.to_string()));
    let mut features = vec![format!("queue_mb:{queue_mb}"), format!("volume:{volume}")];
    if let Some(spill) = spill {
        features.push(format!("spill:{}", utf8(spill)?));
    }
    args.push(features.len().to_string());
    args.extend(features);
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    TableArgs::parse(&words).map_err(|err| err.to_string())?;
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn create_args_are_validated_like_the_kernel() {
        let primary = "10.0.0.2:7788".parse().unwrap();
        let args = create_args(Path::new("/dev/vdb"), primary, None, 8, "db", None).unwrap();
        assert_eq!(
            args,
            ["/dev/vdb", "10.0.0.2:7788", "2", "queue_mb:8", "volume:db"]
        );
        let spill = Some(Path::new("/dev/vdc"));
        let args = create_args(Path::new("/dev/vdb"), primary, None, 8, "db", spill).unwrap();
        assert_eq!(
            args[2..],
            ["3", "queue_mb:8", "volume:db", "spill:/dev/vdc"]
        );

        let err = create_args(Path::new("/dev/vdb"), primary, None, 0, "db", None).unwrap_err();
        assert!(err.starts_with("invalid queue_mb '0'"), "{err}");
        let err =
            create_args(Path::new("/dev/vdb"), primary, Some(primary), 8, "db", None).unwrap_err();
        assert_eq!(err, "primary and backup links must be different addresses");
    }
}
