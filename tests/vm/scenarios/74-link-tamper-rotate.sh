# An encrypted link under a flush-heavy load: a man in the middle inverting one byte
# of the stream makes replicad drop the session (the record fails its check, nothing
# of it is applied) and the device resumes through the next connection; then the key
# rolls over under the same load without a resync. Both images end identical.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

new_keys /tmp/key-old /tmp/key-new
load_key arepl:rotate /tmp/key-old

REPLICAD_ARGS="--key-file /tmp/key-old --next-key-file /tmp/key-new" \
    pair_setup tamper arepl-tamper
mib=$(($(sectors_of "$disk") / 2048))
proxy=${PRIMARY_ADDR%:*}:7790
ip netns exec dr python3 "$REPO_ROOT/tests/vm/tamper_proxy.py" "$proxy" "127.0.0.1:7788" 300000 \
    >/tmp/tamper-proxy.log 2>&1 &
proxy_pid=$!
retry_briefly grep -q listening /tmp/tamper-proxy.log || fail "the proxy did not start"

mark=$(dmesg_mark)
arepl_create arepl-tamper "$disk" "$proxy 1 key:arepl:rotate"
# Small writes that rewrite the same blocks, each made durable, as a database commits.
fio --name=commits --filename=/dev/mapper/arepl-tamper --rw=randwrite --bs=4k --size=8M \
    --time_based --runtime=40 --fsync=1 --ioengine=sync --randrepeat=0 \
    --output-format=terse >/dev/null &
fio_pid=$!

note "one byte inverted in the encrypted stream"
retry_briefly grep -q "flipped byte" /tmp/tamper-proxy.log ||
    retry_briefly grep -q "flipped byte" /tmp/tamper-proxy.log || fail "the proxy never flipped"
retry_briefly grep -q "an encrypted record failed its integrity check" "$state/replicad.log" ||
    fail "replicad did not drop the tampered session"
retry_briefly grep -q "connection 2" /tmp/tamper-proxy.log || fail "the device did not reconnect"
wait_connected arepl-tamper 60
grep "integrity check" "$state/replicad.log" | tail -n1 | sed 's/^/    /'

note "key rollover under load: replicad accepts both, the device reloads the new key"
load_key arepl:rotate /tmp/key-new
dmsetup message arepl-tamper 0 key reload
retry_briefly bash -c 'grep -q "sender proved key .* (next)" "$0/replicad.log"' "$state" ||
    retry_briefly bash -c 'grep -q "sender proved key .* (next)" "$0/replicad.log"' "$state" ||
    fail "the device did not reconnect with the new key"
wait_connected arepl-tamper 60
note "the new key becomes the only one"
replicad_stop "$state"
REPLICAD_ARGS="--key-file /tmp/key-new" replicad_start "$replica" "$state"
wait_connected arepl-tamper 60
wait "$fio_pid" || fail "fio failed"
wait_drained arepl-tamper 300
kill "$proxy_pid" 2>/dev/null || true
dmesg_since "$mark" | grep -q "RESYNC of" && fail "the rollover or the tampering caused a resync"
grep -q "this resync" "$state/replicad.log" && fail "replicad saw a resync"
note "status: $(dmsetup status arepl-tamper)"
pair_verify_and_teardown arepl-tamper
keyctl purge logon arepl:rotate >/dev/null
