# The activity log's blocks fail to write while the rest of the spill device works:
# writers go on unmarked, and the superblock says the log is incomplete. After a power
# cut the same table line resyncs the whole volume, not just the regions the log
# happens to name; the replica ends equal to the primary. (Before the superblock flag,
# the log was trusted, the regions written after the failure were never resynced, and
# the replica stayed different.)
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-alfail
disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
spare=$(disk_by_serial arepl2)
remove_if_present arepl-alf alf-p alf-r alf-s
rm -rf "$state"
sectors=262144 # 128 MiB volume: 32 regions of 4 MiB, one activity log block
spill_sectors=65536
dmsetup create alf-p --table "0 $sectors linear $disk 0"
dmsetup create alf-r --table "0 $sectors linear $replica 0"
dmsetup create alf-s --table "0 $spill_sectors linear $spare 0"
cleanup_on_exit "$state" arepl-alf alf-p alf-r alf-s
spill_blank /dev/mapper/alf-s
initial_sync /dev/mapper/alf-p /dev/mapper/alf-r
replicad_start /dev/mapper/alf-r "$state"
table="$PRIMARY_ADDR $BACKUP_ADDR 3 queue_mb:16 volume:alf spill:/dev/mapper/alf-s"
arepl_create arepl-alf /dev/mapper/alf-p "$table"
wait_connected arepl-alf

note "the activity log's sectors (bytes 4096..8191 of the spill device) fail from now on"
swap_table alf-s "0 8 linear $spare 0
8 8 error
16 $((spill_sectors - 16)) linear $spare 16"
links_cut_both
wait_status arepl-alf active_link none 20
mark=$(dmesg_mark)
note "a database-like load in 64..72 MiB, regions not marked before: it stays in memory"
fio --name=db --filename=/dev/mapper/arepl-alf --rw=randwrite --bs=4k --offset=64M --size=8M \
    --io_size=3M --fsync=1 --direct=1 --ioengine=psync --randrepeat=0 \
    --output-format=terse >/dev/null || fail "writers failed while the activity log could not be written"
dmesg_since "$mark" | grep "cannot write the activity log on" ||
    fail "the kernel log does not say the activity log cannot be written"
in_memory=$(status_field arepl-alf queued)
((in_memory > 0)) || fail "nothing in memory to lose"

note "power cut with $in_memory entries in memory"
replicad_stop "$state" KILL
power_cut arepl-alf alf-p alf-s

note "reboot: the same disks, all sectors working again, the same table line"
swap_table alf-p "0 $sectors linear $disk 0"
swap_table alf-s "0 $spill_sectors linear $spare 0"
links_restore_both
replicad_start /dev/mapper/alf-r "$state"
mark=$(dmesg_mark)
arepl_create arepl-alf /dev/mapper/alf-p "$table"
dmesg_since "$mark" | grep "missed marks" || fail "the incomplete activity log was trusted"
wait_status arepl-alf resyncs 1 60
total=$(status_field arepl-alf sync_total_bytes)
((total == sectors * 512)) || fail "the resync covers $total bytes, not the whole volume"
wait_status arepl-alf consistent 1 300
wait_drained arepl-alf 300
assert_same_image /dev/mapper/alf-p /dev/mapper/alf-r 128

note "removed cleanly: the rewritten activity log is complete, no resync next time"
dmsetup remove arepl-alf
arepl_create arepl-alf /dev/mapper/alf-p "$table"
wait_connected arepl-alf
[[ $(status_field arepl-alf resyncs) == 0 ]] || fail "a clean re-creation resynced"
dmsetup remove arepl-alf
replicad_stop "$state"
dmesg_assert_clean
