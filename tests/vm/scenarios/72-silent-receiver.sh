# A receiver that accepts the connection and never answers the handshake (hung, or
# blocked itself) must not hold the sender: each handshake times out and the link is
# tried again, and writers waiting for queue space meanwhile are let go, their regions
# tracked, instead of hanging. (CI once hung for good in scenario 61: replicad, at a
# resync's start, ran an lvs that waited on this very device's full queue.) Once a real replicad
# listens, the tracked regions are resynced and the replica equals the primary.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup silent arepl-silent
listener=
cleanup() {
    local rc=$?
    [[ -z $listener ]] || kill "$listener" 2>/dev/null || true
    cleanup_after_failure "$rc"
}
trap cleanup EXIT
arepl_create arepl-silent "$disk" "$PRIMARY_ADDR 2 queue_mb:4 volume:silent"
wait_connected arepl-silent
replicad_stop "$state"

note "a listener that accepts and never answers takes replicad's port"
ip netns exec dr python3 -c '
import socket, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 7788))
server.listen(8)
held = []
while True:
    held.append(server.accept()[0])
' &
listener=$!
mark=$(dmesg_mark)
dd if=/dev/urandom of=/dev/mapper/arepl-silent bs=64k count=128 seek=64 iflag=fullblock \
    oflag=direct status=none &
writer=$!
wait_status arepl-silent mode tracking 90
wait "$writer" || fail "the writer failed"
dmesg_since "$mark" | grep -q "did not answer the handshake within" ||
    fail "no kernel log line about the unanswered handshake"

note "replicad returns: the tracked regions are resynced"
kill "$listener"
wait "$listener" 2>/dev/null || true
listener=
replicad_start "$replica" "$state"
wait_status arepl-silent consistent 1 120
pair_verify_and_teardown arepl-silent
dmesg_assert_clean
