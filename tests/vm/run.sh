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
# What a scenario about to time out is stuck on, into its log: a hang leaves no other
# trace (the timeout kills it, and its cleanup may hang as well).
hang_report() {
    echo "--- about to time out; arepl devices:"
    timeout 20 dmsetup status --target arepl
    echo "--- processes:"
    timeout 20 ps -eo pid,ppid,stat,wchan:32,args
    local mark
    mark=$(dmesg | wc -l)
    echo w >/proc/sysrq-trigger
    echo "--- blocked tasks (sysrq w), after the last kernel messages before them:"
    dmesg | head -n "$mark" | tail -n 40
    dmesg | tail -n "+$((mark + 1))"
    # The blocked tasks' traces are no fault of the scenarios after this one.
    dmesg -C
}

echo "AREPL-SUITE-BEGIN ${#scenarios[@]}"
limit=${AREPL_SCENARIO_TIMEOUT:-600}
logdir=$(mktemp -d)
for file in "${scenarios[@]}"; do
    name=$(basename "$file" .sh)
    start=$SECONDS
    # A hung scenario must fail, not stall the suite. Its lines stream out as they come
    # (so a hang shows where it stands); what it leaves running cannot hold the stream.
    timeout --kill-after=10 "$limit" bash "$file" >"$logdir/$name.log" 2>&1 &
    pid=$!
    { sleep $((limit - 5)) && kill -0 "$pid" 2>/dev/null && hang_report >>"$logdir/$name.log" 2>&1; } &
    reporter=$!
    tail -n +1 -f --pid="$pid" "$logdir/$name.log" | sed -u "s/^/  [$name] /"
    wait "$pid"
    rc=$?
    # Its sleep first: the report is then skipped, and no sleeper outlives the scenario.
    pkill -P "$reporter" sleep 2>/dev/null
    wait "$reporter" 2>/dev/null
    ((rc == 124)) && echo "  [$name] scenario timed out"
    # Its own cleanup may not have run to the end (a timeout kills it): what it left
    # must not fail the scenarios after it.
    if ((rc != 0)); then
        bash -c 'source ./lib.sh && trap - EXIT ERR && clear_leftovers' 2>&1 | sed "s/^/  [$name] /"
    fi
    verdict=PASS
    ((rc == 0)) || verdict=FAIL
    echo "AREPL-RESULT $verdict $name $((SECONDS - start))s"
done
echo "AREPL-SUITE-END"
