#!/usr/bin/env bash
# Guest half of `make bench-quick` (scripts/bench-quick.sh): the write-path regime in a
# few minutes. dm-linear and arepl (and, with BENCH_BASELINE_KO, the module built from
# another commit: system "arepl-baseline") take turns on the same disk, case by case
# and repetition by repetition (A/B/A/B), so drift in the host hits all alike. Each
# arepl run is a burst smaller than its queue (queue_mb 1024) into a fresh device whose
# link is paused: nothing is sent, so the figures are what a write costs on the
# primary and nothing else. One JSON line per run to the file $1.
#
# With BENCH_DR_ADDR (HOST:PORT of the first of BENCH_DR_RUNS replicads outside this
# VM on consecutive ports, reached through the guest's network card; one per arepl
# run, as each run's device starts a history of its own; see scripts/bench-quick.sh)
# it then measures with the link up:
# - "rate": random 64 KiB writes at QD4 at half the measured link rate (below the link,
#   so the queue never fills), dm-linear and arepl alternately: latency is the write
#   path's cost while the sender streams;
# - "sustained": 1 MiB writes at QD16 for BENCH_SUSTAINED_S seconds into arepl with a
#   64 MiB queue (full at once), then the drain: throughput against min(dm-linear,
#   link), drain rate against the link, and the guest's CPU seconds per GiB (from
#   /proc/stat) next to dm-linear's.
#
# Both link regimes also run "arepl-nocrc", arepl with wire_crc:off (no payload CRC on
# the wire), so its CPU saving is measured on the same path, and arepl-baseline when
# given.
#
# Knobs (environment): BENCH_REPS repetitions (3), BENCH_RUNTIME seconds per run at
# most (4), BENCH_BURST_MB bytes per run at most (384), BENCH_CASES ("none" skips the
# paused regime), BENCH_SUSTAINED_S (10).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

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

# --- With the link up, to a DR side outside this VM.
[[ -n ${BENCH_DR_ADDR:-} ]] || { dmesg_assert_clean; exit 0; }
DR_HOST=${BENCH_DR_ADDR%:*}
use_module "$MODULE_KO"

# The guest's one network card, into the prod namespace.
nic=$(ls /sys/class/net | grep -vx lo | head -n1)
[[ -n $nic ]] || fail "no network card for the DR link"
ip link set "$nic" netns prod
ip -n prod addr add "${DR_HOST%.*}.2/24" dev "$nic"
ip -n prod link set "$nic" up
link_mib_s=$(ip netns exec prod python3 "$HERE/bench_link.py" send "$DR_HOST" 5001 4)
note "link to $DR_HOST: $link_mib_s MiB/s"
echo "{\"kind\": \"link\", \"mib_s\": $link_mib_s}" >>"$OUT"

# Busy CPU ticks of the whole guest (user, nice, system, irq, softirq) so far.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
ticks_per_s=$(getconf CLK_TCK)

# dm-linear or an arepl device (queue of $2 MiB), streaming to the next replicad.
dr_run=0
link_device() {
    case $1 in
        dm-linear) dmsetup create bench-l --table "0 $sectors linear $primary 0" ;;
        arepl | arepl-nocrc | arepl-baseline)
            local features="2 volume:benchl queue_mb:$2"
            [[ $1 == arepl-nocrc ]] && features="3 volume:benchl queue_mb:$2 wire_crc:off"
            ((dr_run < BENCH_DR_RUNS)) || fail "more arepl runs than replicads ($BENCH_DR_RUNS)"
            arepl_create bench-l "$primary" "$DR_HOST:$((${BENCH_DR_ADDR##*:} + dr_run)) $features"
            dr_run=$((dr_run + 1))
            wait_connected bench-l 60
            ;;
    esac
}

# Runs fio on system $1 for case $2 (pattern $3, block size $4, depth $5, more fio
# arguments after). For arepl, waits for the drain and records it; CPU ticks cover
# the run and the drain.
link_run() {
    local system=$1 name=$2 pattern=$3 bs=$4 qd=$5 dev json start_ticks start_ns drained_ns=0
    shift 5
    # Below the link the queue never fills; faster, a small queue fills at once, so
    # the run measures the steady state rather than the queue soaking up a burst.
    local queue_mb=1024
    [[ $name == sustained ]] && queue_mb=64
    link_device "$system" "$queue_mb" # not in a subshell: it counts the replicads used
    dev=/dev/mapper/bench-l
    python3 "$HERE/cpu_split.py" snapshot /tmp/cpu-split.json
    start_ticks=$(busy_ticks)
    start_ns=$(date +%s%N)
    json=$(fio --name=link --filename="$dev" --rw="$pattern" --bs="$bs" --iodepth="$qd" \
        --direct=1 --ioengine=libaio --lat_percentiles=1 --randrepeat=0 --norandommap \
        --size=768M --time_based --output-format=json "$@")
    if [[ $system != dm-linear ]]; then
        wait_drained bench-l 900
        drained_ns=$(($(date +%s%N) - start_ns))
    fi
    local ticks=$(($(busy_ticks) - start_ticks))
    python3 "$HERE/cpu_split.py" diff /tmp/cpu-split.json "$system" "$name" "$rep" >>"$OUT"
    dmsetup remove --retry bench-l
    python3 "$HERE/bench_case.py" "$system" "$name" "$pattern" "$bs" "$qd" "rep=$rep" \
        "cpu_s=$(python3 -c "print($ticks / $ticks_per_s)")" \
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

LINK_SYSTEMS="dm-linear arepl arepl-nocrc"
[[ -n ${BENCH_BASELINE_KO:-} ]] && LINK_SYSTEMS+=" arepl-baseline"
rate=$(python3 -c "print(max(1, int($link_mib_s / 2)))")
for rep in $(seq "$REPS"); do
    for system in $LINK_SYSTEMS; do
        load_for "$system"
        link_run "$system" rate randwrite 64k 4 --rate="${rate}m" --runtime=8
    done
    note "rate ${rate} MiB/s, repetition $rep done"
done
for rep in $(seq "$REPS"); do
    for system in $LINK_SYSTEMS; do
        load_for "$system"
        link_run "$system" sustained write 1m 16 --runtime="${BENCH_SUSTAINED_S:-10}"
    done
    note "sustained, repetition $rep done"
done
dmesg_assert_clean
