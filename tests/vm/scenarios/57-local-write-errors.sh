# A write that fails on the local device completes with its error, is counted, and is
# not replicated.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup write-errors arepl-err flaky
sectors=$(sectors_of "$disk")

# dm-flakey that is always "down" and fails every write beneath arepl.
dmsetup create flaky --table "0 $sectors flakey $disk 0 0 1 1 error_writes"
arepl_create arepl-err /dev/mapper/flaky "$PRIMARY_ADDR 1 volume:arepl-err"
wait_connected arepl-err
before=$(digest_of "$replica" 16)

if dd if=/dev/urandom of=/dev/mapper/arepl-err bs=64k count=16 oflag=direct status=none 2>/dev/null; then
    fail "writes to a failing local device succeeded"
fi
errors=$(status_field arepl-err write_errors)
note "status: $(dmsetup status arepl-err)"
((errors > 0)) || fail "write_errors=$errors after failed writes"
(($(status_field arepl-err queued) == 0)) || fail "failed writes were queued for replication"
(($(status_field arepl-err acked_seq) == 0)) || fail "failed writes were sent to the receiver"
[[ $(digest_of "$replica" 16) == "$before" ]] || fail "the replica changed"
dmsetup remove arepl-err
dmsetup remove flaky
replicad_stop "$state"
