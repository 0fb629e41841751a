#!/usr/bin/env bash
# `make bench-quick`: the write-path regime of the benchmark in a few minutes (see
# tests/vm/bench-quick-guest.sh), printed as ratios to dm-linear. Results stay in
# target/bench-quick/; docs/ is left alone.
#
#   scripts/bench-quick.sh [BASELINE_KO]   (BASELINE_KO: a dm-arepl.ko built from another
#                                           commit, measured as "arepl-baseline")
# The guest's knobs (BENCH_REPS, BENCH_RUNTIME, BENCH_BURST_MB, BENCH_CASES) pass
# through the environment.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out_dir="$REPO_ROOT/target/bench-quick"
mkdir -p "$out_dir"
results="$out_dir/results.jsonl"
rm -f "$results"
knobs=()
for var in $(compgen -v BENCH_); do knobs+=("$var=${!var}"); done
if [[ -n ${1:-} ]]; then
    [[ -f $1 ]] || die "no module at $1"
    cp "$1" "$out_dir/baseline.ko"
    knobs+=("BENCH_BASELINE_KO=$out_dir/baseline.ko")
fi
timeout --kill-after=30 3600 "$REPO_ROOT/scripts/vm-run.sh" \
    --disk-mb 1024 --rwdir "$out_dir" -- \
    env "${knobs[@]}" "$REPO_ROOT/tests/vm/bench-quick-guest.sh" "$results"
[[ -s $results ]] || die "the guest wrote no results to $results"
"$REPO_ROOT/scripts/bench-quick-report.py" "$results" | tee "$out_dir/summary.txt"
