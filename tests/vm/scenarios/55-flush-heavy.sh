# A workload that fsyncs after every write replicates byte-exact.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
state=/tmp/state-flush
remove_if_present arepl-flush
initial_sync "$disk" "$replica"
replicad_start "$replica" "$state"
arepl_create arepl-flush "$disk"

fio --name=fsync --filename=/dev/mapper/arepl-flush --rw=randwrite --bsrange=4k-64k \
    --size=256M --io_size=16M --fsync=1 --direct=1 --ioengine=psync \
    --refill_buffers --randrepeat=0 --output-format=terse >/dev/null || fail "fio failed"
flushes=$(status_field arepl-flush flushes)
note "flushes seen: $flushes"
((flushes > 100)) || fail "expected a flush per write, saw $flushes"
wait_drained arepl-flush
assert_same_image "$disk" "$replica" "$(($(sectors_of "$disk") / 2048))"
dmsetup remove arepl-flush
replicad_stop "$state"
