# Links with a pre-shared key: the stream is encrypted on the wire (a known pattern
# never appears in a capture, and does without encryption); a receiver with the wrong
# key, a sender without one, a replayed authentication, a silent peer and malformed
# frames inside the encrypted stream are each refused with nothing written, and the
# device keeps its queue and replicates once the right receiver is back.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

new_keys /tmp/key-a /tmp/key-b
load_key arepl:auth /tmp/key-a

REPLICAD_ARGS="--key-file /tmp/key-a" pair_setup auth arepl-auth
size=$(($(sectors_of "$disk") * 512))
mib=$((size >> 20))
marker=AREPL-CLEARTEXT-MARKER-73
{ yes "$marker" || true; } | head -c $((4 << 20)) >/tmp/auth-pattern

# Captures the primary link's replication traffic in the DR namespace into $1. The
# kernel's capture buffer (64 MiB) holds the whole stream: under TCG tcpdump falls behind
# a drain, and a CI run once lost a quarter of the packets with the default 2 MiB.
capture_start() {
    ip netns exec dr tcpdump -i dr0 -B 65536 -U -s 0 -w "$1" 'tcp port 7788' \
        2>"$1.log" &
    capture_pid=$!
    retry_briefly grep -q "listening on" "$1.log" || fail "tcpdump did not start: $(cat "$1.log")"
}
# Stops the capture once its file has stopped growing but for the link's pings (tcpdump
# has taken every buffered packet; 30 s at most) and checks that it holds at least $2
# bytes, so a pattern missing from it means it never crossed the link, not that the
# capture missed it.
capture_stop() {
    local file=$1 least=$2 size last i
    size=$(stat -c %s "$file")
    for i in $(seq 30); do
        sleep 1
        last=$size
        size=$(stat -c %s "$file")
        ((size - last < 65536)) && break
    done
    kill -INT "$capture_pid"
    wait "$capture_pid" 2>/dev/null || true
    size=$(stat -c %s "$file")
    ((size >= least)) || fail "the capture holds $size bytes, less than the $least sent: $(cat "$file.log")"
    echo "capture: $size bytes; $(grep -h "dropped by kernel" "$file.log")"
}

note "right key on both sides, encrypted: replication works, no plaintext on the wire"
capture_start /tmp/auth-enc.pcap
arepl_create arepl-auth "$disk" "$PRIMARY_ADDR 1 key:arepl:auth"
wait_connected arepl-auth
dd if=/tmp/auth-pattern of=/dev/mapper/arepl-auth bs=1M seek=8 oflag=direct status=none
wait_drained arepl-auth
capture_stop /tmp/auth-enc.pcap $((4 << 20))
grep -qaF "$marker" /tmp/auth-enc.pcap && fail "the pattern crossed the encrypted link in clear"
echo "no plaintext of the pattern in the capture"
grep -q "sender proved key .* (current); the link is encrypted" "$state/replicad.log" ||
    fail "replicad did not log the authenticated, encrypted link"
assert_same_image "$disk" "$replica" "$mib"
dmsetup table arepl-auth | grep -q " key:arepl:auth" || fail "the table does not show key:"
grep -qf /tmp/key-a <(dmsetup table arepl-auth; dmsetup status arepl-auth; dmesg) &&
    fail "the key itself appears in the table, the status or the kernel log"

note "a receiver with another key: refused both ways, nothing written, the queue kept"
replicad_stop "$state"
REPLICAD_ARGS="--key-file /tmp/key-b" replicad_start "$replica" "$state"
replica_before=$("$AREPL_STAMP" digest --image "$replica" --mib "$mib")
mark=$(dmesg_mark)
dd if=/dev/urandom of=/dev/mapper/arepl-auth bs=64k count=64 seek=300 oflag=direct status=none
retry_briefly bash -c 'grep -q "authentication failed: sender offered key" "$0/replicad.log"' "$state" ||
    fail "replicad did not log the refused key"
retry_briefly bash -c 'dmesg | tail -n "+$(($1 + 1))" | grep -q "replicad at .* refused the key"' _ "$mark" ||
    fail "the module did not log the refusal"
[[ $(status_field arepl-auth link) != connected ]] || fail "connected with the wrong key"
(($(status_field arepl-auth queued) > 0)) || fail "the queue was not kept"
[[ $("$AREPL_STAMP" digest --image "$replica" --mib "$mib") == "$replica_before" ]] ||
    fail "the replica changed while the keys differed"
echo "refused: $(grep -o 'authentication failed: .*' "$state/replicad.log" | tail -n1)"

note "test peers against the keyed receiver: no key, the wrong key, a replay, silence"
replicad_stop "$state"
REPLICAD_ARGS="--key-file /tmp/key-a --metrics-listen 127.0.0.1:9479" replicad_start "$replica" "$state"
wait_connected arepl-auth
wait_drained arepl-auth
dmsetup message arepl-auth 0 pause
send() {
    ip netns exec prod "$AREPL_SEND" --connect "$PRIMARY_ADDR" --volume arepl-auth \
        --volume-size "$size" --timeout 15 "$@"
}
replica_before=$("$AREPL_STAMP" digest --image "$replica" --mib "$mib")
out=$(send ping 2>&1) && fail "a sender without a key was let in: $out"
grep -q "requires one" <<<"$out" || fail "no-key refusal unclear: $out"
out=$(send --key-file /tmp/key-b ping 2>&1) && fail "a sender with the wrong key was let in: $out"
grep -q "this receiver holds" <<<"$out" || fail "wrong-key refusal unclear: $out"
send --key-file /tmp/key-a replay-check || fail "a replayed authentication was not refused"
grep -q "proof for key .* is wrong" "$state/replicad.log" || fail "replicad did not log the replay"
ip netns exec prod bash -c "exec 3<>/dev/tcp/${PRIMARY_ADDR%:*}/${PRIMARY_ADDR#*:}; sleep 13" &
silent=$!
sleep 12
grep -q "no Hello within 10s" "$state/replicad.log" || fail "a silent peer was not dropped after 10 s"
wait "$silent" || true
failures=$(replicad_metric 127.0.0.1:9479 replicad_auth_failures_total)
((failures >= 3)) || fail "replicad_auth_failures_total is $failures, expected at least 3"
echo "auth failures counted: $failures"

note "malformed frames inside the encrypted stream: dropped, nothing written"
for kind in bad-magic bad-header-crc unknown-kind oversized bad-payload-crc past-end \
    data-before-hello ping-before-hello; do
    send --key-file /tmp/key-a malformed "$kind" || fail "$kind under encryption: not dropped"
done
[[ $("$AREPL_STAMP" digest --image "$replica" --mib "$mib") == "$replica_before" ]] ||
    fail "the replica changed during the refused peers"
kill -0 "$(cat "$state/replicad.pid")" || fail "replicad died"
dmsetup message arepl-auth 0 resume
wait_connected arepl-auth

note "control: with encrypt:off the same capture does show the pattern"
dmsetup remove arepl-auth
capture_start /tmp/auth-plain.pcap
arepl_create arepl-auth "$disk" "$PRIMARY_ADDR 2 key:arepl:auth encrypt:off"
wait_connected arepl-auth
dd if=/tmp/auth-pattern of=/dev/mapper/arepl-auth bs=1M seek=16 oflag=direct status=none
wait_drained arepl-auth
capture_stop /tmp/auth-plain.pcap $((4 << 20))
grep -qaF "$marker" /tmp/auth-plain.pcap || fail "the control capture does not show the pattern"
grep -q "the link is NOT encrypted" "$state/replicad.log" || fail "replicad did not flag the clear link"
pair_verify_and_teardown arepl-auth
keyctl purge logon arepl:auth >/dev/null
rm -f /tmp/auth-*.pcap* /tmp/auth-pattern
