#!/usr/bin/env bash
# Boots the test kernel in QEMU (TCG) with virtme-ng, the host's root filesystem
# mounted read-only over 9p, and extra virtio-blk disks; runs one command in the guest.
#
#   scripts/vm-run.sh [--disk-mb N]... [--rwdir DIR] [--tap IFNAME] [--cpus N] -- COMMAND [ARG...]
#
# Each --disk-mb adds a fresh, sparse virtio-blk disk of N MiB whose serial is
# areplN (N counting from 0); guest scripts find disks by serial, not by name.
# --tap attaches the existing tap device IFNAME (in the network namespace this runs
# in) as the guest's one virtio-net interface, left unconfigured. --cpus sets the
# guest's vCPUs (2).
# The command's output and exit code are the guest's.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

disks_mb=()
rwdirs=()
tap=
cpus=2
while (($#)); do
    case $1 in
        --disk-mb) disks_mb+=("$2"); shift 2 ;;
        --rwdir) rwdirs+=("--rwdir=$2"); shift 2 ;;
        --tap) tap=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --) shift; break ;;
        *) die "unknown option $1" ;;
    esac
done
(($#)) || die "usage: $0 [--disk-mb N]... [--rwdir DIR] [--tap IFNAME] [--cpus N] -- COMMAND [ARG...]"

kdir=$("$REPO_ROOT/scripts/build-kernel.sh")
workdir=$(mktemp -d "${TMPDIR:-/tmp}/arepl-vm.XXXXXX")
trap 'rm -rf "$workdir"' EXIT

qemu_opts=()
for i in "${!disks_mb[@]}"; do
    img="$workdir/disk$i.img"
    truncate -s "${disks_mb[$i]}M" "$img"
    qemu_opts+=("-drive" "file=$img,if=none,id=arepl$i,format=raw,cache=unsafe,aio=threads"
        "-device" "virtio-blk-pci,drive=arepl$i,serial=arepl$i")
done

if [[ -n $tap ]]; then
    # A MAC address of its own per tap: two guests on one bridge must not share QEMU's
    # default one.
    mac=52:54:00:$(md5sum <<<"$tap" | sed 's/^\(..\)\(..\)\(..\).*/\1:\2:\3/')
    qemu_opts+=("-netdev" "tap,id=tap0,ifname=$tap,script=no,downscript=no,vhost=off"
        "-device" "virtio-net-pci,netdev=tap0,mac=$mac")
fi

# The command line travels as one string; quote every word for the guest shell.
guest_cmd=$(printf '%q ' "$@")

# Not exec: the trap must remove the disk images when the VM ends.
"$VNG_VENV/bin/vng" --run "$kdir/arch/x86/boot/bzImage" \
    --disable-kvm --force-9p --cpus "$cpus" --memory 2G --cwd "$REPO_ROOT" ${AREPL_VM_VERBOSE:+--verbose} \
    "${rwdirs[@]}" \
    --qemu-opts="${qemu_opts[*]}" \
    --exec "$guest_cmd"
