# The write-path regime as a functional check (no timing is asserted): bursts into a
# paused link. Random writes of up to 64 KiB are copied as they are mapped; larger ones
# leave their payload on the local device (nothing reads ahead without a session), so a
# rewrite of such a queued block goes through copy-on-write; and a stream of small
# writes is left on the local device as streams are, each charged the page its payload
# takes once read back. Resumed, the replica equals the primary.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup burst arepl-burst
# 32 MiB of queue: room for ~7700 writes of up to 4 KiB, each costing a page and 256
# bytes of overhead.
arepl_create arepl-burst "$disk" "$PRIMARY_ADDR 1 queue_mb:32"
wait_connected arepl-burst
dmsetup message arepl-burst 0 pause

burst() { # fio arguments
    fio --name=burst --filename=/dev/mapper/arepl-burst --direct=1 --ioengine=libaio \
        --iodepth=16 --randrepeat=0 --norandommap --refill_buffers \
        --output-format=terse "$@" >/dev/null || fail "fio $* failed"
}
note "hot rewrites: 4 KiB-256 KiB random writes into 1 MiB, 6 MiB in all"
burst --rw=randwrite --bsrange=4k-256k --offset=8M --size=1M --io_size=6M
note "status: $(dmsetup status arepl-burst)"
(($(status_field arepl-burst sent_seq) == 0)) || fail "entries were sent while paused"
(($(status_field arepl-burst cow_writes) > 0)) || fail "no write went through copy-on-write"
note "small writes: a stream of 4096 writes of 512 bytes"
burst --rw=write --bs=512 --offset=32M --size=2M
note "status: $(dmsetup status arepl-burst)"
(($(status_field arepl-burst write_errors) == 0)) || fail "writes failed to queue"
(($(status_field arepl-burst queued) > 4096)) || fail "not every write was queued"
(($(status_field arepl-burst consistent) == 1)) || fail "the replica is no longer consistent"

dmsetup message arepl-burst 0 resume
pair_verify_and_teardown arepl-burst 300
grep -iE 'warn|error' "$state/replicad.log" >&2 && fail "replicad logged warnings"
dmesg_assert_clean
true
