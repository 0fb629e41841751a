# Cutting the primary link under load moves the stream to the backup link within
# seconds; when the primary returns the stream goes back; the replica ends identical.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup failover arepl-fo
arepl_create arepl-fo "$disk" "$PRIMARY_ADDR $BACKUP_ADDR"
wait_status arepl-fo active_link primary

fio --name=load --filename=/dev/mapper/arepl-fo --rw=randwrite --bsrange=4k-256k \
    --size=256M --time_based --runtime=25 --rate=4m --direct=1 --ioengine=libaio --iodepth=8 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null &
fio_pid=$!
sleep 3
note "cutting the primary link (nftables drop in the DR namespace)"
link_cut dr0
wait_status arepl-fo active_link backup 20
acked=$(status_field arepl-fo acked_seq)
sleep 3
(($(status_field arepl-fo acked_seq) > acked)) || fail "nothing acknowledged over the backup link"
note "restoring the primary link"
link_restore dr0
wait_status arepl-fo active_link primary 30
wait "$fio_pid" || fail "fio failed during failover"
wait_drained arepl-fo 120
note "status: $(dmsetup status arepl-fo)"
(($(status_field arepl-fo primary_errors) >= 1)) || fail "the primary's failure was not counted"
(($(status_field arepl-fo backup_connects) >= 1)) || fail "no backup connection counted"
(($(status_field arepl-fo primary_connects) >= 2)) || fail "no return to the primary counted"
pair_verify_and_teardown arepl-fo
