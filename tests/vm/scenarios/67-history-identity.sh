# The replica's history has an identity: a device continues it only when it can prove
# it. Removed cleanly and created again, it continues; removed with entries dropped, or
# created after the module was reloaded (no spill device keeps a record), it is refused
# with a reason and writes nothing; created with sync:full, it resyncs the whole volume
# under the next generation and the replica ends equal and consistent on both sides.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup history arepl-hist2
cleanup_on_exit "$state" arepl-hist2
line="$PRIMARY_ADDR 2 queue_mb:8 volume:hist2"
write_some() { # MiB of random 4-64 KiB writes
    fio --name=some --filename=/dev/mapper/arepl-hist2 --rw=randwrite --bsrange=4k-64k \
        --size=128M --io_size="$1M" --direct=1 --ioengine=libaio --iodepth=4 \
        --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null ||
        fail "fio failed"
}
check_consistent() {
    ip netns exec dr "$REPLICAD" status --state-dir "$state" --check-consistent ||
        fail "replicad does not call its replica consistent"
}

arepl_create arepl-hist2 "$disk" "$line"
wait_connected arepl-hist2
[[ $(status_field arepl-hist2 generation) == 1 ]] || fail "no history after the first handshake"
write_some 16
wait_drained arepl-hist2

note "removed cleanly, created again: the history continues"
dmsetup remove arepl-hist2
arepl_create arepl-hist2 "$disk" "$line"
wait_connected arepl-hist2
write_some 8
wait_drained arepl-hist2
[[ $(status_field arepl-hist2 resyncs) == 0 ]] || fail "a clean re-creation resynced"
[[ $(status_field arepl-hist2 consistent) == 1 ]] || fail "not consistent after a clean re-creation"
check_consistent

note "entries dropped at remove: the next device cannot prove the history and is refused"
dmsetup message arepl-hist2 0 pause
write_some 4
mark=$(dmesg_mark)
dmsetup remove arepl-hist2
dmesg_since "$mark" | grep -q "not acknowledged by the receiver" || fail "remove did not drop entries"
mark=$(dmesg_mark)
arepl_create arepl-hist2 "$disk" "$line"
wait_status arepl-hist2 refused 1 20
dmesg_since "$mark" | grep "NOT REPLICATING" || fail "no kernel log line says why"
[[ $(status_field arepl-hist2 consistent) == 0 ]] || fail "a refused device says consistent"
[[ $(status_field arepl-hist2 connects) == 0 ]] || fail "a refused device counted a session"
write_some 2
sleep 2
[[ $(status_field arepl-hist2 acked_seq) == 0 ]] || fail "the replica took entries from a refused device"
dmsetup message arepl-hist2 0 pause
dmsetup remove arepl-hist2

note "sync:full: a resync of the whole volume under the next generation"
mark=$(dmesg_mark)
arepl_create arepl-hist2 "$disk" "$PRIMARY_ADDR 3 queue_mb:8 volume:hist2 sync:full"
write_some 8
wait_status arepl-hist2 consistent 1 300
wait_drained arepl-hist2 300
[[ $(status_field arepl-hist2 resyncs) == 1 ]] || fail "resyncs is not 1"
dmesg_since "$mark" | grep -q "RESYNC of" || fail "no kernel log line about the resync"
grep -q "consistent again" "$state/replicad.log" || fail "replicad never called the replica consistent again"
check_consistent
assert_same_image "$disk" "$replica" "$(($(sectors_of "$disk") / 2048))"

note "module reloaded without a spill device: no record of the history, refused"
dmsetup remove arepl-hist2
rmmod dm_arepl
load_module
arepl_create arepl-hist2 "$disk" "$line"
wait_status arepl-hist2 refused 1 20
dmsetup message arepl-hist2 0 pause
dmsetup remove arepl-hist2
check_consistent
replicad_stop "$state"
dmesg_assert_clean
