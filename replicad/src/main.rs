//! `replicad`: applies dm-arepl replication streams on the disaster-recovery host.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use replicad::config::{PartialSettings, Settings};
use replicad::server::Server;
use replicad::state;
use replicad::volume::Volume;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "replicad",
    version,
    about = "Apply dm-arepl replication streams on the DR host",
    long_about = "Apply dm-arepl replication streams on the DR host.\n\n\
        Serves with `replicad --listen ADDR:PORT --target PATH --state-dir DIR` or \
        `replicad --config FILE` (TOML with listen, target, state_dir; flags override it). \
        One session at a time: a new sender for the same volume takes over from the active \
        one. SIGTERM or SIGINT makes applied entries durable and exits. \
        Logs go to stderr; RUST_LOG filters them (default: info).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML file with `listen`, `target` and `state_dir`; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to accept replication links on (ip:port or [ipv6]:port).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// File or block device the replicated writes are applied to.
    #[arg(long, value_name = "PATH")]
    target: Option<PathBuf>,
    /// Directory for the durable sequence and volume identity.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Only check the target and state directory, then exit.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the persisted durable sequence and volume identity.
    Status {
        /// State directory to read.
        #[arg(long, value_name = "DIR", required_unless_present = "config")]
        state_dir: Option<PathBuf>,
        /// Take the state directory from this config file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Status { state_dir, config }) => status(state_dir, config),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Every error here says all in its own message; its sources would repeat it.
            eprintln!("replicad: {err}");
            ExitCode::FAILURE
        }
    }
}

fn settings(args: &ServeArgs) -> anyhow::Result<Settings> {
    let file = match &args.config {
        Some(path) => PartialSettings::load(path)?,
        None => PartialSettings::default(),
    };
    Ok(file.resolve(PartialSettings {
        listen: args.listen,
        target: args.target.clone(),
        state_dir: args.state_dir.clone(),
    })?)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = settings(&args)?;
    if args.check {
        return check(&settings);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // Reporting a failed log write goes to the same stderr and would panic when it is
        // a broken pipe; replication must outlive its log reader.
        .log_internal_errors(false)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = Server::bind(&settings).await?;
        let shutdown = CancellationToken::new();
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tracing::info!(
            "listening on {}; target {}; state in {}; durable seq {}",
            server.local_addr()?,
            settings.target.display(),
            settings.state_dir.display(),
            server.state().durable_seq
        );
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!("{name}: shutting down");
            on_signal.cancel();
            // Shutdown waits for the target to sync; a second signal stops waiting. The
            // state file is crash-safe, so this loses no acknowledged entry.
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::warn!("{name} again: exiting without waiting for sessions to finish");
            std::process::exit(1);
        });
        let state = server.run(shutdown).await;
        tracing::info!("stopped; durable seq {}", state.durable_seq);
        anyhow::Ok(())
    })
}

/// `--check`: opens the target and reads the state without changing anything.
fn check(settings: &Settings) -> anyhow::Result<()> {
    let volume = Volume::open(&settings.target)?;
    let snapshot = state::inspect(&settings.state_dir)?;
    let durable = snapshot.map_or(0, |snapshot| snapshot.state.durable_seq);
    println!(
        "replicad: target {} ({} bytes), state in {} (durable seq {durable}), listen {}",
        settings.target.display(),
        volume.len(),
        settings.state_dir.display(),
        settings.listen
    );
    Ok(())
}

fn status(state_dir: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = match (state_dir, config) {
        (Some(dir), _) => dir,
        (None, Some(config)) => PartialSettings::load(&config)?
            .state_dir
            .ok_or_else(|| anyhow::anyhow!("config file {} has no state_dir", config.display()))?,
        (None, None) => unreachable!("clap requires one of them"),
    };
    let Some(snapshot) = state::inspect(&dir)? else {
        println!("state dir: {}", dir.display());
        println!("durable seq: 0 (no state file yet)");
        println!("volume: none recorded");
        return Ok(());
    };
    println!("state file: {}", dir.join(state::STATE_FILE_NAME).display());
    println!("durable seq: {}", snapshot.state.durable_seq);
    match &snapshot.state.identity {
        Some(identity) => println!("volume: {} ({} bytes)", identity.name, identity.size),
        None => println!("volume: none recorded"),
    }
    println!("generation: {}", snapshot.generation);
    for slot in snapshot.corrupt_slots {
        println!("warning: slot {slot} is corrupt; the other slot is in use");
    }
    Ok(())
}
