# dmsetup message: switch-link moves the stream, pause stops it while writes queue up,
# resume drains them; unknown messages are refused.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup messages arepl-msg arepl-single
arepl_create arepl-msg "$disk" "$PRIMARY_ADDR $BACKUP_ADDR"
wait_status arepl-msg active_link primary

dmsetup message arepl-msg 0 switch-link
wait_status arepl-msg active_link backup 15
dmsetup message arepl-msg 0 switch-link
wait_status arepl-msg active_link primary 15

dmsetup message arepl-msg 0 pause
wait_status arepl-msg paused 1 5
wait_status arepl-msg active_link none 15
dd if=/dev/urandom of=/dev/mapper/arepl-msg bs=64k count=64 oflag=direct status=none
queued=$(status_field arepl-msg queued)
((queued >= 64)) || fail "paused, but only $queued entries queued after 64 writes"
sleep 2
(($(status_field arepl-msg queued) == queued)) || fail "entries left the queue while paused"
dmsetup message arepl-msg 0 resume
wait_status arepl-msg paused 0 5
wait_drained arepl-msg 60

mark=$(dmesg_mark)
dmsetup message arepl-msg 0 fly 2>/dev/null && fail "unknown message accepted"
dmesg_since "$mark" | grep -q "unknown message" || fail "no dmesg line for the unknown message"
assert_same_image "$disk" "$replica" "$(($(sectors_of "$disk") / 2048))"
dmsetup remove arepl-msg

arepl_create arepl-single "$disk" "$PRIMARY_ADDR 1 volume:arepl-msg"
dmsetup message arepl-single 0 switch-link 2>/dev/null && fail "switch-link accepted without a backup link"
[[ $(status_field arepl-single backup) == none ]] || fail "backup state not 'none' without a backup link"
dmsetup remove arepl-single
replicad_stop "$state"
