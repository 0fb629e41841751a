#!/usr/bin/env bash
# `make bench`: fio in the VM on the same disk, dm-linear against arepl with replication
# running to replicad over a veth link; prints the arepl/dm-linear throughput ratio per
# case. Figures are from QEMU TCG (software emulation): compare ratios, not absolutes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

exec "$REPO_ROOT/scripts/vm-run.sh" --disk-mb 1024 --disk-mb 1024 -- \
    "$REPO_ROOT/tests/vm/bench-guest.sh" "$@"
