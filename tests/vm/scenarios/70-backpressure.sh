# With a 4 MiB queue and a 40 Mbit/s link, writers slow down instead of failing, the
# queue never exceeds its bound, and the replica ends identical.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup backpressure arepl-bp
ip netns exec prod tc qdisc replace dev prod0 root netem rate 40mbit delay 5ms
arepl_create arepl-bp "$disk" "$PRIMARY_ADDR 1 queue_mb:4"
wait_connected arepl-bp

fio --name=bp --filename=/dev/mapper/arepl-bp --rw=randwrite --bsrange=4k-1m \
    --size=256M --io_size=48M --direct=1 --ioengine=libaio --iodepth=16 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null &
fio_pid=$!
max_queued=0
capacity=$(status_field arepl-bp capacity_bytes)
while kill -0 "$fio_pid" 2>/dev/null; do
    queued=$(status_field arepl-bp queued_bytes)
    ((queued > max_queued)) && max_queued=$queued
    sleep 0.2
done
wait "$fio_pid" || fail "fio failed under backpressure"
ip netns exec prod tc qdisc del dev prod0 root
note "queue peak $max_queued of $capacity bytes"
((capacity == 4 * 1024 * 1024)) || fail "capacity_bytes=$capacity, expected 4 MiB"
((max_queued > capacity / 2)) || fail "the queue never filled (peak $max_queued): no backpressure tested"
((max_queued <= capacity)) || fail "queue exceeded its bound: $max_queued"
pair_verify_and_teardown arepl-bp 300
