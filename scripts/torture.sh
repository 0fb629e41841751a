#!/usr/bin/env bash
# `make torture SEED=S N=ROUNDS`: the fault-injection run of tests/vm/torture.sh in the
# VM, with its own disks. A seed reproduces the schedule of faults and snapshots; the
# last lines are the summary (faults injected, snapshots checked, violations).
#
#   scripts/torture.sh SEED ROUNDS
set -euo pipefail
source "$(dirname "$0")/lib.sh"

seed=${1:?usage: torture.sh SEED ROUNDS}
rounds=${2:?usage: torture.sh SEED ROUNDS}
log "torture: seed $seed, $rounds rounds (reproduce with: make torture SEED=$seed N=$rounds)"
out="${TMPDIR:-/tmp}/arepl-torture-$seed.log"
# About half a minute per round in TCG; the bound only catches a hung guest.
set +e
timeout --kill-after=30 $((600 + rounds * 120)) "$REPO_ROOT/scripts/vm-run.sh" \
    --disk-mb 64 --disk-mb 160 --disk-mb 128 -- \
    "$REPO_ROOT/tests/vm/torture.sh" "$seed" "$rounds" 2>&1 | stdbuf -oL tr -d '\r' | tee "$out"
rc=${PIPESTATUS[0]}
set -e
# Judged by what the guest printed, as the VM suite is.
if ((rc == 0)) && ! grep -q '^TORTURE-SUMMARY .* violations=0 ' "$out"; then
    rc=1
fi
log "torture log: $out"
exit "$rc"
