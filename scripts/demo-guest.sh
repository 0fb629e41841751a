#!/usr/bin/env bash
# Guest half of `make demo` (runs inside the VM started by scripts/demo.sh).
set -euo pipefail
source "$(dirname "$0")/../tests/vm/lib.sh"
arepl="$REPO_ROOT/target/release/arepl"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "Guest kernel $(uname -r), loading dm-arepl"
show insmod "$MODULE_KO"
show dmsetup targets

disk=$(disk_by_serial arepl0)
step "Create an arepl device on $disk"
show "$arepl" create demo --dev "$disk" --primary "$PRIMARY_ADDR" --queue-mb 32
show dmsetup table demo

step "Write 32 MiB of random data through /dev/mapper/demo (direct I/O)"
show fio --name=demo --filename=/dev/mapper/demo --rw=randwrite --bs=256k --size=32M \
    --direct=1 --ioengine=libaio --iodepth=8 --refill_buffers | grep -E '^ *WRITE:'

step "The local disk holds exactly what was written"
via_arepl=$(sha_of /dev/mapper/demo 32)
via_disk=$(sha_of "$disk" 32)
echo "sha256 through arepl: $via_arepl"
echo "sha256 of the disk:   $via_disk"
[[ $via_arepl == "$via_disk" ]] && echo "identical" || fail "checksums differ"

step "Status"
show "$arepl" status
show dmsetup status demo

step "Refusing a bad table line"
if dmsetup create bad --table "0 8 arepl $disk 10.90.0.2:0" 2>&1; then fail "bad table accepted"; fi
dmesg | grep 'arepl' | tail -n 2

step "Tear down"
show "$arepl" remove demo
show rmmod dm_arepl
echo "demo complete"
