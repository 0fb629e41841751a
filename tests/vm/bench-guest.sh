#!/usr/bin/env bash
# Guest half of `make bench` and `make bench-quick` (scripts/bench-vm.sh): the primary's
# side of every measurement, one JSON line per run to the file $1 (read by
# scripts/bench-report.py). Systems take turns case by case and repetition by
# repetition (A/B/A/B), so drift in the host hits all alike.
#
# - "paused", the write path alone: dm-linear and arepl (and, with BENCH_BASELINE_KO,
#   the module built from another commit: system "arepl-baseline") on the same disk;
#   each arepl run is a burst smaller than its queue (queue_mb 1024) into a fresh
#   device whose link is paused: nothing is sent, so the figures are what a write
#   costs on the primary and nothing else.
#
# With BENCH_DR_ADDR (the address of the DR machine: a VM of its own on one bridge with
# this one, whose receivers this guest starts and stops through its agent, see
# scripts/bench-vm.sh) it then measures with the link up:
# - "rate": random 64 KiB writes at QD4 at half the measured link rate (below the link,
#   so the queue never fills), on the unshaped link: latency is the write path's cost
#   while the link streams;
# - "sustained": 1 MiB writes at QD16 for BENCH_SUSTAINED_S seconds (arepl with a
#   64 MiB queue, full at once), then the drain, on each network of BENCH_NETWORKS:
#   throughput against min(dm-linear, link), drain rate against the link, and the
#   guest's CPU seconds per GiB (from /proc/stat) next to dm-linear's.
# Systems with the link up: dm-linear (no replication), arepl, "arepl-nocrc" (arepl
# with wire_crc:off: no payload checksum on the wire, as DRBD by default), "arepl-tls"
# (arepl with key: both ends authenticated, the link encrypted by kTLS), "drbd-a" (DRBD
# 8.4 protocol A, its peer on the DR machine), "dm-mirror-nbd" (dm-mirror whose second
# leg is an nbd device served by the DR machine: synchronous), and arepl-baseline when
# given, unless BENCH_LINK_SYSTEMS picks the systems. Each runs in the initial network namespace (DRBD's sockets live there), so
# all of them use the one network card and the same path.
# BENCH_EXTRAS adds, on the unshaped link: "apply" (replicad alone applying a stream
# queued on a paused device, against its target's own speed) and "activity-log" (the
# activity log's cost per 4 KiB write, arepl without and with a spill device).
#
# Knobs (environment): BENCH_REPS repetitions (3), BENCH_RUNTIME seconds per paused
# run at most (4), BENCH_BURST_MB bytes per paused run at most (384), BENCH_CASES
# ("none" skips the paused regime), BENCH_SUSTAINED_S (10), BENCH_NETWORKS (networks
# of the sustained regime: 0ms, Nms round trip, 100mbit; "0ms"), BENCH_LINK_SYSTEMS
# (the systems with the link up), BENCH_EXTRAS (none); BENCH_COMMAND, BENCH_QEMU and
# BENCH_HOST_CPUS describe the run in its "meta" line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/bench-nodes.sh"

OUT=${1:?usage: bench-guest.sh RESULTS.jsonl}
REPS=${BENCH_REPS:-3}
RUNTIME=${BENCH_RUNTIME:-4}
BURST_MB=${BENCH_BURST_MB:-384}
CASES=${BENCH_CASES:-write:64k:1 write:64k:16 write:1m:1 write:1m:16 randwrite:64k:1 randwrite:64k:16 randwrite:1m:16 randwrite:4k:1}
HERE=$(cd "$(dirname "$0")" && pwd)
SYSTEMS="dm-linear arepl"
[[ -n ${BENCH_BASELINE_KO:-} ]] && SYSTEMS+=" arepl-baseline"

primary=$(disk_by_serial arepl0)
spill=$(disk_by_serial arepl1)
sectors=$(sectors_of "$primary")
: >"$OUT"
net_setup
python3 -c '
import json, os, sys
print(json.dumps({"kind": "meta", "kernel": os.uname().release, "qemu": sys.argv[1],
                  "cpus": os.cpu_count(), "host_cpus": int(sys.argv[2]), "command": sys.argv[3],
                  "started": sys.argv[4], "reps": int(sys.argv[5])}, sort_keys=True))' \
    "${BENCH_QEMU:-unknown}" "${BENCH_HOST_CPUS:-0}" "${BENCH_COMMAND:-make bench}" \
    "$(date -u +%FT%TZ)" "$REPS" >>"$OUT"

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
        # Writes over a payload still only on the local device wait for its read-back.
        note "$1 $2 $3 QD$4: $(status_field bench-q cow_writes) of $(status_field bench-q writes) writes copied on write"
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

# Shapes both directions for network $1 (now in shaped) and measures the link (MiB/s
# into link_mib_s).
network() {
    shaped=$1
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
        arepl | arepl-nocrc | arepl-tls | arepl-baseline)
            features="2 volume:benchl queue_mb:$2"
            [[ $1 == arepl-nocrc ]] && features="3 volume:benchl queue_mb:$2 wire_crc:off"
            if [[ $1 == arepl-tls ]]; then
                features="3 volume:benchl queue_mb:$2 key:arepl:bench"
                bench_key
                load_key arepl:bench "$BENCH_KEY_FILE"
                dr replicad "$REPLICAD_PORT" key >&2
            else
                dr replicad "$REPLICAD_PORT" >&2
            fi
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
        dm-mirror-nbd)
            dr nbd-up >&2
            retry_briefly nbd-client "$DR_IP" 10809 /dev/nbd0 -N replica >&2 ||
                fail "nbd-client could not connect to $DR_IP"
            dmsetup create bench-l --table \
                "0 $sectors mirror core 2 1024 nosync 2 $primary 0 /dev/nbd0 0" >&2
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
        arepl*) wait_drained bench-l 900 ;;
        # Synchronous: nothing is left to send once fio is done.
        dm-mirror-nbd) ;;
    esac
}

link_teardown() {
    case $1 in
        drbd-a)
            drbd_node_down
            dr drbd-down >/dev/null
            ;;
        dm-mirror-nbd)
            dmsetup remove --retry bench-l
            nbd-client -d /dev/nbd0 >/dev/null
            dr nbd-down >/dev/null
            ;;
        *)
            dmsetup remove --retry bench-l
            [[ $1 == dm-linear ]] || dr replicad-stop >/dev/null
            ;;
    esac
}

# Runs fio on system $1 for case $2 on network $3 (pattern $4, block size $5, depth
# $6, more fio arguments after); waits for the drain and records it. CPU time, the
# primary's and the DR machine's, covers the run and the drain.
link_run() {
    local system=$1 name=$2 network=$3 pattern=$4 bs=$5 qd=$6 dev json busy start_ns
    local drained_ns dr_busy
    shift 6
    # Below the link the queue never fills; faster, a small queue fills at once, so
    # the run measures the steady state rather than the queue soaking up a burst.
    local queue_mb=1024
    [[ $name == sustained ]] && queue_mb=64
    dev=$(link_device "$system" "$queue_mb")
    python3 "$HERE/cpu_split.py" snapshot /tmp/cpu-split.json
    dr_busy=$(dr busy-seconds)
    busy=$(busy_seconds)
    start_ns=$(date +%s%N)
    json=$(fio --name=link --filename="$dev" --rw="$pattern" --bs="$bs" --iodepth="$qd" \
        --direct=1 --ioengine=libaio --lat_percentiles=1 --randrepeat=0 --norandommap \
        --size=768M --time_based --output-format=json "$@")
    link_drained "$system"
    drained_ns=$(($(date +%s%N) - start_ns))
    busy=$(python3 -c "print($(busy_seconds) - $busy)")
    dr_busy=$(python3 -c "print($(dr busy-seconds) - $dr_busy)")
    python3 "$HERE/cpu_split.py" diff /tmp/cpu-split.json "$system" "$name" "$rep" \
        "shaping=$network" >>"$OUT"
    link_teardown "$system"
    python3 "$HERE/bench_case.py" "$system" "$name" "$pattern" "$bs" "$qd" "rep=$rep" \
        "shaping=$network" "cpu_s=$busy" "dr_cpu_s=$dr_busy" \
        "drained_s=$(python3 -c "print($drained_ns / 1e9)")" "link_mib_s=$link_mib_s" \
        <<<"$json" >>"$OUT"
}

# The module each system runs on.
load_for() {
    case $1 in
        arepl | arepl-nocrc | arepl-tls) use_module "$MODULE_KO" ;;
        arepl-baseline) use_module "$BENCH_BASELINE_KO" ;;
    esac
}

# A baseline is left out of systems picked by hand: one of another wire version cannot
# talk to this replicad.
LINK_SYSTEMS=${BENCH_LINK_SYSTEMS:-dm-linear arepl arepl-nocrc arepl-tls drbd-a${BENCH_BASELINE_KO:+ arepl-baseline}}
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
    [[ $net == "$shaped" ]] || network "$net"
    for rep in $(seq "$REPS"); do
        for system in $LINK_SYSTEMS; do
            load_for "$system"
            link_run "$system" sustained "$net" write 1m 16 --runtime="${BENCH_SUSTAINED_S:-10}"
        done
        note "sustained, $net, repetition $rep done"
    done
done

# --- replicad alone applying a stream: MiB/s and replicad's CPU per MiB against the
# target's own speed. The stream is queued on a paused device (queue big enough for all
# of it), then sent at once over the unshaped link: only replicad limits the drain.
apply_case() { # name, block size, MiB, target MiB/s, fio arguments...
    local name=$1 bs=$2 mib=$3 target=$4 dev=bench-apply
    shift 4
    dmsetup message "$dev" 0 pause
    fio --name="$name" --filename=/dev/mapper/$dev --bs="$bs" --size="${mib}M" --direct=1 \
        --ioengine=psync --output-format=terse "$@" >/dev/null
    local entries cpu_before start seconds cpu
    entries=$(status_field "$dev" queued)
    cpu_before=$(dr replicad-cpu)
    start=$(date +%s%N)
    dmsetup message "$dev" 0 resume
    wait_drained "$dev" 900
    seconds=$(python3 -c "print(round(($(date +%s%N) - $start) / 1e9, 3))")
    cpu=$(python3 -c "print(round($(dr replicad-cpu) - $cpu_before, 2))")
    printf '{"kind":"apply","case":"%s","bs":"%s","mib":%s,"entries":%d,"seconds":%s,"replicad_cpu_s":%s,"target_mib_s":%s}\n' \
        "$name" "$bs" "$mib" "$entries" "$seconds" "$cpu" "$target" >>"$OUT"
    note "replicad applied $mib MiB ($entries entries) in $seconds s with $cpu s of CPU; target alone $target MiB/s"
}
bench_apply() {
    local target_256k target_4k
    # The target's own speed first, while nothing else uses it.
    target_256k=$(dr target-speed 256k)
    target_4k=$(dr target-speed 4k)
    dr replicad "$REPLICAD_PORT" >/dev/null
    dmsetup create bench-apply --table \
        "0 $sectors arepl $primary $DR_IP:$REPLICAD_PORT 2 volume:bench-apply queue_mb:512"
    wait_connected bench-apply 60
    # Like the initial copy: 256 KiB writes in order.
    apply_case copy-256k 256k 192 "$target_256k" --rw=write
    # Like a database: small random writes, a flush (group commit) after every eighth.
    apply_case commits-4k 4k 16 "$target_4k" --rw=randwrite --fsync=8 --randrepeat=0
    dmsetup remove bench-apply
    dr replicad-stop >/dev/null
}

# --- The activity log's cost per write: arepl without and with a spill device (the log
# lives on it), 4 KiB random writes at QD1, in the order without, with, without, with.
# `hot`: 16 MiB in 4 MiB regions (the default), which stay marked while written, so
# hardly any write waits for a mark; `cold`: the whole volume in 64 KiB regions, so
# nearly every write waits for one 512-byte FUA write of the log first.
al_case() { # system, case, repetition
    local system=$1 name=$2 rep=$3 features size json
    case $name in
        hot) features="region_kb:4096" size=16M ;;
        cold) features="region_kb:64" size=768M ;;
    esac
    dr replicad "$REPLICAD_PORT" >/dev/null
    if [[ $system == arepl-al ]]; then
        spill_blank "$spill"
        features="3 volume:bench $features spill:$spill"
    else
        features="2 volume:bench $features"
    fi
    dmsetup create bench-al --table "0 $sectors arepl $primary $DR_IP:$REPLICAD_PORT $features"
    wait_connected bench-al 60
    json=$(fio --name=al --filename=/dev/mapper/bench-al --rw=randwrite --bs=4k --iodepth=1 \
        --size="$size" --time_based --runtime=5 --ramp_time=1 --direct=1 \
        --ioengine=psync --refill_buffers --randrepeat=0 --norandommap --output-format=json)
    wait_drained bench-al 900
    dmsetup remove bench-al
    dr replicad-stop >/dev/null
    python3 -c '
import json, sys
write = json.load(sys.stdin)["jobs"][0]["write"]
pct = write["clat_ns"].get("percentile", {})
print(json.dumps({"kind": "activity_log", "system": sys.argv[1], "case": sys.argv[2],
                  "repetition": int(sys.argv[3]), "iops": round(write["iops"], 1),
                  "lat_mean_us": round(write["lat_ns"]["mean"] / 1000, 1),
                  "lat_p99_us": round(pct.get("99.000000", 0) / 1000, 1)}, sort_keys=True))' \
        "$system" "$name" "$rep" <<<"$json" >>"$OUT"
}
bench_activity_log() {
    local rep name system
    for rep in 1 2; do
        for name in hot cold; do
            for system in arepl arepl-al; do
                al_case "$system" "$name" "$rep"
            done
        done
    done
}

if [[ " ${BENCH_EXTRAS:-} " == *" apply "* ]] || [[ " ${BENCH_EXTRAS:-} " == *" activity-log "* ]]; then
    [[ $shaped == 0ms ]] || network 0ms
    use_module "$MODULE_KO"
    [[ " $BENCH_EXTRAS " == *" apply "* ]] && { note "replicad applying"; bench_apply; }
    [[ " $BENCH_EXTRAS " == *" activity-log "* ]] && { note "activity log cost"; bench_activity_log; }
fi
dr quit >/dev/null
dmesg_assert_clean 'drbd_w_.*'
