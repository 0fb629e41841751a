# arepl refuses clearly and changes nothing: an inactive or missing LV, a missing spill
# LV, a second convert, reverting what is not converted, reverting with writes not yet
# acknowledged. Messages go through the CLI; up/down apply /etc/arepl-style files, and
# a clean down lets the next up skip the initial copy. revert --force says what it loses.
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-refusals
pv=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
conf=/tmp/arepl-conf
lvm_setup "$pv" "$state"

lvcreate -q -y -n data -L 64M vgp >/dev/null
lvcreate -q -y -n idle -L 8M vgp >/dev/null
lvchange -q -an vgp/idle
replicad_start "$replica" "$state"
convert() { ip netns exec prod "$AREPL" convert "$@" --primary "$PRIMARY_ADDR" --queue-mb 8; }

# Runs an arepl command that must fail with a message matching $1; the device list and
# the table of vgp-data must not change.
refused() {
    local want=$1 before after table_before out
    shift
    before=$(dmsetup ls | sort)
    table_before=$(dmsetup table vgp-data)
    if out=$("$@" 2>&1); then
        fail "succeeded, expected a refusal: $*"
    fi
    echo "refused: $*"
    echo "  $out"
    [[ $out == *"$want"* ]] || fail "message lacks '$want'"
    after=$(dmsetup ls | sort)
    [[ $before == "$after" ]] || fail "devices changed: $before -> $after"
    [[ $(dmsetup table vgp-data) == "$table_before" ]] || fail "vgp-data's table changed"
}

original_table=$(dmsetup table vgp-data)
refused "is not active: activate it first (lvchange -ay vgp/idle)" convert vgp/idle
refused "logical volume vgp/nope does not exist" convert vgp/nope
refused "spill device vgp/nospill: logical volume vgp/nospill does not exist" \
    convert vgp/data --spill vgp/nospill
refused "spill device /dev/nonexistent does not exist" convert vgp/data --spill /dev/nonexistent
refused "is not converted" "$AREPL" revert vgp/data
refused "not a logical volume name" convert data

note "convert, then convert again"
convert vgp/data --initial-sync none
table=$(dmsetup table vgp-data)
refused "vgp/data is already converted" convert vgp/data
wait_connected vgp-data

note "messages through the CLI"
"$AREPL" pause vgp/data
[[ $(status_field vgp-data paused) == 1 ]] || fail "pause did not pause"
"$AREPL" resume vgp/data
[[ $(status_field vgp-data paused) == 0 ]] || fail "resume did not resume"
refused "refused message 'switch-link'" "$AREPL" switch-link vgp/data
refused "no device vgp-nothing" "$AREPL" status vgp/nothing

note "revert with writes the replica has not acknowledged (links cut)"
links_cut_both
dd if=/dev/urandom of=/dev/vgp/data bs=64k count=16 oflag=direct status=none
refused "16 writes (" "$AREPL" revert vgp/data --timeout 3
refused "nothing changed" "$AREPL" revert vgp/data --timeout 1
links_restore_both
wait_drained vgp-data 120

note "up/down from a configuration directory"
mkdir -p "$conf"
printf 'lv = "vgp/data"\nprimary = "%s"\nqueue_mb = 8\n' "$PRIMARY_ADDR" >"$conf/data.toml"
printf 'lv = 3\n' >"$conf/broken.toml"
out=$(ip netns exec prod "$AREPL" up --config-dir "$conf" 2>&1) && fail "up with a broken file succeeded"
echo "$out"
[[ $out == *"broken.toml"* ]] || fail "up does not name the broken file"
[[ $out == *"vgp/data is already up"* ]] || fail "up did not see vgp/data up"
rm "$conf/broken.toml"
rm -f /var/lib/arepl/data.clean
"$AREPL" down --config-dir "$conf" || fail "down failed"
[[ $(dmsetup table vgp-data) == "$original_table" ]] || fail "down did not revert"
[[ -f /var/lib/arepl/data.clean ]] || fail "a clean down left no marker"
ip netns exec prod "$AREPL" up --config-dir "$conf" | tee /tmp/up.out
grep -q "taken down cleanly last time; no initial copy" /tmp/up.out || fail "up copies after a clean down"
[[ $(dmsetup table vgp-data) != *sync:full* ]] || fail "table asks for a copy"
[[ ! -f /var/lib/arepl/data.clean ]] || fail "marker not consumed"
wait_connected vgp-data

note "revert --force with unacknowledged writes"
links_cut_both
dd if=/dev/urandom of=/dev/vgp/data bs=64k count=8 oflag=direct status=none
"$AREPL" revert vgp/data --force | tee /tmp/force.out
grep -q "forced: 8 writes (" /tmp/force.out || fail "revert --force does not say what is lost"
[[ $(dmsetup table vgp-data) == "$original_table" ]] || fail "forced revert did not restore the table"
links_restore_both
"$AREPL" down --config-dir "$conf" | grep -q "data: not up" || fail "down of a reverted volume"

note "convert loads the module when the kernel lacks the target"
rmmod dm_arepl
refused "modprobe dm_arepl\` did not load it" convert vgp/data
mount -t tmpfs modules /lib/modules # the host's /lib is read-only in the guest
mkdir -p "/lib/modules/$(uname -r)/extra"
cp "$MODULE_KO" "/lib/modules/$(uname -r)/extra/"
depmod -a 2>/dev/null # warns about files a tmpfs lacks
convert vgp/data --initial-sync none
module_loaded || fail "convert did not load the module"
# The reloaded module has no record of the replica's history (and the forced revert
# dropped writes the replica lacks): the device is refused, not continued blindly.
wait_status vgp-data refused 1 20
"$AREPL" revert vgp/data --force
umount /lib/modules
true
