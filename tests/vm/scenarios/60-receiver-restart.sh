# kill -9 of replicad mid-stream: after a restart replication resumes from its durable
# sequence and the images end identical.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup restart arepl-restart
arepl_create arepl-restart "$disk"
wait_connected arepl-restart

# A rate-limited writer keeps the stream going across the kill and the restart.
fio --name=load --filename=/dev/mapper/arepl-restart --rw=randwrite --bsrange=4k-256k \
    --size=256M --time_based --runtime=12 --rate=8m --direct=1 --ioengine=libaio --iodepth=8 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null &
fio_pid=$!
# fio takes a few seconds to start under TCG: kill once something is acknowledged.
for i in $(seq 60); do
    acked_before=$(status_field arepl-restart acked_seq)
    ((acked_before > 20)) && break
    sleep 0.5
done
((acked_before > 20)) || fail "nothing acknowledged before the kill"
note "killing replicad -9 (acked_seq=$acked_before)"
replicad_stop "$state" KILL
sleep 2
[[ $(status_field arepl-restart link) != connected ]] || fail "link still connected after kill -9"
queued_while_down=$(status_field arepl-restart queued)
note "queued while the receiver is down: $queued_while_down"
replicad_start "$replica" "$state"
wait "$fio_pid" || fail "fio failed while the receiver was down"
grep -E "resumes after seq [0-9]+" "$state/replicad.log" | tail -n1 | sed 's/^/    /'
resumed=$(grep -oE "resumes after seq [0-9]+" "$state/replicad.log" | tail -n1 | grep -oE '[0-9]+$')
((resumed >= acked_before)) || fail "resumed after $resumed, below the $acked_before acknowledged before the kill"
wait_connected arepl-restart 30
wait_drained arepl-restart 300
note "status: $(dmsetup status arepl-restart)"
(($(status_field arepl-restart connects) >= 2)) || fail "no reconnect counted"
pair_verify_and_teardown arepl-restart
