# Repeated kill -9 of replicad under a flush-heavy load that rewrites the same blocks:
# mkfs.ext4 (zeroing, metadata), then ext4 carrying a SQLite database that
# commits with fsync, an fsynced log and fio with fsync=1 over a small hot file, over a
# link with 5 ms delay. Once the writers stop and the queue drains, the replica equals
# the primary byte for byte and no digest check failed on either side.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

mnt=/tmp/mnt-restart-db
pair_setup restart-db arepl-restart-db
ip netns exec prod tc qdisc replace dev prod0 root netem delay 5ms
cleanup() {
    local rc=$?
    [[ -z ${killer_pid:-} ]] || kill "$killer_pid" 2>/dev/null || true
    umount "$mnt" 2>/dev/null || true
    ip netns exec prod tc qdisc del dev prod0 root 2>/dev/null || true
    cleanup_after_failure "$rc"
}
trap cleanup EXIT
arepl_create arepl-restart-db "$disk" "$PRIMARY_ADDR 1 volume:restartdb"
wait_connected arepl-restart-db
RUNTIME=${RESTART_DB_SECONDS:-45}

# kill -9 every 1-4 s, down for up to half a second each time, from mkfs on.
kill_loop() {
    local kills=0 end=$((SECONDS + RUNTIME))
    while ((SECONDS < end)); do
        sleep "$((1 + RANDOM % 4)).$((RANDOM % 10))"
        replicad_stop "$state" KILL
        kills=$((kills + 1))
        sleep "0.$((RANDOM % 5))"
        replicad_start "$replica" "$state"
    done
    echo "$kills" >"$state/kills"
}
kill_loop &
killer_pid=$!

mkfs.ext4 -q -F -b 4096 /dev/mapper/arepl-restart-db
mkdir -p "$mnt"
mount /dev/mapper/arepl-restart-db "$mnt"
/usr/bin/python3 "$REPO_ROOT/tests/vm/dbload.py" "$mnt" $((RUNTIME - 10)) 61 &
db_pid=$!
fio --name=hot --directory="$mnt" --filename=hot.dat --size=2M --rw=randwrite \
    --bsrange=4k-16k --fsync=1 --ioengine=psync --time_based --runtime=$((RUNTIME - 10)) \
    --randrepeat=0 --refill_buffers --output-format=terse >/dev/null &
fio_pid=$!
wait "$db_pid" || fail "database load failed"
wait "$fio_pid" || fail "fio failed"
umount "$mnt"
wait "$killer_pid"
kills=$(cat "$state/kills")
note "$kills kills; status: $(dmsetup status arepl-restart-db)"
((kills >= 4)) || fail "only $kills kills"
wait_drained arepl-restart-db 300
note "restarts that found entries applied but not durable: $(grep -c "were applied before a restart" "$state/replicad.log" || true)"
[[ $(status_field arepl-restart-db diverged) != 1 ]] || fail "the module reports the replica diverged"
! grep -q "REPLICA DIVERGED" "$state/replicad.log" || fail "replicad reports the replica diverged"
same=1
images_equal "$disk" "$replica" "$(($(sectors_of "$disk") / 2048))" || same=0
replicad_stop "$state"
dmsetup remove arepl-restart-db
((same)) || fail "replica differs from primary"
dmesg_assert_clean
