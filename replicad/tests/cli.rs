//! The built binaries: startup errors, `--help`, a stream through `arepl-send`, signals,
//! `status`.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::daemon::{
    path, replicad, stderr_of, stdout_of, workspace, Daemon, AREPL_SEND, SENT_VOLUME,
    SENT_VOLUME_SIZE as VOLUME_SIZE,
};
use nix::sys::signal::Signal;
use replicad::config::PartialSettings;
use replicad::state::{Consistency, ReplicaState, StateStore};

#[test]
fn help_describes_both_forms() {
    let output = replicad(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--target",
        "--state-dir",
        "--config",
        "--metrics-listen",
        "--before-resync",
        "--resync-snapshot",
        "--resync-snapshot-size",
        "status",
    ] {
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
    let cases: [(Vec<&str>, &str); 6] = [
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
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--target",
                &target,
                "--state-dir",
                &state,
                "--metrics-listen",
                &taken,
            ],
            "cannot serve metrics on",
        ),
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

#[test]
fn the_packaged_example_config_sets_every_key() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/replicad.toml.example");
    let settings = PartialSettings::load(&example).unwrap();
    let settings = settings.resolve(PartialSettings::default()).unwrap();
    assert_eq!(settings.listen, "0.0.0.0:7788".parse().unwrap());
    assert_eq!(
        settings.metrics_listen,
        Some("127.0.0.1:9477".parse().unwrap())
    );
    assert_eq!(
        settings.protection,
        replicad::protection::ResyncProtection::default()
    );
    // The commented-out hook parses too.
    let text = std::fs::read_to_string(&example).unwrap();
    let hook = text
        .lines()
        .find_map(|line| {
            line.strip_prefix('#')
                .filter(|l| l.starts_with("before_resync"))
        })
        .expect("the example shows before_resync");
    let parsed = PartialSettings::parse(hook).unwrap();
    assert!(parsed.before_resync.is_some());
}

#[test]
fn a_protected_resync_through_the_binaries_and_check_consistent_exit_codes() {
    let dir = workspace();
    let (target, state) = (path(dir.path(), "target.img"), path(dir.path(), "state"));
    let check = || replicad(&["status", "--state-dir", &state, "--check-consistent"]);
    let output = check();
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    assert!(stdout_of(&output).starts_with("not known to be consistent: no state file"));

    let hook_out = path(dir.path(), "hook.out");
    let hook = format!("echo \"$AREPL_VOLUME $AREPL_DURABLE_SEQ $AREPL_TARGET\" > '{hook_out}'");
    let daemon = Daemon::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        &target,
        "--state-dir",
        &state,
        "--before-resync",
        &hook,
        "--resync-snapshot",
        "none",
    ]);
    let output = daemon.send(&["stream", "--count", "5"]);
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert!(stdout.contains("begin: continuing history "), "{stdout}");
    assert!(stdout.contains(":1\n"), "{stdout}");
    assert!(!Path::new(&hook_out).exists(), "no resync, no hook");
    let output = daemon.send(&["stream", "--seed", "2", "--count", "5", "--resync"]);
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert!(stdout.contains("begin: resync under history "), "{stdout}");
    assert!(stdout.contains(":2\n"), "{stdout}");
    assert!(stdout.contains("final ack 10"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&hook_out).unwrap(),
        format!("{SENT_VOLUME} 5 {target}\n")
    );
    assert!(daemon.stop(Signal::SIGTERM).success());

    let output = replicad(&["status", "--state-dir", &state]);
    let stdout = stdout_of(&output);
    assert!(stdout.contains("\nconsistency: consistent\n"), "{stdout}");
    assert!(stdout.contains("\nhistory: "), "{stdout}");
    let output = check();
    assert_eq!(output.status.code(), Some(0), "{}", stdout_of(&output));
    assert!(stdout_of(&output).starts_with("consistent: an image of history "));

    // Mid-resync, as a resync interrupted by a lost link leaves it.
    let mut store = StateStore::open(Path::new(&state)).unwrap();
    let resyncing = ReplicaState {
        consistency: Consistency::Resyncing { done_seq: None },
        ..store.state().clone()
    };
    store.persist(resyncing).unwrap();
    drop(store);
    let output = check();
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stdout_of(&output).starts_with("not consistent: a resync under history "),
        "{}",
        stdout_of(&output)
    );
    let output = replicad(&["status", "--state-dir", &state]);
    assert!(stdout_of(&output).contains("\nconsistency: resyncing\n"));
    // --check-consistent answers from the state file alone.
    let output = replicad(&[
        "status",
        "--state-dir",
        &state,
        "--check-consistent",
        "--metrics",
        "127.0.0.1:9",
    ]);
    assert!(!output.status.success());
    assert!(stderr_of(&output).contains("cannot be used with"));
}
