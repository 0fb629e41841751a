# Primary power loss with a spill device, while the DR host loses power too: the disks
# keep what they had at that instant (the memory queue is gone). Created again with the
# same table line on the same disks, the device finds its spill superblock still marked
# in use, drains the spill log and resyncs under the next generation of its history,
# without operator action; the replica ends equal to the primary and consistent. (Before
# histories the same line drained the log, said consistent=1, and the writes that had
# been in memory stayed missing on the replica.)
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-crash
disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
spare=$(disk_by_serial arepl2)
remove_if_present arepl-crash crash-p crash-r crash-s
rm -rf "$state"
sectors=262144 # 128 MiB volume
spill_sectors=65536
dmsetup create crash-p --table "0 $sectors linear $disk 0"
dmsetup create crash-r --table "0 $sectors linear $replica 0"
dmsetup create crash-s --table "0 $spill_sectors linear $spare 0"
cleanup_on_exit "$state" arepl-crash crash-p crash-r crash-s
spill_blank /dev/mapper/crash-s
initial_sync /dev/mapper/crash-p /dev/mapper/crash-r
replicad_start /dev/mapper/crash-r "$state"
table="$PRIMARY_ADDR $BACKUP_ADDR 3 queue_mb:16 volume:crash spill:/dev/mapper/crash-s"
arepl_create arepl-crash /dev/mapper/crash-p "$table"
wait_connected arepl-crash
[[ $(status_field arepl-crash generation) == 1 ]] || fail "no history after the first handshake"

note "a database-like load: small fsynced writes rewriting a hot 4 MiB, replicated"
fio --name=db --filename=/dev/mapper/arepl-crash --rw=randwrite --bs=4k --size=4M \
    --io_size=2M --fsync=1 --direct=1 --ioengine=psync --randrepeat=0 \
    --output-format=terse >/dev/null || fail "fio failed"
wait_drained arepl-crash

note "links cut: writes fill the memory queue and then the spill log"
links_cut_both
wait_status arepl-crash active_link none 20
fio --name=outage --filename=/dev/mapper/arepl-crash --rw=randwrite --bsrange=4k-128k \
    --size=48M --io_size=40M --direct=1 --ioengine=libaio --iodepth=8 --fsync=16 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null ||
    fail "fio failed during the outage"
spilled=$(status_field arepl-crash spill_entries)
in_memory=$(status_field arepl-crash queued)
((spilled > 0 && in_memory > 0)) || fail "expected entries in both the spill log ($spilled) and memory ($in_memory)"
note "power cut with $spilled entries spilled and $in_memory in memory; the DR host dies too"
replicad_stop "$state" KILL
power_cut arepl-crash crash-p crash-s

note "reboot: the same disks, the same table line"
swap_table crash-p "0 $sectors linear $disk 0"
swap_table crash-s "0 $spill_sectors linear $spare 0"
links_restore_both
replicad_start /dev/mapper/crash-r "$state"
mark=$(dmesg_mark)
arepl_create arepl-crash /dev/mapper/crash-p "$table"
dmesg_since "$mark" | grep -q "not removed cleanly" || fail "the unclean shutdown went unnoticed"
dmesg_since "$mark" | grep "resuming the spill log" || fail "the spill log was not resumed"
[[ $(status_field arepl-crash consistent) == 0 ]] || fail "consistent=1 right after a crash"
wait_status arepl-crash resyncs 1 60
dmesg_since "$mark" | grep -q "RESYNC of" || fail "no kernel log line about the resync"
total=$(status_field arepl-crash sync_total_bytes)
note "resync of $total bytes (the writes touched the first 48 MiB of 128 MiB)"
((total > 0 && total <= 48 * 1048576)) || fail "the resync covers $total bytes, not just the written regions"
wait_status arepl-crash consistent 1 300
wait_drained arepl-crash 300
[[ $(status_field arepl-crash generation) == 2 ]] || fail "the resync did not run under the next generation"
assert_same_image /dev/mapper/crash-p /dev/mapper/crash-r 128
ip netns exec dr "$REPLICAD" status --state-dir "$state" --check-consistent ||
    fail "replicad does not call its replica consistent"

note "removed cleanly now: created again, it continues without a resync"
dmsetup remove arepl-crash
arepl_create arepl-crash /dev/mapper/crash-p "$table"
wait_connected arepl-crash
[[ $(status_field arepl-crash resyncs) == 0 ]] || fail "a clean re-creation resynced"
dmsetup remove arepl-crash
replicad_stop "$state"
dmesg_assert_clean
