#!/usr/bin/env bash
# Guest half of `make bench-quick` (scripts/bench-quick.sh): the write-path regime in a
# few minutes. dm-linear and arepl (and, with BENCH_BASELINE_KO, the module built from
# another commit: system "arepl-baseline") take turns on the same disk, case by case
# and repetition by repetition (A/B/A/B), so drift in the host hits all alike. Each
# arepl run is a burst smaller than its queue (queue_mb 1024) into a fresh device whose
# link is paused: nothing is sent, so the figures are what a write costs on the
# primary and nothing else. One JSON line per run to the file $1.
#
# Knobs (environment): BENCH_REPS repetitions (3), BENCH_RUNTIME seconds per run at
# most (4), BENCH_BURST_MB bytes per run at most (384), BENCH_CASES.
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
    dmsetup remove bench-q
    python3 "$HERE/bench_case.py" "$1" paused "$2" "$3" "$4" "rep=$5" <<<"$json" >>"$OUT"
}

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
dmesg_assert_clean
