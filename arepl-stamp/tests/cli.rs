//! The built binary on a regular file: phased writes, then checks of the result and of
//! damaged copies, and the exit statuses.

use std::path::Path;
use std::process::{Command, Output};

const AREPL_STAMP: &str = env!("CARGO_BIN_EXE_arepl-stamp");
const BLOCKS: &str = "64";

fn arepl_stamp(args: &[&str]) -> Output {
    Command::new(AREPL_STAMP).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

fn write(image: &str, log: &str, count: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "write",
        "--dev",
        image,
        "--block-size",
        "4096",
        "--blocks",
        BLOCKS,
        "--count",
        count,
        "--seed",
        "7",
        "--log",
        log,
    ];
    args.extend_from_slice(extra);
    arepl_stamp(&args)
}

fn check(image: &str, log: &str) -> Output {
    arepl_stamp(&[
        "check",
        "--image",
        image,
        "--log",
        log,
        "--block-size",
        "4096",
        "--blocks",
        BLOCKS,
    ])
}

/// Exited with `code`, and stdout starts with `start`.
fn assert_outcome(output: &Output, code: i32, start: &str) {
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.starts_with(start),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}

#[test]
fn phased_writes_check_as_the_full_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (image, log) = (path(dir.path(), "image"), path(dir.path(), "log"));
    std::fs::File::create(&image).unwrap();

    let output = write(&image, &log, "500", &[]);
    assert_outcome(&output, 0, "wrote 500 writes (1..=500), 2048000 bytes in ");
    let summary = text(&output.stdout);
    assert_eq!(summary.lines().count(), 1);
    assert!(summary.contains("MiB/s"), "{summary}");
    if summary.contains("buffered") {
        assert!(
            text(&output.stderr).contains("warning"),
            "{}",
            text(&output.stderr)
        );
    }
    assert_outcome(
        &check(&image, &log),
        0,
        "ok: image is the state after write 500 of 500 (prefix: writes 1..=500 applied, none pending)",
    );

    // A replica that stopped after the first phase.
    let replica = path(dir.path(), "replica");
    std::fs::copy(&image, &replica).unwrap();

    // A second phase with four submitters continues the numbering.
    let output = write(&image, &log, "300", &["--first", "501", "--jobs", "4"]);
    assert_outcome(&output, 0, "wrote 300 writes (501..=800)");
    assert_outcome(
        &check(&image, &log),
        0,
        "ok: image is the state after write 800 of 800",
    );
    assert_outcome(
        &check(&replica, &log),
        0,
        "ok: image is the state after write 500 of 800 in completion order",
    );
}

#[test]
fn damaged_image_is_a_violation() {
    let dir = tempfile::tempdir().unwrap();
    let (image, log) = (path(dir.path(), "image"), path(dir.path(), "log"));
    std::fs::File::create(&image).unwrap();
    assert_outcome(&write(&image, &log, "200", &[]), 0, "wrote 200 writes");

    let mut bytes = std::fs::read(&image).unwrap();
    bytes[3 * 4096 + 100..4 * 4096].fill(0x5a);
    std::fs::write(&image, &bytes).unwrap();
    let output = check(&image, &log);
    assert_outcome(&output, 1, "violation: ");
    assert!(
        text(&output.stdout).contains("block 3:"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn bad_usage_and_missing_files_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (image, log) = (path(dir.path(), "image"), path(dir.path(), "log"));
    std::fs::File::create(&image).unwrap();

    let output = check(&image, &log);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("cannot read log"),
        "{}",
        text(&output.stderr)
    );

    let output = write(&path(dir.path(), "absent"), &log, "5", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("cannot open"),
        "{}",
        text(&output.stderr)
    );

    assert_outcome(&write(&image, &log, "5", &[]), 0, "wrote 5 writes");
    let output = write(&image, &log, "5", &["--first", "3"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("next write number is 6"),
        "{}",
        text(&output.stderr)
    );

    // The image holds 64 blocks; asking for more is an I/O error, not a violation.
    let output = arepl_stamp(&["check", "--image", &image, "--log", &log, "--blocks", "100"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("image ends"),
        "{}",
        text(&output.stderr)
    );

    let output = arepl_stamp(&["write", "--dev", &image, "--blocks", "4"]);
    assert_eq!(output.status.code(), Some(2));
    let output = arepl_stamp(&[
        "check",
        "--image",
        &image,
        "--log",
        &log,
        "--blocks",
        "64",
        "--block-size",
        "1000",
    ]);
    assert_eq!(output.status.code(), Some(2));
}
