# A spill device is accepted only blank or holding this volume's own log: another
# volume's log, a damaged header, foreign data and the local device itself are each
# refused with a clear message, and the refused device is left untouched.
source "$(dirname "$0")/../lib.sh"
load_module

disk=$(disk_by_serial arepl0)
spill=$(disk_by_serial arepl2)
remove_if_present arepl-ref
sectors=$(sectors_of "$disk")

expect_spill_refused() { # spill device, expected dmesg text, volume
    local before after mark
    before=$(digest_of "$1" 1)
    mark=$(dmesg_mark)
    if dmsetup create arepl-ref --table \
        "0 $sectors arepl $disk $PRIMARY_ADDR 2 volume:${3:-vol-b} spill:$1" 2>/dev/null; then
        dmsetup remove arepl-ref
        fail "spill device accepted: expected '$2'"
    fi
    dmesg_since "$mark" | grep -F -- "$2" >/dev/null \
        || { dmesg_since "$mark" >&2; fail "no dmesg line with '$2'"; }
    after=$(digest_of "$1" 1)
    [[ $before == "$after" ]] || fail "the refused spill device was modified"
    dmsetup info arepl-ref >/dev/null 2>&1 && fail "a refused device exists"
    note "refused: $(dmesg_since "$mark" | grep -F -- "$2" | head -1 | sed 's/^\[[^]]*\] //')"
}

# Format the device as volume vol-a's log (create and remove, links never used).
spill_blank "$spill"
dmsetup create arepl-ref --table "0 $sectors arepl $disk $PRIMARY_ADDR 2 volume:vol-a spill:$spill"
dmsetup remove arepl-ref
expect_spill_refused "$spill" "holds the spill log of volume vol-a"

# Damage both superblock copies (a byte inside each checksummed slot).
printf '\xff' | dd of="$spill" bs=1 seek=40 conv=notrunc status=none
printf '\xff' | dd of="$spill" bs=1 seek=552 conv=notrunc status=none
sync
expect_spill_refused "$spill" "spill superblocks are damaged" vol-a

# Foreign data: something that is not a spill log.
head -c 4096 /dev/urandom | dd of="$spill" bs=4096 oflag=direct status=none
expect_spill_refused "$spill" "neither blank nor a spill log"

# The local device itself.
expect_spill_refused "$disk" "is the local device itself"

# A missing device.
mark=$(dmesg_mark)
dmsetup create arepl-ref --table "0 $sectors arepl $disk $PRIMARY_ADDR 1 spill:/dev/nonexistent" \
    2>/dev/null && fail "a missing spill device was accepted"
dmesg_since "$mark" | grep -q "cannot open spill device '/dev/nonexistent'" || fail "no message for a missing spill device"

spill_blank "$spill"
