#!/usr/bin/env bash
# Host side of the VM suite: boots the test kernel with two scratch disks, runs
# tests/vm/run.sh in the guest, and judges the run only by what the guest printed.
#
#   scripts/vm-test.sh [SCENARIO-REGEX]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

only=${1:-}
log=$(mktemp "${TMPDIR:-/tmp}/arepl-vm-test.XXXXXX.log")
log "guest output goes to $log"

set +e
# The whole VM run is bounded too, so CI ends with a verdict even if the guest hangs.
timeout --kill-after=30 3600 "$REPO_ROOT/scripts/vm-run.sh" --disk-mb 320 --disk-mb 320 --disk-mb 64 -- \
    env AREPL_ONLY="$only" "$REPO_ROOT/tests/vm/run.sh" 2>&1 | stdbuf -oL tr -d '\r' | tee "$log"
vm_rc=${PIPESTATUS[0]}
set -e

expected=$(sed -n 's/^AREPL-SUITE-BEGIN \([0-9]*\)$/\1/p' "$log" | tail -n1)
passed=$(grep -c '^AREPL-RESULT PASS ' "$log" || true)
failed=$(grep -c '^AREPL-RESULT FAIL ' "$log" || true)

echo
echo "VM suite results:"
grep '^AREPL-RESULT ' "$log" | sed 's/^AREPL-RESULT /  /' || true
# A failure's reason, next to the verdict: CI shows only the end of a long log.
grep -E '^ *\[[^]]+\] FAIL: ' "$log" | sed 's/^ */  why: /' || true
if [[ -z $expected ]]; then
    echo "  FAIL the guest never started the suite (vng exit $vm_rc)"
    failed=$((failed + 1))
elif ((expected == 0)); then
    echo "  FAIL no scenario matches '$only'"
    failed=$((failed + 1))
else
    missing=$((expected - passed - failed))
    if ((missing > 0)); then
        echo "  FAIL $missing scenario(s) never reported (guest crashed or hung?)"
        failed=$((failed + missing))
    fi
    if ! grep -q '^AREPL-SUITE-END$' "$log"; then
        echo "  FAIL the guest did not finish the suite"
        failed=$((failed + 1))
    fi
fi
if ((vm_rc != 0)); then
    echo "  FAIL the VM exited with status $vm_rc"
    failed=$((failed + 1))
fi
echo "vm: $passed passed, $failed failed"
((failed == 0))
