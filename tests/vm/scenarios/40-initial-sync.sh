# sync:full copies the whole volume to a replica that holds something else, while fio
# writes to it; once status says consistent=1 and the queue is drained, the replica
# equals the primary byte for byte.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-initial-sync
disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
remove_if_present arepl-sync
mib=$(($(sectors_of "$disk") / 2048))
note "primary and replica: different random data in the first 96 MiB; replica's last MiB too"
for dev in "$disk" "$replica"; do
    dd if=/dev/urandom of="$dev" bs=1M count=96 iflag=fullblock oflag=direct status=none
done
dd if=/dev/urandom of="$replica" bs=1M seek=$((mib - 1)) count=1 oflag=direct status=none
[[ $(digest_of "$disk" "$mib") != "$(digest_of "$replica" "$mib")" ]] || fail "disks start equal"
replicad_start "$replica" "$state"

mark=$(dmesg_mark)
arepl_create arepl-sync "$disk" "$PRIMARY_ADDR 2 queue_mb:8 sync:full"
[[ $(dmsetup table arepl-sync) == *" sync:full" ]] || fail "table lacks sync:full: $(dmsetup table arepl-sync)"
[[ $(status_field arepl-sync consistent) == 0 ]] || fail "consistent before the copy"
(($(status_field arepl-sync sync_total_bytes) == mib * 1048576)) || fail "sync_total_bytes wrong"

note "fio: 64 MiB of random writes during the copy"
fio --name=during-copy --filename=/dev/mapper/arepl-sync --rw=randwrite --bsrange=4k-256k \
    --size="${mib}M" --io_size=64M --direct=1 --ioengine=libaio --iodepth=8 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null ||
    fail "fio failed"
note "after fio: mode=$(status_field arepl-sync mode) sync_bytes=$(status_field arepl-sync sync_bytes)"
wait_status arepl-sync consistent 1 300
wait_drained arepl-sync 300
[[ $(status_field arepl-sync mode) == replicating ]] || fail "mode is not replicating"
(($(status_field arepl-sync sync_bytes) == mib * 1048576)) || fail "sync_bytes short of the volume"
dmesg_since "$mark" | grep -q "volume arepl-sync: initial copy of $((mib * 1048576)) bytes queued" ||
    fail "no dmesg line about the finished copy"
assert_same_image "$disk" "$replica" "$mib"
dmsetup remove arepl-sync
replicad_stop "$state"
grep -iE 'warn|error' "$state/replicad.log" >&2 && fail "replicad logged warnings"
true
