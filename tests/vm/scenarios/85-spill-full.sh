# With on_spill_full:block, when the spill device fills too, writers wait (nothing is
# dropped) and status says why; when a link returns, everything drains and the writers
# finish. (The default, bitmap, is scenario 83.)
source "$(dirname "$0")/../lib.sh"
load_module
net_setup

pair_setup spillfull arepl-sfull arepl-sfull-log
spare=$(disk_by_serial arepl2)
# An 8 MiB spill device: a slice of the spare disk.
dmsetup create arepl-sfull-log --table "0 16384 linear $spare 0"
spill=/dev/mapper/arepl-sfull-log
spill_blank "$spill"
arepl_create arepl-sfull "$disk" "$PRIMARY_ADDR 4 queue_mb:4 volume:fulltest spill:$spill on_spill_full:block"
wait_status arepl-sfull active_link primary

link_cut dr0
wait_status arepl-sfull active_link none 20
fio --name=full --filename=/dev/mapper/arepl-sfull --rw=randwrite --bsrange=4k-128k \
    --size=256M --io_size=24M --direct=1 --ioengine=libaio --iodepth=8 \
    --refill_buffers --randrepeat=0 --norandommap --output-format=terse >/dev/null &
fio_pid=$!
wait_status arepl-sfull mode spill_full 120
sleep 3
kill -0 "$fio_pid" 2>/dev/null || fail "writers finished although memory and spill are full"
dmesg | grep -q "spill device .* is full" || fail "no message about the full spill device"
note "status: $(dmesg | grep 'is full' | tail -1)"
note "restoring the link"
link_restore dr0
wait "$fio_pid" || fail "fio failed"
wait_status arepl-sfull mode replicating 300
((  $(status_field arepl-sfull write_errors) == 0 )) || fail "write errors counted"
pair_verify_and_teardown arepl-sfull 300
dmsetup remove arepl-sfull-log
