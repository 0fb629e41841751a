# arepl convert puts replication under a mounted ext4 LV while a writer runs: no I/O
# error, the mount stays, the initial copy plus the stream make the replica equal to
# the LV; the replica passes fsck -n and holds the same files. status --json validates
# against docs/status-json.schema.json. arepl revert restores the original table and
# the LV still mounts.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-lvm
pv=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
mnt=/tmp/arepl-lv
rmnt=/tmp/arepl-replica
lvm_setup "$pv" "$state" "$rmnt" "$mnt"

note "LVM on the production disk: vgp/data (128 MiB, ext4, mounted), vgp/spill (32 MiB)"
lvcreate -q -y -n data -L 128M vgp >/dev/null
lvcreate -q -y -n spill -L 32M vgp >/dev/null
mkfs.ext4 -q -F /dev/vgp/data
mkdir -p "$mnt" "$rmnt"
mount /dev/vgp/data "$mnt"
for i in 1 2 3; do
    dd if=/dev/urandom of="$mnt/before-$i" bs=1M count=4 status=none
done
original_table=$(dmsetup table vgp-data)
note "original table: $original_table"
dd if=/dev/urandom of="$replica" bs=1M count=128 oflag=direct status=none # replica holds junk
replicad_start "$replica" "$state"

note "writer: fio in the filesystem, 4k-64k random writes with fsync, 20 s"
fio --name=writer --directory="$mnt" --size=8M --nrfiles=4 --rw=randwrite --bsrange=4k-64k \
    --ioengine=psync --fsync=16 --time_based --runtime=20 --output-format=terse \
    >/tmp/lvm-fio.out 2>&1 &
fio_pid=$!
sleep 4
mark=$(dmesg_mark)
note "convert while it writes"
ip netns exec prod "$AREPL" convert vgp/data --primary "$PRIMARY_ADDR" --queue-mb 16 --spill vgp/spill ||
    fail "arepl convert failed"
dmsetup table vgp-data | grep -q " arepl " || fail "vgp-data has no arepl table"
[[ $(dmsetup table vgp-data-arepl_real) == "$original_table" ]] ||
    fail "the hidden device does not hold the original table"
mountpoint -q "$mnt" || fail "the mount is gone"
wait "$fio_pid" || { cat /tmp/lvm-fio.out >&2; fail "the writer saw an error"; }
note "writer finished without error; mount still there"
(($(status_field vgp-data map_copies) == 0)) ||
    fail "the converted LV copied writes in map: its mounted file system does not keep pages stable"
"$AREPL" status
"$AREPL" status vgp/data --json >/tmp/status.json
python3 - /tmp/status.json "$REPO_ROOT/docs/status-json.schema.json" <<'PY' || fail "status --json does not match the schema"
import json, sys, jsonschema
doc = json.load(open(sys.argv[1]))
jsonschema.validate(doc, json.load(open(sys.argv[2])))
dev = doc["devices"][0]
assert dev["name"] == "vgp-data" and dev["lv"] == "vgp/data", dev
assert dev["spill"] is not None and dev["spill"]["capacity_bytes"] > 0, dev
assert dev["initial_sync"]["total_bytes"] == 128 << 20, dev
print("status --json valid:", json.dumps(dev["initial_sync"]), "mode", dev["mode"])
PY
"$AREPL" status --json | python3 -c 'import json,sys; assert len(json.load(sys.stdin)["devices"]) == 1' ||
    fail "status --json of all devices is not one device"
for i in 1 2 3; do
    dd if=/dev/urandom of="$mnt/after-$i" bs=1M count=2 status=none
done

note "freeze, drain, compare"
fsfreeze -f "$mnt"
wait_status vgp-data consistent 1 300
wait_drained vgp-data 300
assert_same_image /dev/vgp/data "$replica" 128
(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >/tmp/primary.sums
fsfreeze -u "$mnt"
replicad_stop "$state"
fsck.ext4 -n -f "$replica" || fail "fsck -n on the replica found problems"
mount -o ro,noload "$replica" "$rmnt"
(cd "$rmnt" && sha256sum --quiet -c /tmp/primary.sums) || fail "replica files differ"
note "replica: fsck clean, $(wc -l </tmp/primary.sums) files with the same checksums"
umount "$rmnt"
dmesg_since "$mark" | grep -iE 'I/O error|buffer i/o|EXT4-fs error' >&2 && fail "I/O errors in dmesg"

note "revert (replicad back, so the queue drains)"
replicad_start "$replica" "$state"
dd if=/dev/urandom of="$mnt/during-revert" bs=1M count=1 conv=fsync status=none
"$AREPL" revert vgp/data --timeout 120 || fail "arepl revert failed"
[[ $(dmsetup table vgp-data) == "$original_table" ]] || fail "original table not restored"
dmsetup info vgp-data-arepl_real >/dev/null 2>&1 && fail "hidden device still there"
mountpoint -q "$mnt" || fail "the mount is gone after revert"
(cd "$mnt" && sha256sum -c --quiet /tmp/primary.sums) || fail "files changed across revert"
umount "$mnt"
mount /dev/vgp/data "$mnt" || fail "the LV does not mount after revert"
(cd "$mnt" && sha256sum -c --quiet /tmp/primary.sums) || fail "files changed after remount"
note "reverted: original table back, LV mounts, files intact"
true
