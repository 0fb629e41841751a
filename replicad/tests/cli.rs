//! The built binaries: startup errors, `--help`, a stream through `arepl-send`, signals,
//! `status`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const REPLICAD: &str = env!("CARGO_BIN_EXE_replicad");
const AREPL_SEND: &str = env!("CARGO_BIN_EXE_arepl-send");
const VOLUME_SIZE: u64 = 2 << 20;
const WAIT: Duration = Duration::from_secs(60);

fn replicad(args: &[&str]) -> Output {
    Command::new(REPLICAD).args(args).output().unwrap()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A test directory with an all-zero target and an empty state directory.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let target = std::fs::File::create(dir.path().join("target.img")).unwrap();
    target.set_len(VOLUME_SIZE).unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    dir
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// A running `replicad` and the address it announced.
struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Daemon {
    fn spawn(args: &[&str]) -> Self {
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
        let addr = loop {
            let line = lines_rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("replicad did not announce its address");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split(';').next().unwrap().parse().unwrap();
            }
        };
        Self { child, addr }
    }

    /// Sends `signal` and returns the exit status.
    fn stop(mut self, signal: Signal) -> std::process::ExitStatus {
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

    fn send(&self, args: &[&str]) -> Output {
        let addr = self.addr.to_string();
        let size = VOLUME_SIZE.to_string();
        let mut all = vec![
            "--connect",
            &addr,
            "--volume",
            "clivol",
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

#[test]
fn help_describes_both_forms() {
    let output = replicad(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in ["--listen", "--target", "--state-dir", "--config", "status"] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    let output = Command::new(AREPL_SEND).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("stream") && help.contains("malformed"),
        "{help}"
    );
}

#[test]
fn startup_errors_are_one_clear_line() {
    let dir = workspace();
    let target = path(dir.path(), "target.img");
    let state = path(dir.path(), "state");
    let missing = path(dir.path(), "missing");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--target",
                &missing,
                "--state-dir",
                &state,
            ],
            "replicad: target ",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--target",
                &target,
                "--state-dir",
                &target,
            ],
            "is not a directory",
        ),
        (
            vec![
                "--listen",
                &taken,
                "--target",
                &target,
                "--state-dir",
                &state,
            ],
            "cannot listen on",
        ),
        (
            vec!["--target", &target, "--state-dir", &state],
            "missing listen: use --listen",
        ),
        (vec!["--config", &missing], "config file"),
    ];
    for (args, expected) in cases {
        let output = replicad(&args);
        let stderr = stderr_of(&output);
        assert!(!output.status.success(), "{args:?} started");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn stream_malformed_input_sigterm_and_status_through_the_binaries() {
    let dir = workspace();
    let (target, state) = (path(dir.path(), "target.img"), path(dir.path(), "state"));
    let daemon = Daemon::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        &target,
        "--state-dir",
        &state,
    ]);
    let expected = path(dir.path(), "expected.img");
    let output = daemon.send(&[
        "stream",
        "--seed",
        "5",
        "--count",
        "12",
        "--expect-image",
        &expected,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert!(stdout.contains("final ack 12"), "{stdout}");
    assert!(stdout.contains("expected image sha256: "), "{stdout}");
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&expected).unwrap());

    let output = daemon.send(&["malformed", "bad-payload-crc"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains(": ok: "));

    let output = daemon.send(&["ping", "--count", "2"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert!(stdout.contains("ping: 2 answered with Ack 12"), "{stdout}");

    // The same stream, longer, resent from seq 1: the 12 entries held are skipped.
    let output = daemon.send(&[
        "stream",
        "--seed",
        "5",
        "--count",
        "16",
        "--first-seq",
        "1",
        "--ping-every",
        "5",
        "--expect-image",
        &expected,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert!(
        stdout.contains("(12 already held by the server)"),
        "{stdout}"
    );
    assert!(stdout.contains("3 pings"), "{stdout}");
    assert!(stdout.contains("final ack 16"), "{stdout}");
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&expected).unwrap());

    // Starting past the server's next sequence is refused by arepl-send itself.
    let output = daemon.send(&["stream", "--count", "1", "--first-seq", "18"]);
    assert!(!output.status.success());
    assert!(
        stderr_of(&output).contains("first seq 18 is not one the receiver accepts"),
        "{}",
        stderr_of(&output)
    );

    let status = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "exit after SIGTERM: {status}");
    let output = replicad(&["status", "--state-dir", &state]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(stdout.contains("durable seq: 16\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("volume: clivol ({VOLUME_SIZE} bytes)")),
        "{stdout}"
    );
}

#[test]
fn config_file_with_flag_override_and_sigint() {
    let dir = workspace();
    let config = path(dir.path(), "replicad.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\ntarget = \"target.img\"\nstate_dir = \"state\"\n",
    )
    .unwrap();
    let daemon = Daemon::spawn(&["--config", &config, "--listen", "127.0.0.1:0"]);
    let output = daemon.send(&["stream", "--count", "3"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let status = daemon.stop(Signal::SIGINT);
    assert!(status.success(), "exit after SIGINT: {status}");
    let output = replicad(&["status", "--config", &config]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("durable seq: 3\n"));

    let fresh = workspace();
    let output = replicad(&["status", "--state-dir", &path(fresh.path(), "state")]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("no state file yet"));
}
