#!/usr/bin/env bash
# Guest half of `make demo` (runs inside the VM started by scripts/demo.sh): two sites
# in network namespaces, replicad on the DR side, an arepl device on the production
# side, a write load, and the replica checked against the primary.
set -euo pipefail
source "$(dirname "$0")/../tests/vm/lib.sh"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

primary=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)

step "Two sites: namespace prod (10.90.0.1) and namespace dr (10.90.0.2), joined by veth"
net_setup
ip -n prod -brief addr show prod0
ip -n dr -brief addr show dr0

step "DR site: replicad applies the stream to $replica (blank: the initial copy fills it)"
replicad_start "$replica" /tmp/demo-state
echo "replicad listening on 10.90.0.2:7788 (log: /tmp/demo-state/replicad.log)"

step "Production site: load dm-arepl and put replication on $primary"
show insmod "$MODULE_KO"
show ip netns exec prod "$AREPL" create demo --dev "$primary" --primary 10.90.0.2:7788 --queue-mb 32
show dmsetup table demo
wait_connected demo
show "$AREPL" status

step "Write 128 MiB of random data through /dev/mapper/demo (direct I/O, 4 KiB-1 MiB)"
echo "$ fio --rw=randwrite --bsrange=4k-1m --size=128M --iodepth=16 --direct=1 ..."
fio --name=demo --filename=/dev/mapper/demo --rw=randwrite --bsrange=4k-1m --size=128M \
    --direct=1 --ioengine=libaio --iodepth=16 --refill_buffers --norandommap |
    grep -E '^ *WRITE:'
show "$AREPL" status

step "Wait until the initial copy and every write are acknowledged by the DR site"
wait_status demo consistent 1 600
wait_drained demo
show "$AREPL" status

step "The replica is byte-identical to the primary"
assert_same_image "$primary" "$replica" "$(($(sectors_of "$primary") / 2048))"
echo "identical"

step "Tear down"
show "$AREPL" remove demo
replicad_stop /tmp/demo-state
show rmmod dm_arepl
echo "demo complete"
