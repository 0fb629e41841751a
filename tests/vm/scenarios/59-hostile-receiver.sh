# The module trusts nothing the receiver says. A proxy in front of a real replicad lies
# to it in one way at a time: a Welcome claiming a durable sequence from the future, an
# Ack of a sequence never sent, a frame header with a length over the maximum. Each is
# a logged protocol error that drops the link; no entry is freed on the lie's word (the
# Welcome's lie would have skipped the writes made meanwhile), and once an honest link
# is back the replica equals the primary.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-liar
disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
mib=$(($(sectors_of "$disk") / 2048))
initial_sync "$disk" "$replica"
# replicad behind the proxy, which takes the primary link's address.
replicad_start "$replica" "$state" 7789
cleanup_on_exit "$state" arepl-liar
proxy_pid=
proxy_start() { # lie
    ip netns exec dr "$AREPL_LYING_PROXY" --listen "$PRIMARY_ADDR" --upstream 127.0.0.1:7789 \
        --lie "$1" >/tmp/liar-proxy.log 2>&1 &
    proxy_pid=$!
    retry_briefly grep -q "listening" /tmp/liar-proxy.log || fail "the proxy did not start"
}
proxy_stop() {
    kill "$proxy_pid"
    wait "$proxy_pid" 2>/dev/null || true
}

note "an honest session first: the device learns the replica's sequence"
proxy_start honest
arepl_create arepl-liar "$disk" "$PRIMARY_ADDR 1 queue_mb:16"
wait_connected arepl-liar
dd if=/dev/urandom of=/dev/mapper/arepl-liar bs=64k count=16 seek=10 oflag=direct status=none
wait_drained arepl-liar
proxy_stop

# Each lie, with what the module must log about it.
declare -A logged=(
    [welcome-future]="claims sequence [0-9]* durable, but this device sent only through"
    [ack-unsent]="acknowledged sequence [0-9]* which was never sent"
    [oversized]="bad frame from replicad: .*length"
)
seek=100
for lie in welcome-future ack-unsent oversized; do
    note "lie: $lie"
    mark=$(dmesg_mark)
    replica_before=$(digest_of "$replica" "$mib")
    proxy_start "$lie"
    dd if=/dev/urandom of=/dev/mapper/arepl-liar bs=64k count=8 seek=$seek oflag=direct status=none
    seek=$((seek + 100))
    retry_briefly grep -q "^lie: " /tmp/liar-proxy.log || fail "the proxy never told its lie"
    want=${logged[$lie]}
    retry_briefly bash -c 'dmesg | tail -n "+$(($1 + 1))" | grep -q "$2"' _ "$mark" "$want" ||
        fail "$lie: the module did not log '$want'"
    echo "logged: $(dmesg_since "$mark" | grep -m1 "$want")"
    if [[ $lie == welcome-future ]]; then
        # Nothing may be streamed after a Welcome the device cannot continue, and
        # nothing freed. (After the other lies an honest Welcome of the next session
        # acknowledges what replicad applied; the final comparison checks those.)
        (($(status_field arepl-liar queued) > 0)) || fail "the queue was emptied on a lie"
        [[ $(digest_of "$replica" "$mib") == "$replica_before" ]] ||
            fail "the replica changed after a Welcome from the future"
        [[ $(status_field arepl-liar link) != connected ]] || fail "connected after the lie"
    fi
    proxy_stop
done
dmsetup status arepl-liar

note "an honest link again: everything drains, the replica equals the primary"
proxy_start honest
wait_connected arepl-liar 60
wait_drained arepl-liar
assert_same_image "$disk" "$replica" "$mib"
dmsetup remove arepl-liar
proxy_stop
replicad_stop "$state"
