# I/O through an arepl device reaches the local disk byte-exact, at the right offsets,
# with flushes passed down; the replica follows.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
spare=$(disk_by_serial arepl2)
size=$(sectors_of "$disk")
state=/tmp/state-local-io
remove_if_present arepl-io arepl-split
initial_sync "$disk" "$replica"
replicad_start "$replica" "$state"

arepl_create arepl-io "$disk"
dev=/dev/mapper/arepl-io
[[ -b $dev ]] || fail "$dev does not exist after dmsetup create"
[[ $(sectors_of "$dev") == "$size" ]] || fail "device size $(sectors_of "$dev") != $size sectors"
# Small writes are copied from their pages in map: those must not change in flight.
[[ $(cat "/sys/block/$(basename "$(readlink -f "$dev")")/queue/stable_writes") == 1 ]] ||
    fail "the device does not ask for stable writes"

majmin=$(printf '%d:%d' "$(stat -c '0x%t' "$disk")" "$(stat -c '0x%T' "$disk")")
expected_table="0 $size arepl $majmin $PRIMARY_ADDR 1 queue_mb:64"
[[ $(dmsetup table arepl-io) == "$expected_table" ]] ||
    fail "dmsetup table: '$(dmsetup table arepl-io)', expected '$expected_table'"

note "fio: 64 MiB of random data, direct I/O, verified through the device"
fio --name=fill --filename="$dev" --rw=randwrite --bs=64k --size=64M \
    --direct=1 --ioengine=libaio --iodepth=16 --refill_buffers --randrepeat=0 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output-format=terse >/dev/null ||
    fail "fio write or verify through $dev failed"

images_equal "$dev" "$disk" 64 || fail "$dev and $disk differ"
[[ $(digest_of "$disk" 64) != $(digest_of /dev/zero 64 2>/dev/null) ]] ||
    fail "the disk holds only zeros: fio wrote nothing"

note "fsync after every write: flushes pass down"
fio --name=flush --filename="$dev" --rw=write --bs=4k --size=1M --direct=1 \
    --fsync=1 --output-format=terse >/dev/null || fail "fio with fsync failed"

status=$(dmsetup status arepl-io)
note "status: $status"
read -r _ _ target _ <<<"$status"
[[ $target == arepl ]] || fail "status names target '$target'"
(($(status_field arepl-io writes) >= 1024)) || fail "expected at least 1024 writes (64 MiB of 64 KiB)"
(($(status_field arepl-io reads) > 0)) || fail "the verify pass read nothing"
(($(status_field arepl-io flushes) > 0)) || fail "fsync flushes did not reach the target"
(($(status_field arepl-io map_copies) > 0)) || fail "no random 64 KiB write was copied in map"

wait_drained arepl-io
assert_same_image "$disk" "$replica" "$((size / 2048))"

note "a later table copies nothing in map: a file system mounted under the table before it would not keep its pages stable"
table=$(dmsetup table arepl-io)
ip netns exec prod dmsetup reload arepl-io --table "0 $size linear $disk 0"
ip netns exec prod dmsetup resume arepl-io
ip netns exec prod dmsetup reload arepl-io --table "$table"
ip netns exec prod dmsetup resume arepl-io
fio --name=later --filename="$dev" --rw=randwrite --bs=4k --size=4M --io_size=2M --direct=1 \
    --ioengine=libaio --iodepth=4 --randrepeat=0 --output-format=terse >/dev/null ||
    fail "fio through the reloaded table failed"
(($(status_field arepl-io writes) >= 512)) || fail "the reloaded table saw $(status_field arepl-io writes) writes"
(($(status_field arepl-io map_copies) == 0)) || fail "the reloaded table copied writes in map"
wait_drained arepl-io
assert_same_image "$disk" "$replica" "$((size / 2048))"
dmsetup remove arepl-io
replicad_stop "$state"

note "two-target table: arepl behind 2048 linear sectors maps with its own offset"
split_state=/tmp/state-split
split_target=/tmp/split-replica.img
truncate -s $(((size - 2048) * 512)) "$split_target"
replicad_start "$split_target" "$split_state" 7789
pattern=$(mktemp)
head -c 4M /dev/urandom >"$pattern"
printf '0 2048 linear %s 0\n2048 %d arepl %s 10.90.0.2:7789\n' "$spare" $((size - 2048)) "$disk" |
    ip netns exec prod dmsetup create arepl-split
dd if="$pattern" of=/dev/mapper/arepl-split bs=512 seek=$((2048 + 8192)) oflag=direct status=none
cmp <(dd if="$disk" bs=512 skip=8192 count=8192 iflag=direct status=none) "$pattern" ||
    fail "data written at arepl offset 8192 is not at disk sector 8192"
wait_drained arepl-split
cmp <(dd if="$split_target" bs=512 skip=8192 count=8192 status=none) "$pattern" ||
    fail "the replica does not hold the pattern at sector 8192"
dmsetup remove arepl-split
replicad_stop "$split_state"
note "local I/O byte-exact; replica identical"
