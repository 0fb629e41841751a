#!/usr/bin/env bash
# `make bench-quick`: the benchmark's headline figures in about 20 minutes, printed as
# ratios (scripts/bench-report.py); results stay in target/bench-quick/, docs/ is left
# alone. The same measurements as `make bench` (scripts/bench-vm.sh), with fewer
# networks and shorter runs.
#
#   scripts/bench-quick.sh [BASELINE_KO]   (BASELINE_KO: a dm-arepl.ko built from
#                                           another commit, measured as "arepl-baseline")
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out_dir="$REPO_ROOT/target/bench-quick"
BENCH_COMMAND="make bench-quick" "$REPO_ROOT/scripts/bench-vm.sh" "$out_dir" "$@"
"$REPO_ROOT/scripts/bench-report.py" "$out_dir/results.jsonl" | tee "$out_dir/summary.txt"
