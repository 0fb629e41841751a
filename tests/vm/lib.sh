# Helpers for VM scenarios; sourced inside the guest by each scenario.
# shellcheck shell=bash
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODULE_KO="$REPO_ROOT/kmod/dm-arepl.ko"
# Link addresses for table lines; nothing listens there until replication exists.
PRIMARY_ADDR=10.90.0.2:7788
BACKUP_ADDR=10.91.0.2:7788

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

note() { echo "--- $*"; }

# The guest device of the virtio disk with serial $1 (scripts/vm-run.sh names them).
disk_by_serial() {
    local serial=$1 dev
    for dev in /sys/block/vd*; do
        if [[ -r $dev/serial && $(<"$dev/serial") == "$serial" ]]; then
            echo "/dev/${dev##*/}"
            return 0
        fi
    done
    fail "no virtio disk with serial $serial"
}

sectors_of() { blockdev --getsz "$1"; }

module_loaded() { grep -q '^dm_arepl ' /proc/modules; }

load_module() {
    module_loaded || insmod "$MODULE_KO"
}

# Kernel log lines after a mark taken with dmesg_mark.
dmesg_mark() { dmesg | wc -l; }
dmesg_since() { dmesg | tail -n "+$(($1 + 1))"; }

sha_of() { # device, MiB from the start
    dd if="$1" bs=1M count="$2" iflag=direct status=none | sha256sum | cut -d' ' -f1
}

remove_if_present() {
    local name
    for name in "$@"; do
        if dmsetup info "$name" >/dev/null 2>&1; then
            dmsetup remove "$name"
        fi
    done
}
