//! `replicad`: applies dm-arepl replication streams on the disaster-recovery host.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use replicad::cli::{Cli, Command, ServeArgs};
use replicad::config::{PartialSettings, Settings};
use replicad::server::Server;
use replicad::volume::Volume;
use replicad::{scrape, state, status};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// `status --check-consistent`: the replica is not a consistent image.
const EXIT_NOT_CONSISTENT: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Status {
            state_dir,
            config,
            metrics,
            check_consistent,
        }) => status(state_dir, config, metrics, check_consistent),
        None => serve(cli.serve).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
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
        metrics_listen: args.metrics_listen,
        before_resync: args.before_resync.clone(),
        resync_snapshot: args.resync_snapshot,
        resync_snapshot_size: args.resync_snapshot_size.clone(),
        key_file: args.key_file.clone(),
        next_key_file: args.next_key_file.clone(),
        metrics_allow_remote: args.metrics_allow_remote.then_some(true),
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
        if cfg!(debug_assertions) {
            tracing::warn!(
                "this replicad is a debug build: it applies far more slowly than a release \
                 build (make userspace, or cargo build --release)"
            );
        }
        if let Some(addr) = server.metrics_addr() {
            tracing::info!("serving metrics on http://{}/metrics", addr?);
        }
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
    let metrics = settings
        .metrics_listen
        .map(|addr| format!(", metrics {addr}"))
        .unwrap_or_default();
    println!(
        "replicad: target {} ({} bytes), state in {} (durable seq {durable}), listen {}{metrics}",
        settings.target.display(),
        volume.len(),
        settings.state_dir.display(),
        settings.listen
    );
    Ok(())
}

/// `status`: the persisted state, then the live figures if a metrics address is given
/// (`--metrics`, or `metrics_listen` in the config file). With `check_consistent`, only
/// whether the replica is a consistent image, in the exit code and one line.
fn status(
    state_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    metrics: Option<SocketAddr>,
    check_consistent: bool,
) -> anyhow::Result<ExitCode> {
    let file = match &config {
        Some(path) => PartialSettings::load(path)?,
        None => PartialSettings::default(),
    };
    let dir = match (state_dir, file.state_dir, &config) {
        (Some(dir), _, _) | (None, Some(dir), _) => dir,
        (None, None, Some(config)) => {
            anyhow::bail!("config file {} has no state_dir", config.display())
        }
        (None, None, None) => unreachable!("clap requires one of them"),
    };
    if check_consistent {
        let (consistent, why) = status::check_consistent(&dir)?;
        println!("{why}");
        return Ok(if consistent {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_NOT_CONSISTENT)
        });
    }
    print!("{}", status::persisted(&dir)?);
    if let Some(addr) = metrics.or(file.metrics_listen) {
        let samples = scrape::parse(&scrape::fetch(addr)?);
        println!();
        print!("{}", status::live(addr, &samples));
    }
    Ok(ExitCode::SUCCESS)
}
