# Both links down and far more writes than the memory queue holds: writes go on, the
# oldest entries spill to the spill device in order; when the links return the log
# drains first, status goes back to replicating, and the replica ends identical.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup spill arepl-spill
spill=$(disk_by_serial arepl2)
spill_blank "$spill"
arepl_create arepl-spill "$disk" "$PRIMARY_ADDR $BACKUP_ADDR 3 queue_mb:4 volume:spilltest spill:$spill"
wait_status arepl-spill active_link primary
dmsetup table arepl-spill | grep -q " spill:" || fail "table line lacks the spill device"

links_cut_both
wait_status arepl-spill active_link none 20
note "both links cut; writing 40 MiB through a 4 MiB queue"
start=$SECONDS
timeout 300 fio --name=spill --filename=/dev/mapper/arepl-spill --rw=randwrite \
    --bsrange=4k-256k --size=256M --io_size=40M --direct=1 --ioengine=libaio --iodepth=8 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/tmp/spill-fio.txt \
    || fail "fio did not finish with both links down (writers should not wait)"
bw=$(awk -F';' '{print $48}' /tmp/spill-fio.txt)
note "fio wrote 40 MiB in $((SECONDS - start))s (${bw} KiB/s) with both links down"
note "status: $(dmsetup status arepl-spill)"
[[ $(status_field arepl-spill mode) == spilling ]] || fail "mode is not spilling"
entries=$(status_field arepl-spill spill_entries)
used=$(status_field arepl-spill spill_bytes)
queued=$(status_field arepl-spill queued_bytes)
((entries > 0 && used > 30 * 1024 * 1024)) || fail "spill log holds $entries entries, $used bytes"
((queued <= 4 * 1024 * 1024)) || fail "memory queue exceeds its bound: $queued"
(($(status_field arepl-spill spill_capacity_bytes) > 60 * 1024 * 1024)) || fail "spill capacity wrong"

note "restoring both links"
ip netns exec prod tc qdisc replace dev prod0 root netem rate 40mbit
links_restore_both
wait_status arepl-spill mode draining 30
wait_status arepl-spill mode replicating 300
ip netns exec prod tc qdisc del dev prod0 root
pair_verify_and_teardown arepl-spill 300
