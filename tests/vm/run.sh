#!/usr/bin/env bash
# Guest side of the VM suite: runs each scenario in order and prints one
# machine-readable line per scenario, which scripts/vm-test.sh reads on the host:
#   AREPL-SUITE-BEGIN <count>
#   AREPL-RESULT PASS|FAIL <name> <seconds>s
#   AREPL-SUITE-END
# AREPL_ONLY (a regular expression) selects scenarios by name.
set -uo pipefail
cd "$(dirname "$0")"

scenarios=()
for file in scenarios/*.sh; do
    name=$(basename "$file" .sh)
    [[ -z ${AREPL_ONLY:-} || $name =~ $AREPL_ONLY ]] && scenarios+=("$file")
done

# replicad runs in a mount namespace of its own (ip netns exec makes it a slave of this
# one), which copies every mount made before it starts. With shared mounts an unmount
# here ends those copies too: a file system is gone, its last blocks written, when a
# scenario unmounts it, not later when the last replicad started under it exits (a
# scenario 61 run found the primary changed after its drain that way).
mount --make-rshared /
echo "AREPL-SUITE-BEGIN ${#scenarios[@]}"
logdir=$(mktemp -d)
for file in "${scenarios[@]}"; do
    name=$(basename "$file" .sh)
    start=$SECONDS
    # A hung scenario must fail, not stall the suite. Its lines stream out as they come
    # (so a hang shows where it stands); what it leaves running cannot hold the stream.
    timeout --kill-after=10 "${AREPL_SCENARIO_TIMEOUT:-600}" bash "$file" >"$logdir/$name.log" 2>&1 &
    pid=$!
    tail -n +1 -f --pid="$pid" "$logdir/$name.log" | sed -u "s/^/  [$name] /"
    wait "$pid"
    rc=$?
    ((rc == 124)) && echo "  [$name] scenario timed out"
    verdict=PASS
    ((rc == 0)) || verdict=FAIL
    echo "AREPL-RESULT $verdict $name $((SECONDS - start))s"
done
echo "AREPL-SUITE-END"
