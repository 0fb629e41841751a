# insmod registers the arepl target type.
source "$(dirname "$0")/../lib.sh"

[[ -f $MODULE_KO ]] || fail "module not built: $MODULE_KO"
module_loaded && fail "dm_arepl is loaded before the suite started"
mark=$(dmesg_mark)
insmod "$MODULE_KO"
module_loaded || fail "dm_arepl missing from /proc/modules after insmod"
dmsetup targets | grep -Eq '^arepl +v0\.5\.0$' ||
    fail "dmsetup targets does not list arepl v0.5.0"
dmesg_since "$mark" | grep -q 'dm_arepl: target registered' ||
    fail "no registration message in dmesg"
note "module loaded, target arepl registered"
