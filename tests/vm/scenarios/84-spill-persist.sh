# The spill log outlives its device: with entries spilled, remove the device, even
# unload the module (what is in memory is gone), create it again with the same table:
# it resumes the log, and once the links return everything drains, identical.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup persist arepl-persist
spill=$(disk_by_serial arepl2)
spill_blank "$spill"
table="$PRIMARY_ADDR $BACKUP_ADDR 3 queue_mb:4 volume:persisttest spill:$spill"
arepl_create arepl-persist "$disk" "$table"
wait_status arepl-persist active_link primary

links_cut_both
wait_status arepl-persist active_link none 20
fio --name=persist --filename=/dev/mapper/arepl-persist --rw=randwrite --bsrange=4k-128k \
    --size=256M --io_size=24M --direct=1 --ioengine=libaio --iodepth=8 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null \
    || fail "fio failed with both links down"
spilled=$(status_field arepl-persist spill_entries)
in_memory=$(status_field arepl-persist queued)
((spilled > 0)) || fail "nothing spilled"
note "before remove: $spilled entries spilled, $in_memory in memory"

mark=$(dmesg_mark)
start=$SECONDS
dmsetup remove arepl-persist
((SECONDS - start < 10)) || fail "remove waited $((SECONDS - start))s although the spill log can keep the queue"
dmesg_since "$mark" | grep -q "stay in the spill log" || fail "remove did not report the entries kept"
dmesg_since "$mark" | grep -q "not acknowledged by the receiver" && fail "remove dropped entries"
rmmod dm_arepl
load_module

mark=$(dmesg_mark)
arepl_create arepl-persist "$disk" "$table"
dmesg_since "$mark" | grep "resuming the spill log" || fail "the log was not resumed"
resumed=$(status_field arepl-persist spill_entries)
((resumed == spilled + in_memory)) || fail "resumed $resumed entries, expected $spilled + $in_memory"
[[ $(status_field arepl-persist mode) == spilling ]] || fail "mode is not spilling after resume"

note "restoring both links"
links_restore_both
wait_status arepl-persist mode replicating 300
pair_verify_and_teardown arepl-persist 300
