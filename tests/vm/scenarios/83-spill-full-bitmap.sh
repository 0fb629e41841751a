# on_spill_full:bitmap (the default with a spill device): when the memory queue and the
# spill log are full and no link is up, writers go on at local speed and their regions
# are tracked; status says tracking and consistent=0. When the links return, the spill
# log drains, replicad protects its last consistent image with an LVM snapshot (a
# prefix state of the stamped writes), only the tracked regions are resynced, the
# snapshot is dropped, and the replica ends equal to the primary.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-bitmap
disk=$(disk_by_serial arepl0)
drdisk=$(disk_by_serial arepl1)
spare=$(disk_by_serial arepl2)
stamplog=/tmp/bitmap-stamp.log
remove_if_present arepl-bm bm-p bm-s
rm -rf "$state" "$stamplog"
sectors=262144 # 128 MiB volume
dmsetup create bm-p --table "0 $sectors linear $disk 0"
dmsetup create bm-s --table "0 8192 linear $spare 0" # 4 MiB spill device
bitmap_cleanup() {
    local rc=$?
    replicad_stop "$state" KILL
    remove_if_present arepl-bm
    lvremove -q -y vgr >/dev/null 2>&1 || true
    vgremove -q -ff -y vgr >/dev/null 2>&1 || true
    pvremove -q -ff -y "$drdisk" >/dev/null 2>&1 || true
    remove_if_present bm-p bm-s
    links_restore_both
    cleanup_after_failure "$rc"
}
trap bitmap_cleanup EXIT
pvcreate -q -ff -y "$drdisk" >/dev/null
vgcreate -q vgr "$drdisk" >/dev/null
lvcreate -q -y -n replica -L 128M vgr >/dev/null
spill_blank /dev/mapper/bm-s
# The stamp checker knows zeroes and its own writes: earlier scenarios' data must go.
dd if=/dev/zero of=/dev/mapper/bm-p bs=1M count=32 oflag=direct status=none
initial_sync /dev/mapper/bm-p /dev/vgr/replica
replicad_start /dev/vgr/replica "$state"
arepl_create arepl-bm /dev/mapper/bm-p "$PRIMARY_ADDR 4 queue_mb:2 volume:bm spill:/dev/mapper/bm-s resync_mbps:2"
wait_connected arepl-bm

note "stamped writes over the first 32 MiB, replicated"
"$AREPL_STAMP" write --dev /dev/mapper/arepl-bm --blocks 8192 --count 1500 --seed 11 --jobs 2 \
    --fsync-every 4 --log "$stamplog" >/dev/null || fail "stamped writes failed"
wait_drained arepl-bm

note "both links cut: 24 MiB more overflow the 2 MiB queue and the 4 MiB spill log"
links_cut_both
wait_status arepl-bm active_link none 20
start=$SECONDS
timeout 180 "$AREPL_STAMP" write --dev /dev/mapper/arepl-bm --blocks 8192 --count 6000 --seed 12 \
    --jobs 2 --log "$stamplog" >/dev/null || fail "writers did not finish while the spill log was full"
note "6000 writes in $((SECONDS - start)) s with no link"
[[ $(status_field arepl-bm mode) == tracking ]] || fail "mode is $(status_field arepl-bm mode), not tracking"
[[ $(status_field arepl-bm consistent) == 0 ]] || fail "consistent=1 while regions are tracked"
dirty=$(status_field arepl-bm dirty_bytes)
((dirty > 0)) || fail "no dirty regions tracked"
# Not `dmesg | grep -q`: grep stops at the match, dmesg then dies of SIGPIPE on a long
# log, and pipefail turns the match into a failure.
grep -q "writes are no longer queued" <<<"$(dmesg)" || fail "the kernel log does not say writes are tracked"
note "dirty_bytes=$dirty spill_entries=$(status_field arepl-bm spill_entries)"

note "links back: the spill log drains, then the tracked regions resync"
links_restore_both
wait_status arepl-bm resyncs 1 60
snapshot=/dev/vgr/replica_arepl_resync
# Once lvcreate is done: its device node comes and goes while it works.
for i in $(seq 150); do grep -q "LVM snapshot vgr/replica_arepl_resync of" "$state/replicad.log" && break; sleep 0.2; done
grep "LVM snapshot vgr/replica_arepl_resync of" "$state/replicad.log" ||
    fail "replicad took no LVM snapshot before the resync"
udevadm settle
verdict=$("$AREPL_STAMP" check --image "$snapshot" --log "$stamplog" --blocks 8192) ||
    fail "the protected snapshot is no prefix state: $verdict"
note "snapshot: ${verdict%% (*}"
total=$(status_field arepl-bm sync_total_bytes)
((total > 0 && total <= dirty)) || fail "the resync covers $total bytes, tracked were $dirty"
wait_status arepl-bm consistent 1 300
wait_drained arepl-bm 300
for i in $(seq 100); do [[ -e $snapshot ]] || break; sleep 0.2; done
[[ -e $snapshot ]] && fail "the protection snapshot is still there after the resync"
note "resynced $total of $((sectors * 512)) bytes"
assert_same_image /dev/mapper/bm-p /dev/vgr/replica 128
ip netns exec dr "$REPLICAD" status --state-dir "$state" --check-consistent ||
    fail "replicad does not call its replica consistent"
dmsetup remove arepl-bm
replicad_stop "$state"
dmesg_assert_clean
