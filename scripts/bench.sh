#!/usr/bin/env bash
# `make bench`: one VM run measures dm-linear, arepl, DRBD protocol A and dm-mirror over
# nbd with the same fio cases on the same disks (tests/vm/bench-guest.sh), then renders
# docs/benchmarks.md and docs/benchmarks.png from the results (scripts/bench-report.py)
# and keeps the raw results as docs/benchmarks.jsonl. Figures are from QEMU TCG
# (software emulation): compare ratios, not absolutes.
#
#   scripts/bench.sh [--no-docs]     (--no-docs: leave docs/ alone; results stay in
#                                     target/bench/)
# The guest's knobs (BENCH_RUNTIME, BENCH_NETWORKS, ...) pass through the environment.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

docs=1
[[ ${1:-} == --no-docs ]] && docs=0
out_dir="$REPO_ROOT/target/bench"
mkdir -p "$out_dir"
results="$out_dir/results.jsonl"
rm -f "$results"

# What the guest cannot see for itself, for the report's header.
BENCH_QEMU=$(qemu-system-x86_64 --version | head -n1)
BENCH_HOST_CPUS=$(nproc)
knobs=()
for var in $(compgen -v BENCH_); do knobs+=("$var=${!var}"); done
# Bounded like the VM suite, so a hung guest ends the run.
timeout --kill-after=30 10800 "$REPO_ROOT/scripts/vm-run.sh" \
    --disk-mb 1024 --disk-mb 1024 --disk-mb 64 --rwdir "$out_dir" -- \
    env "${knobs[@]}" "$REPO_ROOT/tests/vm/bench-guest.sh" "$results"
[[ -s $results ]] || die "the guest wrote no results to $results"

if ((docs)); then
    cp "$results" "$REPO_ROOT/docs/benchmarks.jsonl"
    md="$REPO_ROOT/docs/benchmarks.md" png="$REPO_ROOT/docs/benchmarks.png"
else
    md="$out_dir/benchmarks.md" png="$out_dir/benchmarks.png"
fi
"$REPO_ROOT/scripts/bench-report.py" "$results" --out-md "$md" --out-png "$png"
log "report: $md, chart: $png"
