#!/usr/bin/env bash
# Guest half of `make bench` (see scripts/bench.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

RUNTIME=${BENCH_RUNTIME:-10}
primary=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
sectors=$(sectors_of "$primary")
load_module
net_setup
replicad_start "$replica" /tmp/bench-state

# Throughput in MiB/s of one fio run against device $1, pattern $2, block size $3:
# for $RUNTIME seconds, or for $4 bytes if given.
fio_mibps() {
    local amount=(--time_based --runtime="$RUNTIME")
    [[ -n ${4:-} ]] && amount=(--io_size="$4")
    fio --name=bench --filename="$1" --rw="$2" --bs="$3" --size=768M "${amount[@]}" \
        --direct=1 --ioengine=libaio --iodepth=16 --refill_buffers \
        --output-format=json |
        python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["jobs"][0]["write"]["bw"] / 1024))'
}

printf '%-10s %-6s %12s %12s %7s %10s\n' pattern bs "linear MiB/s" "arepl MiB/s" ratio "drain s"
for pattern in write randwrite; do
    for bs in 64k 256k 1m; do
        dmsetup create bench-linear --table "0 $sectors linear $primary 0"
        linear=$(fio_mibps /dev/mapper/bench-linear "$pattern" "$bs")
        dmsetup remove bench-linear

        arepl_create bench-arepl "$primary" "$PRIMARY_ADDR 2 queue_mb:256 volume:bench"
        wait_connected bench-arepl
        arepl=$(fio_mibps /dev/mapper/bench-arepl "$pattern" "$bs")
        start=$SECONDS
        wait_drained bench-arepl 600
        drain=$((SECONDS - start))
        dmsetup remove bench-arepl

        ratio=$(python3 -c "print('%.2f' % ($arepl / $linear))")
        printf '%-10s %-6s %12s %12s %7s %10s\n' "$pattern" "$bs" "$linear" "$arepl" "$ratio" "$drain"
    done
done

# Spilling: both links cut, a 4 MiB queue, so nearly every write also goes to the spill
# log; the ratio is what riding out an outage costs the writers.
spill=$(disk_by_serial arepl2)
printf '\nspilling: both links cut, queue_mb:4, 192 MiB per run\n'
printf '%-10s %-6s %12s %12s %7s %14s\n' pattern bs "linear MiB/s" "arepl MiB/s" ratio "spilled MiB"
for bs in 64k 256k 1m; do
    dmsetup create bench-linear --table "0 $sectors linear $primary 0"
    linear=$(fio_mibps /dev/mapper/bench-linear randwrite "$bs" 192M)
    dmsetup remove bench-linear

    spill_blank "$spill"
    arepl_create bench-arepl "$primary" \
        "$PRIMARY_ADDR 3 queue_mb:4 volume:bench spill:$spill"
    wait_connected bench-arepl
    links_cut_both
    wait_status bench-arepl active_link none 20 >/dev/null
    arepl=$(fio_mibps /dev/mapper/bench-arepl randwrite "$bs" 192M)
    spilled=$(($(status_field bench-arepl spill_bytes) >> 20))
    links_restore_both
    wait_drained bench-arepl 900
    dmsetup remove bench-arepl

    ratio=$(python3 -c "print('%.2f' % ($arepl / $linear))")
    printf '%-10s %-6s %12s %12s %7s %14s\n' randwrite "$bs" "$linear" "$arepl" "$ratio" "$spilled"
done
replicad_stop /tmp/bench-state
