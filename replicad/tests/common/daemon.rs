//! The built binaries: `replicad` as a child process, and `arepl-send` against it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const REPLICAD: &str = env!("CARGO_BIN_EXE_replicad");
pub const AREPL_SEND: &str = env!("CARGO_BIN_EXE_arepl-send");
/// The volume `arepl-send` streams as.
pub const SENT_VOLUME: &str = "clivol";
pub const SENT_VOLUME_SIZE: u64 = 2 << 20;
pub const WAIT: Duration = Duration::from_secs(60);

pub fn replicad(args: &[&str]) -> Output {
    Command::new(REPLICAD).args(args).output().unwrap()
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A test directory with an all-zero target and an empty state directory.
pub fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let target = std::fs::File::create(dir.path().join("target.img")).unwrap();
    target.set_len(SENT_VOLUME_SIZE).unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    dir
}

pub fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// A running `replicad` and the addresses it announced.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// Where it serves metrics, if it does.
    pub metrics: Option<SocketAddr>,
}

impl Daemon {
    /// Starts `replicad` and waits until it listens.
    pub fn spawn(args: &[&str]) -> Self {
        Self::start(args, false)
    }

    /// Starts `replicad` configured to serve metrics and waits until it does.
    pub fn spawn_with_metrics(args: &[&str]) -> Self {
        Self::start(args, true)
    }

    fn start(args: &[&str], with_metrics: bool) -> Self {
        let mut child = Command::new(REPLICAD)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("replicad: {line}");
                // Keep draining after the address is known: the daemon must not block.
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let (mut addr, mut metrics) = (None, None);
        while addr.is_none() || (with_metrics && metrics.is_none()) {
            let line = lines_rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("replicad did not announce its addresses");
            if let Some(rest) = line.split("listening on ").nth(1) {
                addr = Some(rest.split(';').next().unwrap().parse().unwrap());
            }
            if let Some(rest) = line.split("serving metrics on http://").nth(1) {
                metrics = Some(rest.trim_end_matches("/metrics").parse().unwrap());
            }
        }
        Self {
            child,
            addr: addr.unwrap(),
            metrics,
        }
    }

    /// Sends `signal` and returns the exit status.
    pub fn stop(mut self, signal: Signal) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "replicad did not exit after {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `arepl-send` against the daemon as [`SENT_VOLUME`].
    pub fn send(&self, args: &[&str]) -> Output {
        let addr = self.addr.to_string();
        let size = SENT_VOLUME_SIZE.to_string();
        let mut all = vec![
            "--connect",
            &addr,
            "--volume",
            SENT_VOLUME,
            "--volume-size",
            &size,
            "--timeout",
            "20",
        ];
        all.extend_from_slice(args);
        Command::new(AREPL_SEND).args(all).output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only if a test failed before stopping it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
