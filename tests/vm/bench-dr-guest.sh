#!/usr/bin/env bash
# The DR machine of `make bench-quick` (scripts/bench-quick.sh): a VM of its own, so the
# receivers take no CPU from the primary's guest, on one bridge with it. Without
# arguments it configures its network card and serves the primary's commands
# (tests/vm/bench_dr_agent.py) until told to quit; each command runs this script again
# with the command's words:
#   replicad PORT       a fresh replicad (new state, so any history is accepted) on the
#                       DR disk, listening on PORT; the previous one is stopped
#   replicad-stop
#   drbd-up PEER        DRBD node r0 on the DR disk, connecting to PEER (bench-nodes.sh)
#   drbd-down
#   shape NETWORK       shapes this side's outgoing traffic (bench-nodes.sh)
#   ping
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-nodes.sh"
HERE=$(cd "$(dirname "$0")" && pwd)

DR_IP=10.77.0.1
AGENT_PORT=7700
LINK_PROBE_PORT=5001
STATE=/tmp/dr-replicad
disk=$(disk_by_serial arepl0)
nic=$(ls /sys/class/net | grep -vx lo | head -n1)

replicad_stop_here() {
    local pid
    pid=$(cat "$STATE/replicad.pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$STATE/replicad.pid"
}
listening() { ss -ltnH "sport = :$1" | grep -q .; }

case ${1:-serve} in
    serve)
        [[ -n $nic ]] || fail "no network card"
        ip addr add "$DR_IP/24" dev "$nic"
        ip link set "$nic" up
        python3 "$HERE/bench_link.py" sink "$LINK_PROBE_PORT" >/dev/null &
        note "DR side at $DR_IP, disk $disk; serving the primary's commands"
        python3 "$HERE/bench_dr_agent.py" serve "$AGENT_PORT" "$0"
        drbd_node_down
        replicad_stop_here
        note "DR side done"
        ;;
    replicad)
        replicad_stop_here
        rm -rf "$STATE"
        mkdir -p "$STATE"
        "$REPLICAD" --listen "0.0.0.0:$2" --target "$disk" --state-dir "$STATE" \
            >"$STATE/replicad.log" 2>&1 &
        echo $! >"$STATE/replicad.pid"
        retry_briefly listening "$2" || {
            cat "$STATE/replicad.log"
            fail "replicad did not start listening"
        }
        ;;
    replicad-stop) replicad_stop_here ;;
    drbd-up) drbd_node_up "$disk" "$DR_IP" "$2" ;;
    drbd-down) drbd_node_down ;;
    shape) shape_egress "$nic" "$2" ;;
    ping) echo "DR side up: $(uname -r), disk $disk" ;;
    *) fail "unknown command $*" ;;
esac
