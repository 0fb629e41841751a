# With wire_crc:off, write frames carry no payload checksum (replicad checks only their
# length): a flush-heavy rewrite load and a burst of large writes still replicate
# byte-exact, and the table line keeps the choice.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup nocrc arepl-nocrc
arepl_create arepl-nocrc "$disk" "$PRIMARY_ADDR 2 queue_mb:32 wire_crc:off"
wait_connected arepl-nocrc
table=$(dmsetup table arepl-nocrc)
[[ $table == *" 2 queue_mb:32 wire_crc:off" ]] || fail "table reads back as '$table'"

note "fsync after every write, 4-64 KiB, rewriting the same 2 MiB"
fio --name=fsync --filename=/dev/mapper/arepl-nocrc --rw=randwrite --bsrange=4k-64k \
    --offset=4M --size=2M --io_size=8M --fsync=1 --direct=1 --ioengine=psync \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null ||
    fail "fio (fsync) failed"
note "128 MiB of 64 KiB-1 MiB random writes at iodepth 16"
fio --name=bulk --filename=/dev/mapper/arepl-nocrc --rw=randwrite --bsrange=64k-1m \
    --size=256M --io_size=128M --direct=1 --ioengine=libaio --iodepth=16 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null ||
    fail "fio (bulk) failed"
note "status: $(dmsetup status arepl-nocrc)"
(($(status_field arepl-nocrc write_errors) == 0)) || fail "writes failed to queue"
pair_verify_and_teardown arepl-nocrc 300
grep -iE 'warn|error' "$state/replicad.log" >&2 && fail "replicad logged warnings"
dmesg_assert_clean
true
