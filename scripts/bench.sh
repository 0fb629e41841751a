#!/usr/bin/env bash
# `make bench`: fio in the VM on the same disk, dm-linear against arepl with replication
# running to replicad over a veth link; prints the arepl/dm-linear throughput ratio per
# case, then the same for writes that spill (both links cut) against dm-linear. Figures
# are from QEMU TCG (software emulation): compare ratios, not absolutes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

exec "$REPO_ROOT/scripts/vm-run.sh" --disk-mb 1024 --disk-mb 1024 --disk-mb 256 -- \
    "$REPO_ROOT/tests/vm/bench-guest.sh" "$@"
