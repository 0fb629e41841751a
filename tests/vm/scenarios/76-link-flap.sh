# Both links flap repeatedly under load; the replica ends identical and the counters
# add up.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup flap arepl-flap
arepl_create arepl-flap "$disk" "$PRIMARY_ADDR $BACKUP_ADDR"
wait_status arepl-flap active_link primary

fio --name=load --filename=/dev/mapper/arepl-flap --rw=randwrite --bsrange=4k-256k \
    --size=256M --time_based --runtime=55 --rate=4m --direct=1 --ioengine=libaio --iodepth=8 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null &
fio_pid=$!
# Each round: the primary dies (long enough for the heartbeat), then both are down,
# then the primary returns, then the backup.
for round in 1 2 3; do
    link_cut dr0
    sleep 8
    link_cut dr1
    sleep 4
    link_restore dr0
    sleep 5
    link_restore dr1
    sleep 1
    echo "round $round: $(dmsetup status arepl-flap | grep -oE 'active_link=[a-z]+|connects=[0-9]+|link_errors=[0-9]+' | tr '\n' ' ')"
done
wait "$fio_pid" || fail "fio failed while links flapped"
wait_drained arepl-flap 180
note "status: $(dmsetup status arepl-flap)"
connects=$(status_field arepl-flap connects)
errors=$(status_field arepl-flap link_errors)
sum=$(($(status_field arepl-flap primary_connects) + $(status_field arepl-flap backup_connects)))
((connects == sum)) || fail "connects=$connects is not primary+backup=$sum"
((connects >= 3)) || fail "only $connects connections through 3 rounds of flapping"
((errors >= 3)) || fail "only $errors link errors through 3 rounds of flapping"
pair_verify_and_teardown arepl-flap
