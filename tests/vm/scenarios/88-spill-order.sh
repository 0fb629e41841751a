# Write order through a spill-and-drain cycle: a stamped workload (each block names
# the write that made it) runs while both links are down, then more of it while the
# spill log drains over a slow link. Snapshots of the replica, taken with replicad
# stopped, must each equal the primary's state after some prefix of the writes.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup
state=/tmp/state-order
remove_if_present arepl-order order-p order-r order-snap
primary_disk=$(disk_by_serial arepl0)
replica_disk=$(disk_by_serial arepl1)
spill=$(disk_by_serial arepl2)
blocks=8192 # 32 MiB of 4 KiB blocks
dmsetup create order-p --table "0 65536 linear $primary_disk 0"
dmsetup create order-r --table "0 65536 linear $replica_disk 0"
# Snapshots go to the replica disk, past the replica's slice.
dmsetup create order-snap --table "0 524288 linear $replica_disk 131072"
for dev in /dev/mapper/order-p /dev/mapper/order-r; do
    dd if=/dev/zero of="$dev" bs=4M count=8 oflag=direct status=none
done
spill_blank "$spill"
replicad_start /dev/mapper/order-r "$state"
arepl_create arepl-order /dev/mapper/order-p \
    "$PRIMARY_ADDR $BACKUP_ADDR 3 queue_mb:2 volume:ordertest spill:$spill"
wait_status arepl-order active_link primary
log=/tmp/order-stamp.log
rm -f "$log"
dev=/dev/mapper/arepl-order
snapshots=0
snapshot() { # replicad is stopped while its image is copied
    local pid
    pid=$(cat "$state/replicad.pid")
    kill -STOP "$pid"
    dd if=/dev/mapper/order-r of=/dev/mapper/order-snap bs=4M count=8 \
        seek=$((snapshots * 8)) oflag=direct status=none
    kill -CONT "$pid"
    snapshots=$((snapshots + 1))
}

# Acknowledged straight from memory, these move the stream past the empty spill log's
# first sequence: the first spill must start where the queue is, not at 1.
note "phase 0: links up, 500 stamped writes, all acknowledged"
"$AREPL_STAMP" write --dev "$dev" --blocks "$blocks" --count 500 --seed 10 --jobs 4 --log "$log" \
    || fail "stamped workload failed"
wait_drained arepl-order 120

note "phase 1: both links down, 3000 stamped writes through a 2 MiB queue"
links_cut_both
wait_status arepl-order active_link none 20
"$AREPL_STAMP" write --dev "$dev" --blocks "$blocks" --count 3000 --seed 11 --jobs 4 --log "$log" \
    || fail "stamped workload failed"
(($(status_field arepl-order spill_entries) > 0)) || fail "nothing spilled"
[[ $(status_field arepl-order mode) == spilling ]] ||
    fail "mode $(status_field arepl-order mode) after spilling, expected spilling"
snapshot

note "phase 2: links back at 20 Mbit/s; 3000 more writes while the log drains"
ip netns exec prod tc qdisc replace dev prod0 root netem rate 20mbit
links_restore_both
"$AREPL_STAMP" write --dev "$dev" --blocks "$blocks" --count 3000 --seed 12 --jobs 4 --log "$log" &
stamp_pid=$!
saw_draining=0
for _ in $(seq 6); do
    sleep 1.5
    [[ $(status_field arepl-order mode) == draining ]] && saw_draining=1
    snapshot
done
wait "$stamp_pid" || fail "stamped workload failed during the drain"
((saw_draining)) || fail "never saw mode=draining while snapshotting"
ip netns exec prod tc qdisc del dev prod0 root
wait_drained arepl-order 300
snapshot

note "checking $snapshots snapshots against the write log"
intermediate=0
last=-1
for ((i = 0; i < snapshots; i++)); do
    dd if=/dev/mapper/order-snap of=/tmp/order-snap.img bs=4M count=8 skip=$((i * 8)) \
        iflag=direct status=none
    verdict=$("$AREPL_STAMP" check --image /tmp/order-snap.img --log "$log" --blocks "$blocks") \
        || fail "snapshot $i is not a prefix state: $verdict"
    prefix=$(sed -n 's/^ok: image is the state after write \([0-9]*\) of.*/\1/p' <<<"$verdict")
    note "snapshot $i: $verdict"
    ((prefix >= last)) || fail "snapshot $i went back in time: write $prefix after $last"
    ((prefix > 0 && prefix < 6500)) && intermediate=$((intermediate + 1))
    last=$prefix
done
rm -f /tmp/order-snap.img
((last == 6500)) || fail "the final replica is not the state after all 6500 writes"
((intermediate >= 2)) || fail "only $intermediate snapshots caught an intermediate state"
assert_same_image /dev/mapper/order-p /dev/mapper/order-r 32
dmsetup remove arepl-order
replicad_stop "$state"
dmsetup remove order-p order-r order-snap
