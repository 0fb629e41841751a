# Real I/O through an arepl device reaches the local disk byte-exact.
source "$(dirname "$0")/../lib.sh"
load_module

disk=$(disk_by_serial arepl0)
spare=$(disk_by_serial arepl1)
size=$(sectors_of "$disk")
remove_if_present arepl-io arepl-split

dmsetup create arepl-io --table "0 $size arepl $disk $PRIMARY_ADDR"
dev=/dev/mapper/arepl-io
[[ -b $dev ]] || fail "$dev does not exist after dmsetup create"
[[ $(sectors_of "$dev") == "$size" ]] || fail "device size $(sectors_of "$dev") != $size sectors"

majmin=$(printf '%d:%d' "$(stat -c '0x%t' "$disk")" "$(stat -c '0x%T' "$disk")")
expected_table="0 $size arepl $majmin $PRIMARY_ADDR 1 queue_mb:64"
[[ $(dmsetup table arepl-io) == "$expected_table" ]] ||
    fail "dmsetup table: '$(dmsetup table arepl-io)', expected '$expected_table'"

note "fio: 64 MiB of random data, direct I/O, verified through the device"
fio --name=fill --filename="$dev" --rw=randwrite --bs=64k --size=64M \
    --direct=1 --ioengine=libaio --iodepth=16 --refill_buffers --randrepeat=0 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output-format=terse >/dev/null ||
    fail "fio write or verify through $dev failed"

through_dev=$(sha_of "$dev" 64)
raw_disk=$(sha_of "$disk" 64)
zeros=$(head -c 64M /dev/zero | sha256sum | cut -d' ' -f1)
note "sha256 via arepl: $through_dev"
note "sha256 via disk:  $raw_disk"
[[ $through_dev == "$raw_disk" ]] || fail "checksums differ between $dev and $disk"
[[ $raw_disk != "$zeros" ]] || fail "the disk holds only zeros: fio wrote nothing"

note "fsync after every write: flushes pass down"
fio --name=flush --filename="$dev" --rw=write --bs=4k --size=1M --direct=1 \
    --fsync=1 --output-format=terse >/dev/null || fail "fio with fsync failed"

status=$(dmsetup status arepl-io)
note "status: $status"
read -r _ _ target fields <<<"$status"
[[ $target == arepl ]] || fail "status names target '$target'"
declare -A st
for word in $fields; do st[${word%%=*}]=${word#*=}; done
[[ ${st[mode]} == passthrough ]] || fail "mode=${st[mode]}"
((st[writes] >= 1024)) || fail "writes=${st[writes]}: expected at least 1024 (64 MiB of 64 KiB)"
((st[reads] > 0)) || fail "reads=${st[reads]}: the verify pass read nothing"
((st[flushes] > 0)) || fail "flushes=${st[flushes]}: fsync flushes did not reach the target"

note "two-target table: arepl behind 2048 linear sectors maps with its own offset"
pattern=$(mktemp)
head -c 4M /dev/urandom >"$pattern"
printf '0 2048 linear %s 0\n2048 %d arepl %s %s\n' "$spare" $((size - 2048)) "$disk" "$PRIMARY_ADDR" |
    dmsetup create arepl-split
dd if="$pattern" of=/dev/mapper/arepl-split bs=512 seek=$((2048 + 8192)) oflag=direct status=none
cmp <(dd if="$disk" bs=512 skip=8192 count=8192 iflag=direct status=none) "$pattern" ||
    fail "data written at arepl offset 8192 is not at disk sector 8192"

dmsetup remove arepl-split
dmsetup remove arepl-io
note "passthrough I/O byte-exact"
