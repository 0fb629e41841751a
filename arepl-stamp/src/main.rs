//! `arepl-stamp`: write stamped blocks in a logged order, then check that an image (the
//! replica) is a state the writes could have left; compare or digest whole images.
//! Exit status: 0 consistent (identical), 1 a violation (a difference), 2 usage or I/O
//! error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use arepl_stamp::check::check;
use arepl_stamp::device::{self, Access};
use arepl_stamp::geometry::Geometry;
use arepl_stamp::image;
use arepl_stamp::log::Log;
use arepl_stamp::workload::{self, Workload};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "arepl-stamp",
    version,
    about = "Write-order fidelity: stamped, logged writes and a checker for replica images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write stamped blocks in a seeded order and append them to the log.
    Write(WriteArgs),
    /// Decide whether an image is the state after some prefix (cut) of the logged writes.
    Check(CheckArgs),
    /// Compare the first MiB of two images; list the 4 KiB blocks that differ.
    Compare(CompareArgs),
    /// Print a digest (XXH64, hex) of an image's first MiB, to compare with a later one.
    Digest(DigestArgs),
}

#[derive(Debug, Args)]
struct Layout {
    /// Block size in bytes: a multiple of 512.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    block_size: usize,
    /// Number of blocks, from the start of the device.
    #[arg(long, value_name = "N")]
    blocks: u64,
}

#[derive(Debug, Args)]
struct WriteArgs {
    /// Block device or regular file to write (must exist; a file is grown as needed).
    #[arg(long, value_name = "PATH")]
    dev: PathBuf,
    #[command(flatten)]
    layout: Layout,
    /// Number of writes.
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Seed of the block choice and the block contents.
    #[arg(long, value_name = "S")]
    seed: u64,
    /// Write log; created if missing, appended to otherwise.
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    /// Number of the first write; must continue the log [default: next in the log, or 1].
    #[arg(long, value_name = "N1", value_parser = clap::value_parser!(u64).range(1..))]
    first: Option<u64>,
    /// Concurrent submitters: up to this many writes in flight at once.
    #[arg(long, value_name = "J", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// After every write whose number is a multiple of K, the submitter that made it
    /// calls fdatasync: a flush-heavy load, as a database committing with fsync.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    fsync_every: Option<u64>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Device or file to check, normally the replica.
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// Write log produced by `arepl-stamp write`.
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    #[command(flatten)]
    layout: Layout,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// First device or file, normally the primary.
    #[arg(value_name = "IMAGE_A")]
    a: PathBuf,
    /// Second device or file, normally the replica.
    #[arg(value_name = "IMAGE_B")]
    b: PathBuf,
    /// How much to compare, from the start: both must hold at least this much.
    #[arg(long, value_name = "MIB")]
    mib: u64,
}

#[derive(Debug, Args)]
struct DigestArgs {
    /// Device or file to digest.
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// How much to digest, from the start: the image must hold at least this much.
    #[arg(long, value_name = "MIB")]
    mib: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Write(args) => write(args).map(|()| true),
        Command::Check(args) => run_check(args),
        Command::Compare(args) => run_compare(args),
        Command::Digest(args) => run_digest(args).map(|()| true),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("arepl-stamp: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn geometry(layout: &Layout) -> anyhow::Result<Geometry> {
    Ok(Geometry::new(layout.block_size, layout.blocks)?)
}

fn write(args: WriteArgs) -> anyhow::Result<()> {
    let workload = Workload {
        geometry: geometry(&args.layout)?,
        count: args.count,
        seed: args.seed,
        first: args.first,
        jobs: usize::from(args.jobs),
        fsync_every: args.fsync_every,
    };
    let device = device::open(&args.dev, Access::Write)
        .with_context(|| format!("cannot open {}", args.dev.display()))?;
    warn_if_buffered(&device, &args.dev);
    let summary = workload::run(&workload, &device, &args.log)?;
    println!("{summary}");
    Ok(())
}

/// `Ok(true)`: consistent; `Ok(false)`: violation, already reported on stdout.
fn run_check(args: CheckArgs) -> anyhow::Result<bool> {
    let geometry = geometry(&args.layout)?;
    let log = Log::load(&args.log)?;
    let device = open_for_reading(&args.image)?;
    let verdict = check(&mut &device.file, &log, geometry)
        .with_context(|| format!("cannot check {}", args.image.display()))?;
    println!("{verdict}");
    Ok(verdict.is_consistent())
}

/// `Ok(true)`: identical; `Ok(false)`: the images differ, reported on stdout.
fn run_compare(args: CompareArgs) -> anyhow::Result<bool> {
    let bytes = mib_to_bytes(args.mib)?;
    let a = open_for_reading(&args.a)?;
    let b = open_for_reading(&args.b)?;
    let comparison = image::compare(&mut &a.file, &mut &b.file, bytes).with_context(|| {
        format!(
            "cannot compare {} MiB of {} and {}",
            args.mib,
            args.a.display(),
            args.b.display()
        )
    })?;
    println!("{comparison}");
    Ok(comparison.is_identical())
}

fn run_digest(args: DigestArgs) -> anyhow::Result<()> {
    let bytes = mib_to_bytes(args.mib)?;
    let image = open_for_reading(&args.image)?;
    let digest = image::digest(&mut &image.file, bytes)
        .with_context(|| format!("cannot digest {} MiB of {}", args.mib, args.image.display()))?;
    println!("{digest:016x}");
    Ok(())
}

fn mib_to_bytes(mib: u64) -> anyhow::Result<u64> {
    mib.checked_mul(1 << 20)
        .with_context(|| format!("{mib} MiB is too large"))
}

fn open_for_reading(path: &std::path::Path) -> anyhow::Result<device::Device> {
    let device = device::open(path, Access::Read)
        .with_context(|| format!("cannot open {}", path.display()))?;
    warn_if_buffered(&device, path);
    Ok(device)
}

fn warn_if_buffered(device: &device::Device, path: &std::path::Path) {
    if !device.direct {
        eprintln!(
            "arepl-stamp: warning: {} refuses O_DIRECT (EINVAL); using buffered I/O",
            path.display()
        );
    }
}
