# replicad killed -9 with entries applied but not yet durable, and then a sender with a
# new history over the same state directory: the primary device created again (its
# unacknowledged queue gone, as after a primary crash or a forced remove) while replicad
# restarts. Every write of the new device that is acknowledged must be on the replica.
# (replicad used to skip the new device's first entries at restart, taking them for the
# old entries it had applied under the same sequence numbers: acknowledged, never
# written, and nothing said so.)
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

state=/tmp/state-newhist
metrics=127.0.0.1:9477
disk=$(disk_by_serial arepl0)
replica=$(disk_by_serial arepl1)
remove_if_present arepl-hist hist-dr
rm -rf "$state"
initial_sync "$disk" "$replica"
sectors=$(sectors_of "$replica")
# The replica's device makes each flush wait 2 s, so a kill can land while applied
# entries wait for their commit.
dmsetup create hist-dr --table "0 $sectors delay $replica 0 0 $replica 0 0 $replica 0 2000"
cleanup_on_exit "$state" arepl-hist hist-dr
REPLICAD_ARGS="--metrics-listen $metrics" replicad_start /dev/mapper/hist-dr "$state"
arepl_create arepl-hist "$disk" "$PRIMARY_ADDR 1 volume:hist"
wait_connected arepl-hist

note "first history: 64 writes of 64 KiB within the first 32 MiB"
fio --name=first --filename=/dev/mapper/arepl-hist --rw=randwrite --bs=64k --size=32M \
    --io_size=4M --direct=1 --ioengine=psync --randrepeat=0 --refill_buffers \
    --output-format=terse >/dev/null || fail "fio failed"
# Wait until replicad applied a batch that still waits for its commit's flush.
for i in $(seq 100); do
    applied=$(replicad_metric "$metrics" replicad_applied_sequence)
    durable=$(replicad_metric "$metrics" replicad_durable_sequence)
    ((${applied:-0} > ${durable:-0} + 4)) && break
    sleep 0.2
done
((${applied:-0} > ${durable:-0} + 4)) || fail "replicad never had applied entries waiting (applied=$applied durable=$durable)"
note "killing replicad -9 with seq $applied applied, $durable durable"
replicad_stop "$state" KILL

note "the primary device goes away with its queue, and comes back with a new history (sync:full)"
dmsetup message arepl-hist 0 pause
dmsetup remove arepl-hist
dmsetup suspend hist-dr
dmsetup load hist-dr --table "0 $sectors linear $replica 0"
dmsetup resume hist-dr
replicad_start /dev/mapper/hist-dr "$state"
# Its queue lost, the device cannot prove it continues the replica's history: refused.
arepl_create arepl-hist "$disk" "$PRIMARY_ADDR 1 volume:hist"
wait_status arepl-hist refused 1 20
dmsetup remove arepl-hist
arepl_create arepl-hist "$disk" "$PRIMARY_ADDR 2 volume:hist sync:full"
wait_connected arepl-hist
# The new history rewrites everything the first one touched, so the old history's
# dropped entries do not matter: only a write of the new one that is skipped shows.
dd if=/dev/urandom of=/tmp/newhist.bin bs=1M count=32 status=none
dd if=/tmp/newhist.bin of=/dev/mapper/arepl-hist bs=1M oflag=direct status=none
wait_status arepl-hist consistent 1 300
wait_drained arepl-hist 120
note "status: $(dmsetup status arepl-hist)"
grep -E "applied before a restart" "$state/replicad.log" | sed 's/^/    replicad: /'
images_equal "$disk" "$replica" 32 || fail "the replica lacks writes the new device had acknowledged"
dmsetup remove arepl-hist
replicad_stop "$state"
dmsetup remove --retry hist-dr
rm -f /tmp/newhist.bin
dmesg_assert_clean
