# A replica whose durable state is not the primary's history is reported at once, by
# both sides, and stays reported: replicad's state file is given another digest while
# replicad is stopped (as if its durable entries were other writes); at the reconnect the
# module and replicad both find the digests differ. Replication goes on, loudly.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

metrics=127.0.0.1:9477
REPLICAD_ARGS="--metrics-listen $metrics"
pair_setup digest arepl-digest
arepl_create arepl-digest "$disk" "$PRIMARY_ADDR 1 volume:digest"
wait_connected arepl-digest
dd if=/dev/urandom of=/dev/mapper/arepl-digest bs=64k count=64 oflag=direct status=none
wait_drained arepl-digest
[[ $(status_field arepl-digest diverged) == 0 ]] || fail "diverged before anything was done"
checks=$(replicad_metric "$metrics" 'replicad_digest_checks_total{volume="digest",result="match"')
((checks > 0)) || fail "no digest check matched during the stream (checks=$checks)"
note "digest checks matched during the stream: $checks"
replicad_stop "$state"

note "replicad's durable digest changed behind its back"
/usr/bin/python3 - "$state/replicad.state" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
def crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    return c ^ 0xFFFFFFFF
slots = [data[i:i + 512] for i in (0, 512)]
gens = [int.from_bytes(s[8:16], "big") if s[0:4] == b"ARST" else -1 for s in slots]
at = 512 * gens.index(max(gens))
assert data[at + 97] & 1, "the slot has no digest"
data[at + 98] ^= 0x5A
data[at + 508:at + 512] = crc32c(bytes(data[at:at + 508])).to_bytes(4, "big")
open(path, "wb").write(bytes(data))
PY
mark=$(dmesg_mark)
replicad_start "$replica" "$state"
wait_status arepl-digest diverged 1 30
[[ $(status_field arepl-digest consistent) == 0 ]] || fail "a diverged replica is called consistent"
dmesg_since "$mark" | grep -q "REPLICA DIVERGED" || fail "no REPLICA DIVERGED in the kernel log"
for i in $(seq 50); do
    grep -q "REPLICA DIVERGED" "$state/replicad.log" && break
    sleep 0.2
done
grep "REPLICA DIVERGED" "$state/replicad.log" | head -n 1 | sed 's/^/    replicad: /'
grep -q "REPLICA DIVERGED" "$state/replicad.log" || fail "no REPLICA DIVERGED in replicad's log"
[[ $(replicad_metric "$metrics" replicad_diverged) == 1 ]] || fail "replicad_diverged is not 1"
"$AREPL" status | grep -q DIVERGED || fail "arepl status does not show DIVERGED"
"$AREPL" status --json | grep -Eq '"diverged": ?true' || fail "arepl status --json lacks diverged"

note "replication goes on, and the divergence survives restarts of both sides' views"
dd if=/dev/urandom of=/dev/mapper/arepl-digest bs=64k count=16 seek=64 oflag=direct status=none
wait_drained arepl-digest
replicad_stop "$state"
ip netns exec dr "$REPLICAD" status --state-dir "$state" | tee /dev/stderr | grep -q '^DIVERGED' ||
    fail "replicad status does not show the divergence"
replicad_start "$replica" "$state"
dmsetup remove arepl-digest
arepl_create arepl-digest "$disk" "$PRIMARY_ADDR 1 volume:digest"
# A new device has no history of its own; replicad's Acks still say the replica diverged.
wait_status arepl-digest diverged 1 30
dmsetup remove arepl-digest
replicad_stop "$state"
# The kernel log's only warnings here are the expected divergence reports.
dmesg_assert_clean
