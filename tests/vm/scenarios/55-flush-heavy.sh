# A workload that fsyncs after every write replicates byte-exact.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup flush arepl-flush
arepl_create arepl-flush "$disk"

fio --name=fsync --filename=/dev/mapper/arepl-flush --rw=randwrite --bsrange=4k-64k \
    --size=256M --io_size=16M --fsync=1 --direct=1 --ioengine=psync \
    --refill_buffers --randrepeat=0 --output-format=terse >/dev/null || fail "fio failed"
flushes=$(status_field arepl-flush flushes)
note "flushes seen: $flushes"
((flushes > 100)) || fail "expected a flush per write, saw $flushes"
pair_verify_and_teardown arepl-flush
