# Online verify: each chunk is hashed on both sides at the same point of the write
# order. Under a running fsync-heavy fio it finds nothing on a healthy pair; it finds
# exactly the chunk corrupted on the replica behind replicad's back (status, kernel log,
# replicad log, metrics, `arepl verify` exit status 3); `verify repair` sends it again
# and the replica ends equal to the primary.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-verify
metrics=127.0.0.1:9478
disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
remove_if_present arepl-vf vf-p vf-r
rm -rf "$state"
sectors=131072 # 64 MiB volume: 256 chunks of 256 KiB
dmsetup create vf-p --table "0 $sectors linear $disk 0"
dmsetup create vf-r --table "0 $sectors linear $replica 0"
cleanup_on_exit "$state" arepl-vf vf-p vf-r
initial_sync /dev/mapper/vf-p /dev/mapper/vf-r
REPLICAD_ARGS="--metrics-listen $metrics" replicad_start /dev/mapper/vf-r "$state"
arepl_create arepl-vf /dev/mapper/vf-p "$PRIMARY_ADDR 2 queue_mb:16 volume:vf"
wait_connected arepl-vf

wait_verified() { # device, seconds
    wait_status "$1" verifying 0 "$2"
    [[ $(status_field "$1" verify_bytes) == $((sectors * 512)) ]] ||
        fail "the verify checked $(status_field "$1" verify_bytes) of $((sectors * 512)) bytes"
}

note "verify under a database-like load: small fsynced writes rewriting hot blocks"
fio --name=db --filename=/dev/mapper/arepl-vf --rw=randwrite --bs=4k --size=16M --fsync=1 \
    --direct=1 --ioengine=psync --randrepeat=0 --time_based --runtime=600 \
    --output-format=terse >/dev/null &
fio_pid=$!
sleep 2
dmsetup message arepl-vf 0 verify
[[ $(status_field arepl-vf verifying) == 1 ]] || fail "no verify runs after the message"
if dmsetup message arepl-vf 0 verify 2>/dev/null; then
    fail "a second verify was accepted while one runs"
fi
wait_verified arepl-vf 300
kill "$fio_pid"
wait "$fio_pid" || true
[[ $(status_field arepl-vf verify_mismatches) == 0 ]] ||
    fail "the verify found $(status_field arepl-vf verify_mismatches) differences on a healthy pair"
grep "differ from the primary" "$state/replicad.log" && fail "replicad reported a difference on a healthy pair"
wait_drained arepl-vf
assert_same_image /dev/mapper/vf-p /dev/mapper/vf-r 64

note "4 KiB of the replica overwritten behind replicad's back, in the chunk at 5 MiB"
dd if=/dev/urandom of=/dev/mapper/vf-r bs=4k seek=$((5 * 256 + 3)) count=1 oflag=direct status=none
mark=$(dmesg_mark)
set +e
out=$("$AREPL" verify arepl-vf --wait)
rc=$?
set -e
echo "$out"
((rc == 3)) || fail "arepl verify --wait exited $rc, not 3, with a chunk different"
grep -q "1 chunks differ" <<<"$out" || fail "arepl verify does not say one chunk differs"
[[ $(status_field arepl-vf verify_mismatches) == 1 ]] || fail "status does not count one mismatch"
dmesg_since "$mark" | grep "verify: bytes 5242880..5505024 differ on the replica" ||
    fail "the kernel log does not name the chunk"
grep "verify: bytes 5242880..5505024 of volume vf differ from the primary" "$state/replicad.log" ||
    fail "replicad's log does not name the chunk"
mismatches=$(replicad_metric "$metrics" replicad_verify_mismatches_total)
((mismatches == 1)) || fail "replicad_verify_mismatches_total is $mismatches"
ip netns exec dr "$REPLICAD" status --state-dir "$state" | grep -i "verify" ||
    fail "replicad status says nothing about the verify"

note "verify repair sends the chunk again; a last verify finds the pair equal"
set +e
"$AREPL" verify arepl-vf --repair --wait
rc=$?
set -e
((rc == 3)) || fail "verify repair exited $rc; the chunk was still different before the repair"
[[ $(status_field arepl-vf verify_repaired) == 1 ]] || fail "the chunk was not sent again"
wait_drained arepl-vf
"$AREPL" verify arepl-vf --wait || fail "the replica still differs after verify repair"
assert_same_image /dev/mapper/vf-p /dev/mapper/vf-r 64
"$AREPL" status arepl-vf --json | python3 -c '
import json, sys
v = json.load(sys.stdin)["devices"][0]["verify"]
assert v == {"running": False, "checked_bytes": 67108864, "total_bytes": 67108864,
             "mismatches": 0, "repaired": 0}, v' || fail "arepl status --json does not show the verify"
dmsetup remove arepl-vf
replicad_stop "$state"
dmesg_assert_clean
