#!/usr/bin/env bash
# Guest half of `make bench-quick` (scripts/bench-quick.sh): the write-path regime in a
# few minutes. dm-linear and arepl (and, with BENCH_BASELINE_KO, the module built from
# another commit: system "arepl-baseline") take turns on the same disk, case by case
# and repetition by repetition (A/B/A/B), so drift in the host hits all alike. Each
# arepl run is a burst smaller than its queue (queue_mb 1024) into a fresh device whose
# link is paused: nothing is sent, so the figures are what a write costs on the
# primary and nothing else. One JSON line per run to the file $1.
#
# With BENCH_DR_ADDR (the address of the DR machine: a VM of its own on one bridge with
# this one, whose receivers this guest starts and stops through its agent, see
# scripts/bench-quick.sh) it then measures with the link up:
# - "rate": random 64 KiB writes at QD4 at half the measured link rate (below the link,
#   so the queue never fills), on the unshaped link: latency is the write path's cost
#   while the link streams;
# - "sustained": 1 MiB writes at QD16 for BENCH_SUSTAINED_S seconds (arepl with a
#   64 MiB queue, full at once), then the drain, on each network of BENCH_NETWORKS:
#   throughput against min(dm-linear, link), drain rate against the link, and the
#   guest's CPU seconds per GiB (from /proc/stat) next to dm-linear's.
# Systems with the link up: dm-linear (no replication), arepl, "arepl-nocrc" (arepl
# with wire_crc:off: no payload CRC on the wire, as DRBD by default), "drbd-a" (DRBD
# 8.4 protocol A, its peer on the same DR machine over the same link), and
# arepl-baseline when given. Each runs in the initial network namespace (DRBD's
# sockets live there), so all of them use the one network card.
#
# Knobs (environment): BENCH_REPS repetitions (3), BENCH_RUNTIME seconds per run at
# most (4), BENCH_BURST_MB bytes per run at most (384), BENCH_CASES ("none" skips the
# paused regime), BENCH_SUSTAINED_S (10), BENCH_NETWORKS (networks of the sustained
# regime: 0ms, Nms round trip, 100mbit; "0ms"), BENCH_LINK_SYSTEMS (the systems with
# the link up).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-nodes.sh"

OUT=${1:?usage: bench-quick-guest.sh RESULTS.jsonl}
REPS=${BENCH_REPS:-3}
RUNTIME=${BENCH_RUNTIME:-4}
BURST_MB=${BENCH_BURST_MB:-384}
CASES=${BENCH_CASES:-write:64k:1 write:64k:16 write:1m:1 write:1m:16 randwrite:64k:1 randwrite:64k:16 randwrite:1m:16 randwrite:4k:1}
HERE=$(cd "$(dirname "$0")" && pwd)
SYSTEMS="dm-linear arepl"
[[ -n ${BENCH_BASELINE_KO:-} ]] && SYSTEMS+=" arepl-baseline"

primary=$(disk_by_serial arepl0)
sectors=$(sectors_of "$primary")
: >"$OUT"
net_setup

use_module() { # path of the dm-arepl.ko to load
    if module_loaded; then
        rmmod dm_arepl
    fi
    insmod "$1"
}

# Prints the device to write to for system $1.
make_device() {
    case $1 in
        dm-linear) dmsetup create bench-q --table "0 $sectors linear $primary 0" ;;
        *)
            arepl_create bench-q "$primary" "$PRIMARY_ADDR 2 volume:benchq queue_mb:1024"
            dmsetup message bench-q 0 pause
            ;;
    esac
    echo /dev/mapper/bench-q
}

run_case() { # system, pattern, block size, depth, repetition
    local dev json
    dev=$(make_device "$1")
    json=$(fio --name=quick --filename="$dev" --rw="$2" --bs="$3" --iodepth="$4" \
        --size="${BURST_MB}M" --io_size="${BURST_MB}M" --runtime="$RUNTIME" \
        --direct=1 --ioengine=libaio --lat_percentiles=1 --randrepeat=0 --norandommap \
        --output-format=json)
    if [[ $1 != dm-linear ]]; then
        # Nothing was sent: the whole burst is still queued, within the queue.
        local queued
        queued=$(status_field bench-q queued_bytes)
        (( queued > 0 && queued <= 1024 << 20 )) || fail "$1: queued_bytes=$queued after a burst"
    fi
    dmsetup remove --retry bench-q
    python3 "$HERE/bench_case.py" "$1" paused "$2" "$3" "$4" "rep=$5" <<<"$json" >>"$OUT"
}

[[ $CASES == none ]] && CASES=
for case in $CASES; do
    IFS=: read -r pattern bs qd <<<"$case"
    for rep in $(seq "$REPS"); do
        for system in $SYSTEMS; do
            case $system in
                arepl) use_module "$MODULE_KO" ;;
                arepl-baseline) use_module "$BENCH_BASELINE_KO" ;;
            esac
            run_case "$system" "$pattern" "$bs" "$qd" "$rep"
        done
    done
    note "$case done"
done

# --- With the link up, to the DR machine.
[[ -n ${BENCH_DR_ADDR:-} ]] || { dmesg_assert_clean; exit 0; }
DR_IP=$BENCH_DR_ADDR
PRIMARY_IP=${DR_IP%.*}.2
DR_AGENT_PORT=7700
REPLICAD_PORT=7788
use_module "$MODULE_KO"

# Runs a command on the DR machine (tests/vm/bench-dr-guest.sh).
dr() { python3 "$HERE/bench_dr_agent.py" call "$DR_IP" "$DR_AGENT_PORT" "$@"; }

nic=$(ls /sys/class/net | grep -vx lo | head -n1)
[[ -n $nic ]] || fail "no network card for the DR link"
ip addr add "$PRIMARY_IP/24" dev "$nic"
ip link set "$nic" up
# The DR machine boots alongside this one.
for _ in $(seq 120); do dr ping >/dev/null 2>&1 && break; sleep 1; done
dr ping || fail "the DR machine at $DR_IP does not answer"

# Busy CPU ticks of the whole guest (user, nice, system, irq, softirq) so far.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
ticks_per_s=$(getconf CLK_TCK)

# Shapes both directions for network $1 and measures the link (MiB/s into link_mib_s).
network() {
    shape_egress "$nic" "$1"
    dr shape "$1" >/dev/null
    link_mib_s=$(python3 "$HERE/bench_link.py" send "$DR_IP" 5001 4)
    note "link to $DR_IP, $1: $link_mib_s MiB/s"
    echo "{\"kind\": \"link\", \"shaping\": \"$1\", \"mib_s\": $link_mib_s}" >>"$OUT"
}

# Sets up system $1 (arepl: queue of $2 MiB) with its receiver on the DR machine and
# prints the device to write to.
link_device() {
    local features
    case $1 in
        dm-linear) dmsetup create bench-l --table "0 $sectors linear $primary 0" >&2 ;;
        arepl | arepl-nocrc | arepl-baseline)
            features="2 volume:benchl queue_mb:$2"
            [[ $1 == arepl-nocrc ]] && features="3 volume:benchl queue_mb:$2 wire_crc:off"
            dr replicad "$REPLICAD_PORT" >&2
            dmsetup create bench-l --table \
                "0 $sectors arepl $primary $DR_IP:$REPLICAD_PORT $features" >&2
            wait_connected bench-l 60 >&2
            ;;
        drbd-a)
            dr drbd-up "$PRIMARY_IP" >&2
            drbd_node_up "$primary" "$PRIMARY_IP" "$DR_IP" >&2
            drbd_take_primary >&2
            echo /dev/drbd0
            return
            ;;
    esac
    echo /dev/mapper/bench-l
}

# Waits until system $1 has sent everything and the DR side acknowledged it.
link_drained() {
    case $1 in
        dm-linear) ;;
        drbd-a)
            # Protocol A completes a write once it is in the send buffer: drained when
            # nothing is pending, unacknowledged or in the activity log's way.
            local i
            for i in $(seq 1800); do
                grep -A1 '^ 0:' /proc/drbd | grep -q ' pe:0 ua:0 ap:0 ' && return 0
                sleep 0.5
            done
            fail "DRBD did not finish sending: $(cat /proc/drbd)"
            ;;
        *) wait_drained bench-l 900 ;;
    esac
}

link_teardown() {
    case $1 in
        drbd-a)
            drbd_node_down
            dr drbd-down >/dev/null
            ;;
        *)
            dmsetup remove --retry bench-l
            [[ $1 == dm-linear ]] || dr replicad-stop >/dev/null
            ;;
    esac
}

# Runs fio on system $1 for case $2 on network $3 (pattern $4, block size $5, depth
# $6, more fio arguments after); waits for the drain and records it. CPU ticks cover
# the run and the drain.
link_run() {
    local system=$1 name=$2 network=$3 pattern=$4 bs=$5 qd=$6 dev json start_ticks start_ns drained_ns=0
    shift 6
    # Below the link the queue never fills; faster, a small queue fills at once, so
    # the run measures the steady state rather than the queue soaking up a burst.
    local queue_mb=1024
    [[ $name == sustained ]] && queue_mb=64
    dev=$(link_device "$system" "$queue_mb")
    python3 "$HERE/cpu_split.py" snapshot /tmp/cpu-split.json
    start_ticks=$(busy_ticks)
    start_ns=$(date +%s%N)
    json=$(fio --name=link --filename="$dev" --rw="$pattern" --bs="$bs" --iodepth="$qd" \
        --direct=1 --ioengine=libaio --lat_percentiles=1 --randrepeat=0 --norandommap \
        --size=768M --time_based --output-format=json "$@")
    link_drained "$system"
    [[ $system == dm-linear ]] || drained_ns=$(($(date +%s%N) - start_ns))
    local ticks=$(($(busy_ticks) - start_ticks))
    python3 "$HERE/cpu_split.py" diff /tmp/cpu-split.json "$system" "$name" "$rep" \
        "shaping=$network" >>"$OUT"
    link_teardown "$system"
    python3 "$HERE/bench_case.py" "$system" "$name" "$pattern" "$bs" "$qd" "rep=$rep" \
        "shaping=$network" "cpu_s=$(python3 -c "print($ticks / $ticks_per_s)")" \
        "drained_s=$(python3 -c "print($drained_ns / 1e9)")" "link_mib_s=$link_mib_s" \
        <<<"$json" >>"$OUT"
}

# The module each system runs on.
load_for() {
    case $1 in
        arepl | arepl-nocrc) use_module "$MODULE_KO" ;;
        arepl-baseline) use_module "$BENCH_BASELINE_KO" ;;
    esac
}

LINK_SYSTEMS=${BENCH_LINK_SYSTEMS:-dm-linear arepl arepl-nocrc drbd-a}
[[ -n ${BENCH_BASELINE_KO:-} ]] && LINK_SYSTEMS+=" arepl-baseline"
network 0ms
rate=$(python3 -c "print(max(1, int($link_mib_s / 2)))")
for rep in $(seq "$REPS"); do
    for system in $LINK_SYSTEMS; do
        load_for "$system"
        link_run "$system" rate 0ms randwrite 64k 4 --rate="${rate}m" --runtime=8
    done
    note "rate ${rate} MiB/s, repetition $rep done"
done
for net in ${BENCH_NETWORKS:-0ms}; do
    [[ $net == 0ms ]] || network "$net"
    for rep in $(seq "$REPS"); do
        for system in $LINK_SYSTEMS; do
            load_for "$system"
            link_run "$system" sustained "$net" write 1m 16 --runtime="${BENCH_SUSTAINED_S:-10}"
        done
        note "sustained, $net, repetition $rep done"
    done
done
dr quit >/dev/null
dmesg_assert_clean 'drbd_w_.*'
