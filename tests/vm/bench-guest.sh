#!/usr/bin/env bash
# Guest half of `make bench` (see scripts/bench.sh): the same fio cases on the same two
# disks through dm-linear (the limit), arepl, DRBD protocol A and dm-mirror over nbd,
# each on every network setting; one JSON line per measurement to the file $1.
#
# Knobs (environment): BENCH_RUNTIME seconds per fio run (5), BENCH_RAMP seconds of
# warm-up before it (1), BENCH_NETWORKS, BENCH_SYSTEMS, BENCH_PATTERNS, BENCH_BS,
# BENCH_QD (space-separated lists; defaults below). The system replicad-apply measures
# replicad alone (once, on the 0 ms link); arepl-al the activity log's cost per write
# (once, on the 0 ms link).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

OUT=${1:?usage: bench-guest.sh RESULTS.jsonl}
RUNTIME=${BENCH_RUNTIME:-5}
RAMP=${BENCH_RAMP:-1}
NETWORKS=${BENCH_NETWORKS:-0ms 10ms 50ms 100mbit}
SYSTEMS=${BENCH_SYSTEMS:-dm-linear arepl drbd-a dm-mirror-nbd replicad-apply arepl-al}
PATTERNS=${BENCH_PATTERNS:-write randwrite}
BLOCK_SIZES=${BENCH_BS:-4k 64k 256k 1m}
DEPTHS=${BENCH_QD:-1 16}
HERE=$(cd "$(dirname "$0")" && pwd)
DRBDSETUP=/usr/lib/drbd/drbdsetup-84
# DRBD's kernel sockets always live in the initial network namespace, so its two nodes
# (both in this guest) talk over loopback; these are its two ends.
DRBD_PRIMARY_IP=127.0.0.1
DRBD_SECONDARY_IP=127.0.0.2

primary=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
spill=$(disk_by_serial arepl2)
sectors=$(sectors_of "$primary")
: >"$OUT"
emit() { echo "$1" >>"$OUT"; }
json_string() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

emit "$(printf '{"kind":"meta","kernel":"%s","qemu":%s,"cpus":%d,"host_cpus":%d,"runtime_s":%d,"ramp_s":%d,"disk_mb":%d,"command":"make bench","started":"%s","notes":[%s]}' \
    "$(uname -r)" "$(json_string "${BENCH_QEMU:-unknown}")" "$(nproc)" "${BENCH_HOST_CPUS:-0}" \
    "$RUNTIME" "$RAMP" $((sectors / 2048)) "$(date -u +%FT%TZ)" \
    "$(json_string "Guest: QEMU TCG (software emulation), $(nproc) vCPUs; disks are sparse raw files on the host (cache=unsafe)."),$(json_string "arepl and nbd run between the prod and dr network namespaces over a veth pair; DRBD 8.4's kernel sockets always use the initial namespace, so its two nodes (both in this guest) talk over loopback, shaped the same way."),$(json_string "Shaping: netem delay of half the RTT on each direction; 100mbit is tbf at 100 Mbit/s on each direction, no added delay."),$(json_string "arepl: default queue (queue_mb 64), primary link only; DRBD: protocol A, drbd-utils $(dpkg-query -W -f='${Version}' drbd-utils 2>/dev/null)'s drbdsetup-84, default buffers; dm-mirror: core log, nosync, second leg /dev/nbd0 from nbd-server $(dpkg-query -W -f='${Version}' nbd-server 2>/dev/null).")")"

load_module
net_setup
ip link set lo up
ip addr add "$DRBD_SECONDARY_IP/8" dev lo 2>/dev/null || true

# --- Network shaping, applied to both directions of the primary link and to loopback.
shape_device() { # namespace ("" = initial), device, network
    local run=()
    [[ -n $1 ]] && run=(ip netns exec "$1")
    "${run[@]}" tc qdisc del dev "$2" root 2>/dev/null || true
    case $3 in
        0ms) ;;
        *ms) "${run[@]}" tc qdisc add dev "$2" root netem delay "$((${3%ms} / 2))ms" limit 100000 ;;
        100mbit) "${run[@]}" tc qdisc add dev "$2" root tbf rate 100mbit burst 256kb latency 200ms ;;
        *) fail "unknown network $3" ;;
    esac
}
shape() {
    shape_device prod prod0 "$1"
    shape_device dr dr0 "$1"
    shape_device "" lo "$1"
}
rtt_ms() { case $1 in *ms) echo "${1%ms}" ;; *) echo 0 ;; esac; }

measure_link() { # network
    local result
    result=$(mktemp)
    ip netns exec dr python3 "$HERE/bench_link.py" recv 5001 >"$result" &
    local receiver=$!
    retry_briefly grep -q listening "$result" || fail "link probe receiver did not start"
    ip netns exec prod python3 "$HERE/bench_link.py" send 10.90.0.2 5001 4 >/dev/null
    wait "$receiver"
    local rate
    rate=$(tail -n1 "$result")
    rm -f "$result"
    local limit=null
    [[ $1 == 100mbit ]] && limit=100
    emit "$(printf '{"kind":"link","network":"%s","rtt_ms":%d,"rate_mbit":%s,"measured_mib_s":%s}' \
        "$1" "$(rtt_ms "$1")" "$limit" "$rate")"
    note "link $1: $rate MiB/s"
}

# Runs fio on device $1 and prints its JSON; $2 pattern, $3 block size, $4 depth.
run_fio() {
    fio --name=bench --filename="$1" --rw="$2" --bs="$3" --iodepth="$4" --size=768M \
        --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --direct=1 --ioengine=libaio \
        --refill_buffers --randrepeat=0 --norandommap --output-format=json
}

for_each_case() { # callback: called with pattern, block size, depth
    local pattern bs qd
    for pattern in $PATTERNS; do
        for bs in $BLOCK_SIZES; do
            for qd in $DEPTHS; do
                "$@" "$pattern" "$bs" "$qd"
            done
        done
    done
}

unavailable() { # system, network, error text
    emit "$(printf '{"kind":"unavailable","system":"%s","network":"%s","error":%s}' \
        "$1" "$2" "$(json_string "$3")")"
    note "$1 on $2 unavailable: $3"
}

# --- dm-linear: the limit, no network.
linear_case() {
    local json
    json=$(run_fio /dev/mapper/bench-linear "$@")
    emit "$(python3 "$HERE/bench_case.py" dm-linear local "$@" <<<"$json")"
}
bench_linear() {
    dmsetup create bench-linear --table "0 $sectors linear $primary 0"
    for_each_case linear_case
    dmsetup remove bench-linear
}

# --- arepl: replicad on the DR side; after each run the queue drains before the next.
# Lag is sampled once a second during the run.
arepl_case() {
    local dev=bench-arepl samples fio_json sampler
    samples=$(mktemp)
    (while sleep 1; do status_field "$dev" lag_ms >>"$samples"; done) &
    sampler=$!
    fio_json=$(run_fio /dev/mapper/$dev "$@")
    kill "$sampler"
    wait "$sampler" 2>/dev/null || true
    local left start drain_s
    left=$(status_field "$dev" queued_bytes)
    start=$(date +%s.%N)
    wait_drained "$dev" 900
    drain_s=$(python3 -c "import sys; print(round($(date +%s.%N) - float(sys.argv[1]), 3) if int(sys.argv[2]) else 0)" "$start" "$left")
    local lag_p50 lag_max
    read -r lag_p50 lag_max < <(python3 -c '
import statistics, sys
v = sorted(int(x) for x in open(sys.argv[1]).read().split()) or [0]
print(statistics.median(v), max(v))' "$samples")
    rm -f "$samples"
    emit "$(python3 "$HERE/bench_case.py" arepl "$NETWORK" "$@" \
        "drained_mib=$(python3 -c "print($left / 2**20)")" "drain_s=$drain_s" \
        "lag_ms_p50=$lag_p50" "lag_ms_max=$lag_max" <<<"$fio_json")"
}
bench_arepl() {
    local state=/tmp/bench-state
    rm -rf "$state"
    replicad_start "$replica" "$state"
    arepl_create bench-arepl "$primary" "$PRIMARY_ADDR 1 volume:bench"
    wait_connected bench-arepl
    for_each_case arepl_case
    dmsetup remove bench-arepl
    replicad_stop "$state"
}

# --- DRBD protocol A: resource r0 (primary, minor 0) on the primary disk, r1
# (secondary, minor 1) on the replica disk, fresh metadata each network, no initial
# resync (both sides start from the same, unwritten history).
drbd_setup() {
    local out
    out=$(
        {
            drbdmeta --force 0 v08 "$primary" internal create-md < <(yes) &&
                drbdmeta --force 1 v08 "$replica" internal create-md < <(yes) &&
                "$DRBDSETUP" new-resource r0 && "$DRBDSETUP" new-minor r0 0 0 &&
                "$DRBDSETUP" new-resource r1 && "$DRBDSETUP" new-minor r1 1 0 &&
                "$DRBDSETUP" attach 0 "$primary" "$primary" internal &&
                "$DRBDSETUP" attach 1 "$replica" "$replica" internal &&
                "$DRBDSETUP" connect r0 "ipv4:$DRBD_PRIMARY_IP:7789" "ipv4:$DRBD_SECONDARY_IP:7789" --protocol=A &&
                "$DRBDSETUP" connect r1 "ipv4:$DRBD_SECONDARY_IP:7789" "ipv4:$DRBD_PRIMARY_IP:7789" --protocol=A &&
                retry_briefly grep -q '^ 0: cs:Connected' /proc/drbd &&
                "$DRBDSETUP" new-current-uuid --clear-bitmap 0 &&
                "$DRBDSETUP" primary 0 &&
                grep -q '^ 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate A' /proc/drbd
        } 2>&1
    ) || {
        echo "${out:-DRBD setup failed}"
        cat /proc/drbd 2>/dev/null
        return 1
    }
}
drbd_teardown() {
    "$DRBDSETUP" down r0 2>/dev/null || true
    "$DRBDSETUP" down r1 2>/dev/null || true
}
# Protocol A completes writes once they are in the local TCP send buffer; the data still
# on its way counts as drained when the primary has nothing pending or unacknowledged.
drbd_wait_sent() {
    local i
    for i in $(seq 1800); do
        grep -A1 '^ 0:' /proc/drbd | grep -q ' pe:0 ua:0 ap:0 ' && return 0
        sleep 0.5
    done
    fail "DRBD did not finish sending: $(cat /proc/drbd)"
}
drbd_case() {
    local json
    json=$(run_fio /dev/drbd0 "$@")
    drbd_wait_sent
    emit "$(python3 "$HERE/bench_case.py" drbd-a "$NETWORK" "$@" <<<"$json")"
}
bench_drbd() {
    local error
    if [[ ! -x $DRBDSETUP ]] || ! grep -q '^version: 8\.4' /proc/drbd 2>/dev/null; then
        unavailable drbd-a "$NETWORK" "no DRBD 8.4 kernel module or no $DRBDSETUP: $(head -n1 /proc/drbd 2>&1)"
        return 0
    fi
    if ! error=$(drbd_setup); then
        drbd_teardown
        unavailable drbd-a "$NETWORK" "$error"
        return 0
    fi
    for_each_case drbd_case
    drbd_teardown
}

# --- Synchronous replication as in the seed design: dm-mirror, second leg an nbd device
# served from the DR namespace.
mirror_case() {
    local json
    json=$(run_fio /dev/mapper/bench-mirror "$@")
    emit "$(python3 "$HERE/bench_case.py" dm-mirror-nbd "$NETWORK" "$@" <<<"$json")"
}
bench_mirror() {
    local conf=/tmp/bench-nbd.conf error
    printf '[generic]\n    allowlist = false\n[replica]\n    exportname = %s\n    flush = true\n    fua = true\n' \
        "$replica" >"$conf"
    if ! error=$(ip netns exec dr nbd-server -C "$conf" -p /tmp/bench-nbd.pid 2>&1) ||
        ! error=$(retry_briefly ip netns exec prod nbd-client 10.90.0.2 10809 /dev/nbd0 -N replica 2>&1) ||
        ! error=$(dmsetup create bench-mirror --table \
            "0 $sectors mirror core 2 1024 nosync 2 $primary 0 /dev/nbd0 0" 2>&1); then
        unavailable dm-mirror-nbd "$NETWORK" "$error"
    else
        for_each_case mirror_case
        dmsetup remove bench-mirror
    fi
    ip netns exec prod nbd-client -d /dev/nbd0 >/dev/null 2>&1 || true
    [[ -f /tmp/bench-nbd.pid ]] && kill "$(cat /tmp/bench-nbd.pid)" 2>/dev/null
    rm -f /tmp/bench-nbd.pid
}

# --- replicad applying a stream: MiB/s and replicad's CPU per MiB against the target's
# own speed. The stream is queued on a paused device (queue big enough for all of it),
# then sent at once over the unshaped link: only replicad limits the drain.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
target_speed() { # block size: the target's own MiB/s, direct, queue depth 1
    fio --name=target --filename="$replica" --rw=write --bs="$1" --size=128M --direct=1 \
        --ioengine=psync --time_based --runtime="$RUNTIME" --output-format=json | python3 -c '
import json, sys
print(round(json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"] / 2**20, 2))'
}
apply_case() { # name, block size, MiB, replicad pid, target MiB/s, fio arguments...
    local name=$1 bs=$2 mib=$3 pid=$4 target=$5 dev=bench-apply
    shift 5
    dmsetup message "$dev" 0 pause
    fio --name="$name" --filename=/dev/mapper/$dev --bs="$bs" --size="${mib}M" --direct=1 \
        --ioengine=psync --output-format=terse "$@" >/dev/null
    local entries ticks start seconds cpu
    entries=$(status_field "$dev" queued)
    ticks=$(cpu_ticks "$pid")
    start=$(date +%s.%N)
    dmsetup message "$dev" 0 resume
    wait_drained "$dev" 900
    seconds=$(python3 -c "import sys; print(round($(date +%s.%N) - float(sys.argv[1]), 3))" "$start")
    cpu=$(python3 -c "import os, sys; print(round(int(sys.argv[1]) / os.sysconf('SC_CLK_TCK'), 2))" \
        $(($(cpu_ticks "$pid") - ticks)))
    emit "$(printf '{"kind":"apply","case":"%s","bs":"%s","mib":%s,"entries":%d,"seconds":%s,"replicad_cpu_s":%s,"target_mib_s":%s,"started":"%s"}' \
        "$name" "$bs" "$mib" "$entries" "$seconds" "$cpu" "$target" "$STARTED")"
    note "replicad applied $mib MiB ($entries entries) in $seconds s with $cpu s of CPU; target alone $target MiB/s"
}
bench_apply() {
    local state=/tmp/bench-apply-state pid target_256k target_4k
    rm -rf "$state"
    # The target's own speed first, while nothing else uses it.
    target_256k=$(target_speed 256k)
    target_4k=$(target_speed 4k)
    replicad_start "$replica" "$state"
    pid=$(cat "$state/replicad.pid")
    arepl_create bench-apply "$primary" "$PRIMARY_ADDR 2 volume:bench-apply queue_mb:512"
    wait_connected bench-apply
    # Like the initial copy: 256 KiB writes in order.
    apply_case copy-256k 256k 192 "$pid" "$target_256k" --rw=write
    # Like a database: small random writes, a flush (group commit) after every eighth.
    apply_case commits-4k 4k 16 "$pid" "$target_4k" --rw=randwrite --fsync=8 --randrepeat=0
    dmsetup remove bench-apply
    replicad_stop "$state"
}

# --- The activity log's cost per write: arepl without and with a spill device (the log
# lives on it), 4 KiB random writes at QD1, in the order without, with, without, with.
# `hot`: 16 MiB in 4 MiB regions (the default), which stay marked while written, so
# hardly any write waits for a mark; `cold`: the whole volume in 64 KiB regions, so
# nearly every write waits for one 512-byte FUA write of the log first.
al_case() { # system, case, repetition
    local system=$1 name=$2 rep=$3 state=/tmp/bench-al-state features size json
    case $name in
        hot) features="region_kb:4096" size=16M ;;
        cold) features="region_kb:64" size=768M ;;
    esac
    rm -rf "$state"
    replicad_start "$replica" "$state"
    if [[ $system == arepl-al ]]; then
        spill_blank "$spill"
        arepl_create bench-al "$primary" "$PRIMARY_ADDR 3 volume:bench $features spill:$spill"
    else
        arepl_create bench-al "$primary" "$PRIMARY_ADDR 2 volume:bench $features"
    fi
    wait_connected bench-al
    json=$(fio --name=al --filename=/dev/mapper/bench-al --rw=randwrite --bs=4k --iodepth=1 \
        --size="$size" --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --direct=1 \
        --ioengine=psync --refill_buffers --randrepeat=0 --norandommap --output-format=json)
    wait_drained bench-al 900
    dmsetup remove bench-al
    replicad_stop "$state"
    emit "$(python3 -c '
import json, sys
write = json.load(sys.stdin)["jobs"][0]["write"]
pct = write["clat_ns"].get("percentile", {})
print(json.dumps({"kind": "activity_log", "system": sys.argv[1], "case": sys.argv[2],
                  "repetition": int(sys.argv[3]), "started": sys.argv[4],
                  "iops": round(write["iops"], 1),
                  "lat_mean_us": round(write["lat_ns"]["mean"] / 1000, 1),
                  "lat_p99_us": round(pct.get("99.000000", 0) / 1000, 1)}, sort_keys=True))' \
        "$system" "$name" "$rep" "$STARTED" <<<"$json")"
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

has_system() { [[ " $SYSTEMS " == *" $1 "* ]]; }

STARTED=$(date -u +%FT%TZ)
has_system dm-linear && { note "dm-linear"; bench_linear; }
has_system replicad-apply && { shape 0ms; note "replicad applying"; bench_apply; }
has_system arepl-al && { shape 0ms; note "activity log cost"; bench_activity_log; }
for NETWORK in $NETWORKS; do
    shape "$NETWORK"
    measure_link "$NETWORK"
    has_system arepl && { note "arepl, $NETWORK"; bench_arepl; }
    has_system drbd-a && { note "DRBD protocol A, $NETWORK"; bench_drbd; }
    has_system dm-mirror-nbd && { note "dm-mirror over nbd, $NETWORK"; bench_mirror; }
done
shape 0ms
note "results: $(grep -c '"kind": *"case"' "$OUT") cases in $OUT"
