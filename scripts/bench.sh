#!/usr/bin/env bash
# `make bench`: every measurement of scripts/bench-vm.sh on three networks, with longer
# sustained runs and the extras (replicad alone applying, the activity log's cost),
# then docs/benchmarks.md, docs/benchmarks.png and docs/benchmarks.jsonl rendered from
# the results (scripts/bench-report.py). Figures are from QEMU TCG (software
# emulation): compare ratios, not absolutes.
#
#   scripts/bench.sh [--no-docs]     (--no-docs: leave docs/ alone; results and report
#                                     stay in target/bench/)
# Any BENCH_* knob set in the environment (tests/vm/bench-guest.sh) replaces the
# default here.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

docs=1
[[ ${1:-} == --no-docs ]] && docs=0
out_dir="$REPO_ROOT/target/bench"
export BENCH_COMMAND="make bench"
export BENCH_NETWORKS=${BENCH_NETWORKS:-0ms 10ms 100mbit}
export BENCH_LINK_SYSTEMS=${BENCH_LINK_SYSTEMS:-dm-linear arepl arepl-nocrc arepl-tls drbd-a dm-mirror-nbd}
# Long enough that a 64 MiB queue soaks up a small part of the run, even at 100 Mbit/s.
export BENCH_SUSTAINED_S=${BENCH_SUSTAINED_S:-30}
export BENCH_EXTRAS=${BENCH_EXTRAS:-apply activity-log}
"$REPO_ROOT/scripts/bench-vm.sh" "$out_dir"

if ((docs)); then
    cp "$out_dir/results.jsonl" "$REPO_ROOT/docs/benchmarks.jsonl"
    md="$REPO_ROOT/docs/benchmarks.md" png="$REPO_ROOT/docs/benchmarks.png"
else
    md="$out_dir/benchmarks.md" png="$out_dir/benchmarks.png"
fi
"$REPO_ROOT/scripts/bench-report.py" "$out_dir/results.jsonl" --out-md "$md" --out-png "$png" |
    tee "$out_dir/summary.txt"
log "report: $md, chart: $png"
