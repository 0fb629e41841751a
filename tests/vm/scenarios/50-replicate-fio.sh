# 256 MiB of mixed-size random writes at iodepth 16 replicate byte-exact.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup fio arepl-fio
arepl_create arepl-fio "$disk"
wait_connected arepl-fio

note "fio: 256 MiB, 4 KiB-1 MiB blocks, random offsets, iodepth 16, direct I/O"
fio --name=mixed --filename=/dev/mapper/arepl-fio --rw=randwrite --bsrange=4k-1m \
    --size=256M --io_size=256M --direct=1 --ioengine=libaio --iodepth=16 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null ||
    fail "fio failed"
note "status after fio: $(dmsetup status arepl-fio)"
wait_drained arepl-fio 300
note "status drained: $(dmsetup status arepl-fio)"
(($(status_field arepl-fio lag_ms) == 0)) || fail "lag not 0 with an empty queue"
(($(status_field arepl-fio acked_seq) >= $(status_field arepl-fio writes))) ||
    fail "fewer sequences acknowledged than writes issued"
pair_verify_and_teardown arepl-fio
grep -iE 'warn|error' "$state/replicad.log" >&2 && fail "replicad logged warnings"
true
