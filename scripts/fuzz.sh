#!/usr/bin/env bash
# Usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer args...]
# Builds fuzz target TARGET (fuzz/fuzz_targets/TARGET.rs) with the instrumentation
# cargo-fuzz uses, without needing cargo-fuzz, and runs it for SECONDS on a copy of its
# seed corpus (fuzz/corpus/TARGET). Fails if it crashes, keeping the input in
# target/fuzz/artifacts/TARGET/; the full log is target/fuzz/logs/TARGET.log.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

(($# >= 2)) || die "usage: $0 TARGET SECONDS [libFuzzer args...]"
target=$1 seconds=$2
shift 2
[[ -f "$REPO_ROOT/fuzz/fuzz_targets/$target.rs" ]] || die "no fuzz target $target"

# cargo-fuzz's flags (SanitizerCoverage feeding libFuzzer, comparisons traced so it
# can solve magic values), plus the overflow and debug checks of a debug build. No
# sanitizer: the code under test has no unsafe code of its own.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="$REPO_ROOT/target/fuzz"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros.
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
log "building $target"
cargo +nightly build --quiet --release --locked --manifest-path "$REPO_ROOT/fuzz/Cargo.toml" \
    --target "$triple" --bin "$target"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# libFuzzer adds what it finds to the corpus directory: the committed seeds stay as
# they are.
cp -r "$REPO_ROOT/fuzz/corpus/$target" "$work/corpus"
artifacts="$CARGO_TARGET_DIR/artifacts/$target"
logfile="$CARGO_TARGET_DIR/logs/$target.log"
mkdir -p "$artifacts" "$(dirname "$logfile")"
log "fuzzing $target for $seconds s (log: $logfile)"
status=0
"$CARGO_TARGET_DIR/$triple/release/$target" "$work/corpus" -max_total_time="$seconds" \
    -dict="$REPO_ROOT/fuzz/corpus/dict" -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/" "$@" >"$logfile" 2>&1 ||
    status=$?
grep '^stat::' "$logfile" >&2 || true
executions=$(sed -n 's/^stat::number_of_executed_units: //p' "$logfile")
if ((status != 0)); then
    tail -n 60 "$logfile" >&2
    die "$target failed (exit $status) after ${executions:-?} executions; input kept in $artifacts/"
fi
log "$target: ${executions:-?} executions in $seconds s, no crash"
