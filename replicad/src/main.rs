//! `replicad`: the receiving side of dm-arepl on the disaster-recovery host.
//!
//! This version checks its configuration (listen address, target device or file,
//! state directory); the replication protocol itself is not implemented yet, so it
//! refuses to start serving rather than pretend to.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "replicad",
    version,
    about = "Apply dm-arepl replication streams on the DR host"
)]
struct Args {
    /// Address to accept replication links on (ip:port or [ipv6]:port).
    #[arg(long)]
    listen: SocketAddr,
    /// File or block device the replicated writes are applied to.
    #[arg(long)]
    target: PathBuf,
    /// Directory for the durable sequence and volume identity.
    #[arg(long)]
    state_dir: PathBuf,
    /// Only check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match check(&args) {
        Ok(size) => {
            println!(
                "replicad: target {} ({size} bytes), state in {}, listen {}",
                args.target.display(),
                args.state_dir.display(),
                args.listen
            );
            if args.check {
                ExitCode::SUCCESS
            } else {
                eprintln!("replicad: the replication protocol is not implemented in this version");
                ExitCode::from(2)
            }
        }
        Err(message) => {
            eprintln!("replicad: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Checks that the target can be written and the state directory used; returns the
/// target's size in bytes.
fn check(args: &Args) -> Result<u64, String> {
    let mut target = open_target(&args.target)?;
    let size = target
        .seek(SeekFrom::End(0))
        .map_err(|err| format!("cannot size target {}: {err}", args.target.display()))?;
    if size == 0 {
        return Err(format!("target {} is empty", args.target.display()));
    }
    check_state_dir(&args.state_dir)?;
    Ok(size)
}

fn open_target(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|err| format!("cannot open target {} for writing: {err}", path.display()))
}

fn check_state_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir)
        .map_err(|err| format!("state directory {}: {err}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "state directory {} is not a directory",
            dir.display()
        ));
    }
    if meta.permissions().readonly() {
        return Err(format!("state directory {} is read-only", dir.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: &Path, state_dir: &Path) -> Args {
        Args {
            listen: "127.0.0.1:7788".parse().unwrap(),
            target: target.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            check: true,
        }
    }

    #[test]
    fn accepts_a_writable_target_and_state_dir() {
        let dir = std::env::temp_dir().join(format!("replicad-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("image");
        std::fs::write(&target, vec![0u8; 4096]).unwrap();
        assert_eq!(check(&args(&target, &dir)), Ok(4096));

        std::fs::write(&target, b"").unwrap();
        assert!(check(&args(&target, &dir))
            .unwrap_err()
            .ends_with("is empty"));
        assert!(check(&args(&dir.join("missing"), &dir))
            .unwrap_err()
            .starts_with("cannot open target"));
        std::fs::write(&target, vec![0u8; 512]).unwrap();
        assert!(check(&args(&target, &target))
            .unwrap_err()
            .ends_with("is not a directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
