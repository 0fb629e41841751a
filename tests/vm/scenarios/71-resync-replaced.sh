# A copy replaced by another before it ends: the initial copy of the whole volume
# (sync:full, no spill device) is under way when replicad dies and writers fill the
# queue, so their regions are tracked instead; the next handshake starts a resync of
# the tracked regions, which must also cover what the first copy had not reached. It
# once dropped that part (scenario 61 found the replica silently different after a
# resync of the whole volume gave way to one of regions). The replica ends equal to the
# primary and consistent on both sides. Then the same before the first handshake: an
# initial copy that has queued what the queue allows, writes behind its cursor tracked
# while no receiver answers, and the first handshake must copy those regions as well.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-replaced
disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
remove_if_present arepl-replaced replaced-lv
rm -rf "$state"
mib=64
dmsetup create replaced-lv --table "0 $((mib * 2048)) linear $disk 0"
cleanup_on_exit "$state" arepl-replaced replaced-lv
dd if=/dev/urandom of=/dev/mapper/replaced-lv bs=1M count=$mib iflag=fullblock oflag=direct status=none
dd if=/dev/zero of="$replica" bs=1M count=$mib oflag=direct status=none
replicad_start "$replica" "$state"
arepl_create arepl-replaced /dev/mapper/replaced-lv \
    "$PRIMARY_ADDR 4 queue_mb:4 volume:replaced sync:full resync_mbps:4"
total=$(status_field arepl-replaced sync_total_bytes)
((total == mib << 20)) || fail "sync_total_bytes=$total, expected the volume"
wait_copied arepl-replaced $((total / 4))

note "replicad dies a quarter into the copy; writers fill the queue and are tracked"
replicad_stop "$state" KILL
wait_status arepl-replaced active_link none 20
dd if=/dev/urandom of=/dev/mapper/arepl-replaced bs=64k count=128 iflag=fullblock \
    oflag=direct status=none &
writer=$!
wait_status arepl-replaced mode tracking 40
wait "$writer" || fail "the writer failed"
reached=$(status_field arepl-replaced sync_bytes)
((reached < total)) || fail "the copy ended before the resync could replace it"
note "the first copy reached $reached of $total bytes"

note "replicad returns: a resync of the tracked regions and of the rest of the copy"
replicad_start "$replica" "$state"
wait_status arepl-replaced resyncs 2 30
left=$(status_field arepl-replaced sync_total_bytes)
note "the new resync copies $left bytes"
((left >= total - reached)) ||
    fail "the resync copies $left bytes, less than the $((total - reached)) the first copy left"
wait_status arepl-replaced consistent 1 120
wait_drained arepl-replaced 120
assert_same_image /dev/mapper/replaced-lv "$replica" "$mib"
ip netns exec dr "$REPLICAD" status --state-dir "$state" --check-consistent ||
    fail "replicad does not call its replica consistent"
dmsetup remove arepl-replaced
replicad_stop "$state"

# The first handshake keeps an initial copy that runs already, and once ran it with
# the regions tracked before it forgotten: the copy had passed them, no later handshake
# came, and the replica was called consistent without their last writes.
note "no receiver yet: the initial copy queues what it may, writers behind it are tracked"
rm -rf "$state"
dd if=/dev/urandom of=/dev/mapper/replaced-lv bs=1M count=$mib iflag=fullblock oflag=direct status=none
dd if=/dev/zero of="$replica" bs=1M count=$mib oflag=direct status=none
arepl_create arepl-replaced /dev/mapper/replaced-lv \
    "$PRIMARY_ADDR 4 queue_mb:4 volume:replaced-early sync:full region_kb:1024"
wait_copied arepl-replaced $((1 << 20))
# Region 0, behind the copy's cursor, rewritten until the queue is full and the rest
# is tracked.
(
    for pass in $(seq 12); do
        dd if=/dev/urandom of=/dev/mapper/arepl-replaced bs=64k count=16 iflag=fullblock \
            oflag=direct status=none || exit 1
    done
) &
writer=$!
wait_status arepl-replaced mode tracking 40
wait "$writer" || fail "the writer failed"
note "the copy stands at $(status_field arepl-replaced sync_bytes) bytes; replicad starts"
replicad_start "$replica" "$state"
wait_status arepl-replaced consistent 1 120
wait_drained arepl-replaced 120
assert_same_image /dev/mapper/replaced-lv "$replica" "$mib"
dmesg_assert_clean
