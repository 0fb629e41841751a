#!/usr/bin/env bash
# The DR machine of `make bench` and `make bench-quick` (scripts/bench-vm.sh): a VM of
# its own, so the receivers take no CPU from the primary's guest, on one bridge with
# it. Without arguments it configures its network card and serves the primary's
# commands (tests/vm/bench_dr_agent.py) until told to quit; each command runs this
# script again with the command's words:
#   replicad PORT [key] a fresh replicad (new state, so any history is accepted) on the
#                       DR disk, listening on PORT (with "key": requiring the
#                       benchmark's key, bench-nodes.sh); the previous one is stopped
#   replicad-stop
#   replicad-cpu        CPU seconds (user and system) the running replicad spent
#   target-speed BS     the DR disk's own MiB/s: fio, direct, BS writes at QD1
#   nbd-up, nbd-down    an nbd-server exporting the DR disk as "replica"
#   busy-seconds        CPU seconds this machine spent busy so far (/proc/stat)
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

# replicad listens on this machine's own network card.
REPLICAD_NETNS=

case ${1:-serve} in
    serve)
        [[ -n $nic ]] || fail "no network card"
        ip addr add "$DR_IP/24" dev "$nic"
        ip link set "$nic" up
        python3 "$HERE/bench_link.py" sink "$LINK_PROBE_PORT" >/dev/null &
        note "DR side at $DR_IP, disk $disk; serving the primary's commands"
        python3 "$HERE/bench_dr_agent.py" serve "$AGENT_PORT" "$0"
        drbd_node_down
        replicad_stop "$STATE"
        "$0" nbd-down
        note "DR side done"
        ;;
    replicad)
        replicad_stop "$STATE"
        rm -rf "$STATE"
        if [[ ${3:-} == key ]]; then
            bench_key
            REPLICAD_ARGS="--key-file $BENCH_KEY_FILE" replicad_start "$disk" "$STATE" "$2"
        else
            replicad_start "$disk" "$STATE" "$2"
        fi
        ;;
    replicad-stop) replicad_stop "$STATE" ;;
    replicad-cpu)
        awk -v tick="$(getconf CLK_TCK)" '{ print ($14 + $15) / tick }' \
            "/proc/$(cat "$STATE/replicad.pid")/stat"
        ;;
    target-speed)
        fio --name=target --filename="$disk" --rw=write --bs="$2" --size=128M --direct=1 \
            --ioengine=psync --time_based --runtime=5 --output-format=json | python3 -c '
import json, sys
print(round(json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"] / 2**20, 2))'
        ;;
    nbd-up)
        printf '[generic]\n    allowlist = false\n[replica]\n    exportname = %s\n    flush = true\n    fua = true\n' \
            "$disk" >/tmp/dr-nbd.conf
        nbd-server -C /tmp/dr-nbd.conf -p /tmp/dr-nbd.pid
        ;;
    nbd-down)
        [[ -f /tmp/dr-nbd.pid ]] && kill "$(cat /tmp/dr-nbd.pid)" 2>/dev/null
        rm -f /tmp/dr-nbd.pid
        ;;
    drbd-up) drbd_node_up "$disk" "$DR_IP" "$2" ;;
    drbd-down) drbd_node_down ;;
    shape) shape_egress "$nic" "$2" ;;
    busy-seconds) busy_seconds ;;
    ping) echo "DR side up: $(uname -r), disk $disk" ;;
    *) fail "unknown command $*" ;;
esac
