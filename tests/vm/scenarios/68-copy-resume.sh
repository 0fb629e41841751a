# An initial copy (sync:full) resumes where it stood: a lost link halfway only pauses it,
# and a device removed halfway and created again with the same table line copies only
# the regions its activity log still marks, not the whole volume again. Without a spill
# device the same holds while the module stays loaded (the removed device leaves where
# its copy stood). The replica ends equal to the primary and consistent on both sides.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-resume
disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
spare=$(disk_by_serial arepl2)
remove_if_present arepl-resume resume-s
rm -rf "$state"
dmsetup create resume-s --table "0 32768 linear $spare 0" # 16 MiB spill device
cleanup_on_exit "$state" arepl-resume resume-s
spill_blank /dev/mapper/resume-s
mib=$(($(sectors_of "$disk") / 2048))
dd if=/dev/urandom of="$disk" bs=1M count=96 iflag=fullblock oflag=direct status=none
dd if=/dev/zero of="$replica" bs=1M count=96 oflag=direct status=none
replicad_start "$replica" "$state"
table="$PRIMARY_ADDR 5 queue_mb:8 volume:resume sync:full spill:/dev/mapper/resume-s resync_mbps:8"
arepl_create arepl-resume "$disk" "$table"
total=$(status_field arepl-resume sync_total_bytes)
((total == mib * 1048576)) || fail "sync_total_bytes=$total, expected the volume"
wait_copied arepl-resume $((total / 5))

note "the link is lost for a while: the copy waits and goes on"
link_cut dr0
wait_status arepl-resume active_link none 20
before=$(status_field arepl-resume sync_bytes)
sleep 3
link_restore dr0
wait_connected arepl-resume
wait_copied arepl-resume $((total * 2 / 5))
((before <= $(status_field arepl-resume sync_bytes))) || fail "the copy went back after the link loss"
[[ $(status_field arepl-resume resyncs) == 1 ]] || fail "the link loss started the copy again"

note "removed halfway, created again with the same table line"
done_before=$(status_field arepl-resume sync_bytes)
dmsetup remove arepl-resume
mark=$(dmesg_mark)
arepl_create arepl-resume "$disk" "$table"
wait_status arepl-resume resyncs 1 30
left=$(status_field arepl-resume sync_total_bytes)
note "copied $done_before of $total bytes before the remove; the new device copies $left"
((left > 0 && left <= total - done_before + 8 * 1048576)) ||
    fail "the copy started over: $left bytes to copy after $done_before were done"
dmesg_since "$mark" | grep -q "RESYNC of $left of $total bytes" || fail "no kernel log line about the resumed copy"
wait_status arepl-resume consistent 1 300
wait_drained arepl-resume 300
assert_same_image "$disk" "$replica" "$mib"
ip netns exec dr "$REPLICAD" status --state-dir "$state" --check-consistent ||
    fail "replicad does not call its replica consistent"
dmsetup remove arepl-resume
replicad_stop "$state"

note "without a spill device: a new pairing, removed halfway and created again"
rm -rf "$state"
dd if=/dev/urandom of="$disk" bs=1M count=96 iflag=fullblock oflag=direct status=none
dd if=/dev/zero of="$replica" bs=1M count=96 oflag=direct status=none
replicad_start "$replica" "$state"
plain="$PRIMARY_ADDR 4 queue_mb:8 volume:resume-plain sync:full resync_mbps:8"
arepl_create arepl-resume "$disk" "$plain"
wait_copied arepl-resume $((total * 2 / 5))
done_before=$(status_field arepl-resume sync_bytes)
dmsetup remove arepl-resume
mark=$(dmesg_mark)
arepl_create arepl-resume "$disk" "$plain"
wait_status arepl-resume resyncs 1 30
left=$(status_field arepl-resume sync_total_bytes)
note "copied $done_before of $total bytes before the remove; the new device copies $left"
((left > 0 && left <= total - done_before + 4 * 1048576)) ||
    fail "the copy started over: $left bytes to copy after $done_before were done"
[[ $(status_field arepl-resume consistent) == 0 ]] || fail "consistent=1 with the copy unfinished"
wait_status arepl-resume consistent 1 300
wait_drained arepl-resume 300
assert_same_image "$disk" "$replica" "$mib"
ip netns exec dr "$REPLICAD" status --state-dir "$state" --check-consistent ||
    fail "replicad does not call its replica consistent"
dmsetup remove arepl-resume
replicad_stop "$state"
dmesg_assert_clean
