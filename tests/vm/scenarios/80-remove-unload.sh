# dmsetup remove releases the device; the module cannot go while in use, then unloads.
source "$(dirname "$0")/../lib.sh"
load_module

disk=$(disk_by_serial arepl0)
dmsetup create arepl-rm --table "0 $(sectors_of "$disk") arepl $disk $PRIMARY_ADDR"
if rmmod dm_arepl 2>/dev/null; then
    fail "rmmod succeeded while an arepl device exists"
fi
module_loaded || fail "module vanished while in use"
dmsetup remove arepl-rm
dmsetup info arepl-rm >/dev/null 2>&1 && fail "arepl-rm still exists after remove"
[[ -z $(dmsetup ls --target arepl | grep -v 'No devices found') ]] || fail "arepl devices remain"

# Nothing must still hold the disk: a fresh exclusive open succeeds.
python3 -c "import os,sys; os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL))" "$disk" ||
    fail "$disk is still held after remove"

rmmod dm_arepl
module_loaded && fail "dm_arepl still loaded after rmmod"
dmsetup targets | grep -q '^arepl ' && fail "arepl target still registered after rmmod"
note "removed and unloaded"
