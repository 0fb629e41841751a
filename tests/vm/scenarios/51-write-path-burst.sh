# The write-path regime as a functional check (no timing is asserted): bursts into a
# paused link leave every payload on the local device (nothing reads ahead without a
# session), so each rewrite of a queued block goes through copy-on-write, and a burst
# of small writes fills the range table (payloads are then read back early). Resumed, the replica equals the primary.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup burst arepl-burst
# 16 MiB of queue: room for 8192 writes of 512 bytes, range-table room for ~4900.
arepl_create arepl-burst "$disk" "$PRIMARY_ADDR 1 queue_mb:16"
wait_connected arepl-burst
dmsetup message arepl-burst 0 pause

burst() { # fio arguments
    fio --name=burst --filename=/dev/mapper/arepl-burst --direct=1 --ioengine=libaio \
        --iodepth=16 --randrepeat=0 --norandommap --refill_buffers \
        --output-format=terse "$@" >/dev/null || fail "fio $* failed"
}
note "hot rewrites: 4 KiB-64 KiB random writes into 1 MiB, 6 MiB in all"
burst --rw=randwrite --bsrange=4k-64k --offset=8M --size=1M --io_size=6M
note "status: $(dmsetup status arepl-burst)"
(($(status_field arepl-burst sent_seq) == 0)) || fail "entries were sent while paused"
(($(status_field arepl-burst cow_writes) > 0)) || fail "no write went through copy-on-write"
note "small writes: 8192 of 512 bytes, random within 32 MiB"
burst --rw=randwrite --bs=512 --offset=32M --size=32M --io_size=4M
note "status: $(dmsetup status arepl-burst)"
(($(status_field arepl-burst write_errors) == 0)) || fail "writes failed to queue"
(($(status_field arepl-burst queued) > 8192)) || fail "not every write was queued"
(($(status_field arepl-burst consistent) == 1)) || fail "the replica is no longer consistent"

dmsetup message arepl-burst 0 resume
pair_verify_and_teardown arepl-burst 300
grep -iE 'warn|error' "$state/replicad.log" >&2 && fail "replicad logged warnings"
dmesg_assert_clean
true
