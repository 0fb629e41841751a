# A receiver slower than the link keeps its session: replicad's target makes every flush
# wait 7 s, so under flush-heavy writes nothing is acknowledged for longer than the
# sender's 5 s liveness limit while replicad's socket buffer fills and the sender's
# sends block. The module must take it for slow, not gone: no link error, status says
# receiver_slow=1 while it lasts, the kernel log says so once and says when acks come
# again. Then with ko_count:1 and flushes of 12 s, the session is dropped for slowness:
# logged, counted in slow_drops, not in link_errors. Both end with the replica equal
# to the device.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-slow
disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
remove_if_present arepl-slow slow-dr
rm -rf "$state"
initial_sync "$disk" "$replica"
sectors=$(sectors_of "$replica")
# The replica's device: writes at full speed, each flush held for $1 ms.
slow_flushes() {
    local table="0 $sectors delay $replica 0 0 $replica 0 0 $replica 0 $1"
    if dmsetup info slow-dr >/dev/null 2>&1; then
        dmsetup suspend slow-dr
        dmsetup load slow-dr --table "$table"
        dmsetup resume slow-dr
    else
        dmsetup create slow-dr --table "$table"
    fi
}
cleanup_on_exit "$state" arepl-slow slow-dr

# Flush-heavy writes that rewrite a small hot set (a database committing), plus a
# stream of 1 MiB writes that fills replicad's socket buffer while it waits. Their pids
# go to LOAD (replicad is a background job of this shell too).
load() {
    LOAD=()
    fio --name=commits --filename=/dev/mapper/arepl-slow --rw=randwrite --bs=4k --size=8M \
        --direct=1 --ioengine=psync --fsync=1 --time_based --runtime="$1" --randrepeat=0 \
        --output-format=terse >/dev/null &
    LOAD+=($!)
    fio --name=bulk --filename=/dev/mapper/arepl-slow --rw=write --bs=1M --offset=64M \
        --size=128M --direct=1 --ioengine=psync --time_based --runtime="$1" \
        --output-format=terse >/dev/null &
    LOAD+=($!)
}

# Samples the status each second for $1 seconds; prints the highest receiver_slow seen.
watch_slow() {
    local seen=0 i
    for i in $(seq "$1"); do
        (($(status_field arepl-slow receiver_slow) == 1)) && seen=1
        sleep 1
    done
    echo "$seen"
}

note "phase 1: flushes take 7 s at the replica, default ko_count (7 x 5 s)"
slow_flushes 7000
replicad_start /dev/mapper/slow-dr "$state"
mark=$(dmesg_mark)
arepl_create arepl-slow "$disk" "$PRIMARY_ADDR 1 volume:slow"
wait_connected arepl-slow
load 30
seen=$(watch_slow 35)
dmsetup status arepl-slow
((seen == 1)) || fail "status never said receiver_slow=1 while flushes took 7 s"
(($(status_field arepl-slow link_errors) == 0)) || fail "a slow receiver was taken for a dead link"
(($(status_field arepl-slow slow_drops) == 0)) || fail "the session was dropped although acks kept coming"
dmesg_since "$mark" | grep -q "replicad at $PRIMARY_ADDR is slow" || fail "no 'is slow' in the kernel log"
# At one commit per 7 s the writers would wait for minutes on the full queue.
slow_flushes 0
wait "${LOAD[@]}" || fail "the writers saw an error"
wait_drained arepl-slow 240
(($(status_field arepl-slow link_errors) == 0)) || fail "a link error while draining"

dmesg_since "$mark" | grep -q "acknowledges again" || fail "no 'acknowledges again' in the kernel log"
(($(status_field arepl-slow receiver_slow) == 0)) || fail "receiver_slow still 1 after the drain"
assert_same_image /dev/mapper/arepl-slow /dev/mapper/slow-dr 256
note "phase 1: slow receiver kept its session (0 link errors, 0 slow drops)"

note "phase 2: flushes take 12 s, ko_count:1: the session is dropped for slowness"
dmsetup remove arepl-slow
slow_flushes 12000
mark=$(dmesg_mark)
arepl_create arepl-slow "$disk" "$PRIMARY_ADDR 2 volume:slow ko_count:1"
dmsetup table arepl-slow | grep -q " ko_count:1$" || fail "ko_count:1 not in the table"
wait_connected arepl-slow
load 30
start=$SECONDS
until (($(status_field arepl-slow slow_drops) > 0)); do
    ((SECONDS - start > 60)) && { dmsetup status arepl-slow >&2; fail "no session dropped for slowness in 60 s"; }
    sleep 1
done
slow_flushes 0
wait "${LOAD[@]}" || fail "the writers saw an error"
dmesg_since "$mark" | grep -E "dropping the session .* acknowledged nothing for [0-9]+ s \(ko_count 1\)" ||
    fail "the drop for slowness is not in the kernel log"
(($(status_field arepl-slow link_errors) == 0)) || fail "a drop for slowness counted as a link error"
wait_drained arepl-slow 240
dmsetup status arepl-slow
assert_same_image /dev/mapper/arepl-slow /dev/mapper/slow-dr 256
note "phase 2: $(status_field arepl-slow slow_drops) session(s) dropped for slowness, replica equal"
true
