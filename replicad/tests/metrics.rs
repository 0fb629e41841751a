//! The metrics endpoint of the built `replicad`: real figures after a stream, HTTP errors,
//! the config key, and `replicad status` with live figures.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::daemon::{
    path, replicad, stderr_of, stdout_of, workspace, Daemon, SENT_VOLUME, SENT_VOLUME_SIZE, WAIT,
};
use nix::sys::signal::Signal;
use replicad::sender::workload::{Op, Workload};

/// A raw exchange: sends `request` as is and returns the status line, the head and the
/// body of the answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    let status = head.lines().next().unwrap().to_string();
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    exchange(addr, request.as_bytes())
}

/// The value of the sample line `series` (name and labels, exactly as rendered).
fn value<'a>(metrics: &'a str, series: &str) -> Option<&'a str> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}

/// Polls `/metrics` until `done` holds for it.
fn metrics_when(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, _, body) = get(addr, "/metrics");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_show_the_real_figures_of_a_stream() {
    let dir = workspace();
    let (target, state) = (path(dir.path(), "target.img"), path(dir.path(), "state"));
    let daemon = Daemon::spawn_with_metrics(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        &target,
        "--state-dir",
        &state,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = daemon.metrics.unwrap();
    // Before any session: figures from the (fresh) state, no volume label, no ages.
    let (_, _, body) = get(metrics, "/metrics");
    assert_eq!(
        value(&body, "replicad_durable_sequence"),
        Some("0"),
        "{body}"
    );
    assert!(
        !body.contains("\nreplicad_last_frame_age_seconds "),
        "{body}"
    );

    let (seed, count) = (9, 40);
    let output = daemon.send(&["stream", "--seed", "9", "--count", "40"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let ops: Vec<Op> = Workload::new(seed, count, SENT_VOLUME_SIZE)
        .unwrap()
        .collect();
    let written: usize = ops
        .iter()
        .map(|op| match op {
            Op::Write { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    let of_kind = |wanted: fn(&Op) -> bool| ops.iter().filter(|op| wanted(op)).count();

    // The sender has its final Ack, so the sequences are final; the session ends when
    // the server sees the sender close.
    let body = metrics_when(metrics, |body| {
        value(body, "replicad_sessions_active") == Some("0")
    });
    let volume = format!("{{volume=\"{SENT_VOLUME}\"}}");
    let per_volume = |name: &str| value(&body, &format!("{name}{volume}"));
    for name in [
        "replicad_received_sequence",
        "replicad_applied_sequence",
        "replicad_durable_sequence",
    ] {
        assert_eq!(per_volume(name), Some("40"), "{name}:\n{body}");
    }
    assert_eq!(per_volume("replicad_sequence_gap"), Some("0"));
    let written = written.to_string();
    assert_eq!(per_volume("replicad_applied_bytes_total"), Some(&*written));
    for (kind, count) in [
        ("write", of_kind(|op| matches!(op, Op::Write { .. }))),
        ("flush", of_kind(|op| matches!(op, Op::Flush))),
        ("discard", of_kind(|op| matches!(op, Op::Discard { .. }))),
        (
            "write_zeroes",
            of_kind(|op| matches!(op, Op::WriteZeroes { .. })),
        ),
    ] {
        let series =
            format!("replicad_applied_entries_total{{volume=\"{SENT_VOLUME}\",kind=\"{kind}\"}}");
        assert_eq!(value(&body, &series), Some(&*count.to_string()), "{body}");
    }
    assert_eq!(
        value(&body, "replicad_connections_accepted_total"),
        Some("1")
    );
    assert_eq!(value(&body, "replicad_session_errors_total"), Some("0"));
    let age: f64 = per_volume("replicad_last_frame_age_seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!(per_volume("replicad_durable_sequence_age_seconds").is_some());

    // Bad input is counted as such.
    let output = daemon.send(&["malformed", "bad-header-crc"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let body = metrics_when(metrics, |body| {
        value(body, "replicad_session_errors_total") == Some("1")
    });
    assert_eq!(value(&body, "replicad_malformed_frames_total"), Some("1"));
    assert_eq!(
        value(&body, "replicad_connections_accepted_total"),
        Some("2")
    );

    // `status` shows the persisted state, then the live figures.
    let output = replicad(&[
        "status",
        "--state-dir",
        &state,
        "--metrics",
        &metrics.to_string(),
    ]);
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert!(stdout.contains("durable seq: 40\n"), "{stdout}");
    assert!(
        stdout.contains(&format!("\nlive from http://{metrics}/metrics:\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\n  volume                {SENT_VOLUME}\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n  durable seq           40\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\n  bytes applied         {written}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("\n  malformed frames      1\n"), "{stdout}");

    let status = daemon.stop(Signal::SIGTERM);
    assert!(status.success(), "exit after SIGTERM: {status}");
    // With the daemon gone, the persisted part still prints and the failure is one line.
    let output = replicad(&[
        "status",
        "--state-dir",
        &state,
        "--metrics",
        &metrics.to_string(),
    ]);
    assert!(!output.status.success());
    assert!(stdout_of(&output).contains("durable seq: 40\n"));
    let stderr = stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("replicad: metrics from {metrics}: ")),
        "{stderr}"
    );
}

#[test]
fn the_endpoint_answers_http_errors_and_survives_bad_clients() {
    let dir = workspace();
    let daemon = Daemon::spawn_with_metrics(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        &path(dir.path(), "target.img"),
        "--state-dir",
        &path(dir.path(), "state"),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = daemon.metrics.unwrap();
    // A client that connects and says nothing holds up nobody else.
    let _silent = TcpStream::connect(metrics).unwrap();

    let (status, head, body) = get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
    assert!(
        body.contains("# TYPE replicad_durable_sequence gauge\n"),
        "{body}"
    );

    let (status, _, body) = get(metrics, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, "404 Not Found\n");
    let (status, _, _) = get(metrics, "/metrics/extra");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    let (status, head, _) = exchange(
        metrics,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{head}");

    let (status, head, body) = exchange(metrics, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("\r\nContent-Length: "), "{head}");
    assert_eq!(body, "");

    for malformed in [
        &b"hello there\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET /metrics SPDY/3\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ] {
        let (status, _, _) = exchange(metrics, malformed);
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{malformed:?}");
    }
    let mut oversized = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    oversized.extend(std::iter::repeat_n(b'a', 10_000));
    oversized.extend_from_slice(b"\r\n\r\n");
    let (status, _, _) = exchange(metrics, &oversized);
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");

    // Still serving, and replication was never disturbed.
    let (status, _, _) = get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let output = daemon.send(&["stream", "--count", "2"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(daemon.stop(Signal::SIGTERM).success());
}

#[test]
fn metrics_listen_from_the_config_file_serves_and_feeds_status() {
    let dir = workspace();
    let config = path(dir.path(), "replicad.toml");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ntarget = \"target.img\"\nstate_dir = \"state\"\n\
             metrics_listen = \"{metrics}\"\n"
        ),
    )
    .unwrap();
    let daemon = Daemon::spawn_with_metrics(&["--config", &config]);
    assert_eq!(daemon.metrics, Some(metrics));
    let output = daemon.send(&["stream", "--count", "5"]);
    assert!(output.status.success(), "{}", stderr_of(&output));

    let output = replicad(&["status", "--config", &config]);
    let stdout = stdout_of(&output);
    assert!(output.status.success(), "{stdout}{}", stderr_of(&output));
    assert!(stdout.contains("durable seq: 5\n"), "{stdout}");
    assert!(stdout.contains("\n  durable seq           5\n"), "{stdout}");

    let output = replicad(&["--config", &config, "--check"]);
    assert!(
        stdout_of(&output).contains(&format!(", metrics {metrics}")),
        "{}",
        stdout_of(&output)
    );
    assert!(daemon.stop(Signal::SIGINT).success());
}

#[test]
fn resyncs_and_refused_protection_are_counted() {
    let dir = workspace();
    let marker = path(dir.path(), "refused-once");
    // Refuses the first resync, lets the next through.
    let hook = format!("test -e '{marker}' || {{ touch '{marker}'; exit 1; }}");
    let daemon = Daemon::spawn_with_metrics(&[
        "--listen",
        "127.0.0.1:0",
        "--target",
        &path(dir.path(), "target.img"),
        "--state-dir",
        &path(dir.path(), "state"),
        "--metrics-listen",
        "127.0.0.1:0",
        "--before-resync",
        &hook,
    ]);
    let metrics = daemon.metrics.unwrap();
    let (_, _, body) = get(metrics, "/metrics");
    // A fresh replica: no history, not known consistent.
    for (name, expected) in [
        ("replicad_consistent", "0"),
        ("replicad_resyncing", "0"),
        ("replicad_history_generation", "0"),
        ("replicad_resyncs_total", "0"),
        ("replicad_resync_protection_failures_total", "0"),
    ] {
        assert_eq!(value(&body, name), Some(expected), "{name}:\n{body}");
    }
    let output = daemon.send(&["stream", "--count", "4"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let output = daemon.send(&["stream", "--count", "4", "--resync"]);
    assert!(!output.status.success(), "a refused resync succeeded");
    let volume = format!("{{volume=\"{SENT_VOLUME}\"}}");
    let body = metrics_when(metrics, |body| {
        value(
            body,
            &format!("replicad_resync_protection_failures_total{volume}"),
        ) == Some("1")
    });
    assert_eq!(value(&body, "replicad_session_errors_total"), Some("1"));
    assert_eq!(
        value(&body, &format!("replicad_consistent{volume}")),
        Some("1")
    );
    let output = daemon.send(&["stream", "--count", "4", "--resync"]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let body = metrics_when(metrics, |body| {
        value(body, &format!("replicad_consistent{volume}")) == Some("1")
            && value(body, &format!("replicad_resyncs_total{volume}")) == Some("1")
    });
    for (name, expected) in [
        ("replicad_resyncing", "0"),
        ("replicad_history_generation", "2"),
        ("replicad_resync_protection_failures_total", "1"),
    ] {
        let series = format!("{name}{volume}");
        assert_eq!(value(&body, &series), Some(expected), "{series}:\n{body}");
    }
    assert!(daemon.stop(Signal::SIGTERM).success());
}
