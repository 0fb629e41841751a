# Helpers for VM scenarios; sourced inside the guest by each scenario.
# shellcheck shell=bash
set -euo pipefail

REPO_ROOT="${AREPL_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
MODULE_KO="$REPO_ROOT/kmod/dm-arepl.ko"
# Link addresses for table lines; nothing listens there until replication exists.
PRIMARY_ADDR=10.90.0.2:7788
BACKUP_ADDR=10.91.0.2:7788

fail() {
    echo "FAIL: $*" >&2
    FAIL_REPORTED=1
    exit 1
}
# A command of the scenario itself that fails under set -e names itself, so the suite's
# summary says why (a failure inside a helper is reported by cleanup_after_failure).
# Bash runs the ERR trap under set +e too, where a scenario expects the failure and
# checks the status itself: only a failure that ends the scenario is reported.
report_failed_command() {
    local status=$1 line=$2 command=$3
    [[ $- == *e* ]] || return 0
    echo "FAIL: line $line: $command (status $status)" >&2
    FAIL_REPORTED=1
}
trap 'report_failed_command $? "$LINENO" "$BASH_COMMAND"' ERR

# The scenario's own background jobs (fio, loops) would keep devices busy.
kill_background_jobs() {
    local job
    for job in $(jobs -p); do
        pkill -9 -P "$job" 2>/dev/null || true
        kill -9 "$job" 2>/dev/null || true
    done
}

# A failed scenario must not leave receivers or devices behind for the next one. The
# status is $1 when another EXIT trap calls this (under set -e, re-raising it with
# `(exit $rc)` there would end that trap before it gets here), else $?.
cleanup_after_failure() {
    local rc=${1:-$?} log
    ((rc == 0)) && return 0
    # Every step runs whatever the one before it returned (a pkill that found no
    # receiver once ended this trap early: the device it left held the disk, and the
    # LVM scenarios after it failed).
    local -
    set +e
    trap - ERR
    [[ -n ${FAIL_REPORTED:-} ]] ||
        echo "FAIL: a command inside a helper failed (status $rc); its output is above" >&2
    for log in $(find /tmp -maxdepth 2 -path '/tmp/state-*/replicad.log' -newermt "@$SCENARIO_STARTED"); do
        echo "--- last lines of $log:" >&2
        tail -n 12 "$log" >&2
    done
    echo "--- last dm_arepl kernel messages:" >&2
    dmesg | grep dm_arepl | tail -n 12 >&2
    kill_background_jobs
    clear_leftovers
    return "$rc"
}

# Kills every receiver, restores the links and removes every arepl device: what a failed
# scenario may leave behind (tests/vm/run.sh also calls it after one that timed out).
clear_leftovers() {
    local pidfile name i -
    set +e
    trap - ERR
    for pidfile in /tmp/state-*/replicad.pid; do
        [[ -f $pidfile ]] && kill -9 "$(cat "$pidfile")" 2>/dev/null
        rm -f "$pidfile"
    done
    # Any receiver or stand-in left, whoever started it, would answer the next
    # scenario's sender.
    pkill -9 -x replicad 2>/dev/null
    pkill -9 -f arepl-lying-proxy 2>/dev/null
    pkill -9 -f tamper_proxy.py 2>/dev/null
    for i in $(seq 50); do pgrep -x replicad >/dev/null || break; sleep 0.1; done
    ip netns exec prod tc qdisc del dev prod0 root 2>/dev/null
    # A cut link would keep every later scenario from connecting (a failed 84 once took
    # 85, 87, 88 and 89 with it).
    links_restore_both
    for name in $(dmsetup ls --target arepl 2>/dev/null | awk '$1 != "No" {print $1}'); do
        echo "cleanup: removing $name (waits for the queue to drain, at most 30 s)" >&2
        dmsetup remove "$name"
    done
    return 0
}
SCENARIO_STARTED=$(date +%s)
trap cleanup_after_failure EXIT

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

# Prints (to stderr, with its trace) and fails on any kernel warning, bug or oops in
# the log so far. $1, if given, is a regular expression for the threads (Comm:) whose
# own known warnings are printed but not failed on (DRBD 8.4's worker warns once
# about a mutex taken while it prepares to sleep).
dmesg_assert_clean() {
    dmesg | python3 -c '
import re, sys
known = re.compile(sys.argv[1]) if sys.argv[1] else None
bad = re.compile(r"WARNING:|BUG:|Oops|Call Trace|kernel panic|UBSAN|refcount_t:|general protection")
reports, report = [], None
for line in sys.stdin:
    if report is None and bad.search(line):
        report = []
        reports.append(report)
    if report is not None:
        report.append(line)
        if "---[ end trace" in line or len(report) > 60:
            report = None
failed = False
for report in reports:
    comm = re.search(r"Comm: (\S+)", "".join(report))
    tolerated = known and comm and known.fullmatch(comm.group(1))
    sys.stderr.write(("known, not failed on:\n" if tolerated else "") + "".join(report))
    failed |= not tolerated
sys.exit(1 if failed else 0)' "${1:-}" || fail "kernel log has warnings or oopses (above)"
}

# Kernel log lines after a mark taken with dmesg_mark.
dmesg_mark() { dmesg | wc -l; }
dmesg_since() { dmesg | tail -n "+$(($1 + 1))"; }

digest_of() { # device, MiB from the start
    "$AREPL_STAMP" digest --image "$1" --mib "$2"
}

remove_if_present() {
    local name
    for name in "$@"; do
        if dmsetup info "$name" >/dev/null 2>&1; then
            dmsetup remove "$name"
        fi
    done
}

# From now on the scenario's end, however it ends, also kills the receiver with state
# directory $1 and removes the devices $2...; a failure still gets cleanup_after_failure.
cleanup_on_exit() {
    CLEANUP_STATE=$1
    shift
    CLEANUP_DEVICES=("$@")
    trap 'cleanup_scenario' EXIT
}
cleanup_scenario() {
    local rc=$?
    replicad_stop "$CLEANUP_STATE" KILL
    remove_if_present "${CLEANUP_DEVICES[@]}"
    cleanup_after_failure "$rc"
}

# --- The two-site network: namespaces "prod" and "dr", joined by two veth pairs,
# one per link (primary 10.90.0.0/24, backup 10.91.0.0/24). Addresses exist only
# inside this guest.
# REPLICAD may name another build (e.g. target/debug/replicad) to run the scenarios with.
REPLICAD=${REPLICAD:-$REPO_ROOT/target/release/replicad}
AREPL_SEND="$REPO_ROOT/target/release/arepl-send"
AREPL_LYING_PROXY="$REPO_ROOT/target/release/arepl-lying-proxy"
AREPL_STAMP="$REPO_ROOT/target/release/arepl-stamp"
AREPL="$REPO_ROOT/target/release/arepl"

net_setup() {
    ip netns list | grep -qw prod && return 0
    ip netns add prod
    ip netns add dr
    ip -n prod link set lo up
    ip -n dr link set lo up
    ip link add prod0 netns prod type veth peer name dr0 netns dr
    ip link add prod1 netns prod type veth peer name dr1 netns dr
    ip -n prod addr add 10.90.0.1/24 dev prod0
    ip -n dr addr add 10.90.0.2/24 dev dr0
    ip -n prod addr add 10.91.0.1/24 dev prod1
    ip -n dr addr add 10.91.0.2/24 dev dr1
    local dev
    for dev in prod0 prod1; do ip -n prod link set "$dev" up; done
    for dev in dr0 dr1; do ip -n dr link set "$dev" up; done
    ip netns exec prod ping -c1 -W2 10.90.0.2 >/dev/null || fail "primary link does not answer"
}

# Starts replicad in the DR namespace (REPLICAD_NETNS, "dr"; empty: this one) on target
# $1 with state in $2, listening on port $3 (default 7788), with the extra arguments in
# REPLICAD_ARGS; logs to $2/replicad.log.
replicad_start() {
    local target=$1 state=$2 port=${3:-7788} run=()
    [[ -n ${REPLICAD_NETNS-dr} ]] && run=(ip netns exec "${REPLICAD_NETNS-dr}")
    mkdir -p "$state"
    # shellcheck disable=SC2086 # REPLICAD_ARGS: extra words, split on purpose
    "${run[@]}" "$REPLICAD" --listen "0.0.0.0:$port" --target "$target" --state-dir "$state" \
        ${REPLICAD_ARGS:-} >>"$state/replicad.log" 2>&1 &
    echo $! >"$state/replicad.pid"
    local i
    for i in $(seq 50); do
        "${run[@]}" ss -ltn 2>/dev/null | grep -q ":$port " && return 0
        sleep 0.1
    done
    cat "$state/replicad.log" >&2
    fail "replicad did not start listening"
}

replicad_stop() { # state dir, signal (default TERM)
    local pid i
    pid=$(cat "$1/replicad.pid" 2>/dev/null) || return 0
    kill "-${2:-TERM}" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # Started by another shell (a background loop), it is no child of this one: wait
    # until it is gone (or a zombie: dead, its files closed), so its mounts and devices
    # are released.
    for i in $(seq 300); do
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == [^Z]* ]] || break
        sleep 0.1
    done
    rm -f "$1/replicad.pid"
}

# "key=value" from the status line of device $1.
status_field() {
    dmsetup status "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# Waits until device $1 has nothing queued (everything acknowledged); $2 seconds at most.
wait_drained() {
    local dev=$1 limit=${2:-120} start=$SECONDS
    while (( $(status_field "$dev" queued) > 0 || $(status_field "$dev" spill_entries) > 0 )); do
        if (( SECONDS - start > limit )); then
            dmsetup status "$dev" >&2
            fail "$dev not drained after ${limit}s"
        fi
        sleep 0.5
    done
}

# The replica must start as a copy of the local device (no initial sync yet):
# copies disk $1 onto disk $2.
initial_sync() {
    dd if="$1" of="$2" bs=4M iflag=direct oflag=direct status=none
}

# Creates arepl device $1 on local disk $2 from the prod namespace, so its links are
# made there; further arguments are appended to the table line.
arepl_create() {
    local name=$1 disk=$2
    shift 2
    ip netns exec prod dmsetup create "$name" --table \
        "0 $(sectors_of "$disk") arepl $disk ${*:-$PRIMARY_ADDR}"
}

# Waits until device $1 reports link=connected; $2 seconds at most.
wait_connected() {
    local dev=$1 limit=${2:-30} start=$SECONDS
    until [[ $(status_field "$dev" link) == connected ]]; do
        (( SECONDS - start > limit )) && { dmsetup status "$dev" >&2; fail "$dev never connected"; }
        sleep 0.2
    done
}

assert_same_image() { # primary device, replica device, MiB
    images_equal "$@" || fail "replica differs from primary"
}

# Whether the first $3 MiB of devices $1 and $2 are equal; notes the outcome, with the
# differing 4 KiB blocks (the first 20) if any.
images_equal() {
    local outcome rc=0
    outcome=$("$AREPL_STAMP" compare "$1" "$2" --mib "$3") || rc=$?
    note "$1 against $2: $outcome"
    ((rc <= 1)) || fail "cannot compare $1 and $2"
    ((rc == 0))
}

# Silently drops all traffic of DR interface $1 (dr0: primary link, dr1: backup link).
link_cut() {
    ip netns exec dr nft add table inet "cut_$1"
    ip netns exec dr nft add chain inet "cut_$1" in '{ type filter hook input priority 0; policy accept; }'
    ip netns exec dr nft add chain inet "cut_$1" out '{ type filter hook output priority 0; policy accept; }'
    ip netns exec dr nft add rule inet "cut_$1" in iifname "$1" drop
    ip netns exec dr nft add rule inet "cut_$1" out oifname "$1" drop
}

link_restore() {
    ip netns exec dr nft delete table inet "cut_$1" 2>/dev/null || true
}

# Waits until status key $2 of device $1 equals $3; $4 seconds at most.
wait_status() {
    local dev=$1 key=$2 want=$3 limit=${4:-30} start=$SECONDS
    until [[ $(status_field "$dev" "$key") == "$want" ]]; do
        if ((SECONDS - start > limit)); then
            dmsetup status "$dev" >&2
            fail "$dev: $key never became $want within ${limit}s"
        fi
        sleep 0.2
    done
    echo "$dev: $key=$want after $((SECONDS - start))s"
}

# Waits until the copy of device $1 has queued $2 bytes (status sync_bytes); 120 s at most.
wait_copied() {
    local dev=$1 bytes=$2 i
    for i in $(seq 600); do
        (($(status_field "$dev" sync_bytes) >= bytes)) && return 0
        sleep 0.2
    done
    fail "$dev: the copy never passed $bytes bytes: $(dmsetup status "$dev")"
}

# Sets disk (arepl0, the primary), replica (arepl1, the DR side) and state
# (/tmp/state-$1); removes leftover devices $2...; copies the primary onto the replica;
# starts replicad.
pair_setup() {
    state=/tmp/state-$1
    shift
    disk=$(disk_by_serial arepl0)
    replica=$(disk_by_serial arepl1)
    remove_if_present "$@"
    initial_sync "$disk" "$replica"
    replicad_start "$replica" "$state"
}

# Waits until device $1 is drained ($2 seconds at most), checks the whole replica
# against the primary, removes the device and stops replicad.
pair_verify_and_teardown() {
    wait_drained "$1" "${2:-120}"
    assert_same_image "$disk" "$replica" "$(($(sectors_of "$disk") / 2048))"
    dmsetup remove "$1"
    replicad_stop "$state"
}

# Runs a command until it succeeds, 20 tries half a second apart.
retry_briefly() {
    local i
    for i in $(seq 20); do
        "$@" && return 0
        sleep 0.5
    done
    return 1
}

# --- LVM scenarios: volume group "vgp" on the production disk.
export LVM_SUPPRESS_FD_WARNINGS=1

# Creates VG vgp on disk $1 (wiping whatever was there) and, from a later failure or
# the end of the scenario on, tears it down again with lvm_teardown; $2 is the
# replicad state directory, further arguments mount points to unmount.
lvm_setup() {
    LVM_PV=$1 LVM_STATE=$2
    shift 2
    LVM_MOUNTS=("$@")
    trap 'lvm_cleanup' EXIT
    pvcreate -q -ff -y "$LVM_PV" >/dev/null
    vgcreate -q vgp "$LVM_PV" >/dev/null
}

lvm_cleanup() {
    local rc=$?
    # A writer still in the file system would keep it mounted, and the volume group
    # would outlive the scenario (scenario 64 once failed with its writer running: the
    # two scenarios after it that use the disk failed too).
    ((rc == 0)) || kill_background_jobs
    lvm_teardown
    cleanup_after_failure "$rc"
}

lvm_teardown() {
    local mnt
    # First: replicad runs in its own mount namespace (ip netns exec), which holds a
    # copy of every mount made before it started (outside the suite, whose mounts are
    # shared), and so keeps the LV open.
    replicad_stop "$LVM_STATE"
    links_restore_both
    for mnt in "${LVM_MOUNTS[@]}"; do
        fsfreeze -u "$mnt" 2>/dev/null || true
    done
    # A killed writer may take a moment to let go of its files.
    for mnt in "${LVM_MOUNTS[@]}"; do
        mountpoint -q "$mnt" || continue
        retry_briefly umount "$mnt" 2>/dev/null || true
    done
    # The LV can stay busy for a moment after its last user is gone.
    dmsetup remove --retry vgp-data 2>/dev/null || true
    dmsetup remove --retry vgp-data-arepl_real 2>/dev/null || true
    retry_briefly vgremove -ff -y vgp >/dev/null 2>&1 || true
    pvremove -ff -y "$LVM_PV" >/dev/null 2>&1 || true
}

# A blank spill device: arepl formats one whose first 4 KiB are zeroes.
# A power loss of the primary: from one instant on, the wrapper devices $2... (its disks)
# take no more writes (each becomes an error target of its size), and the arepl device
# $1 is removed, losing what it held in memory.
power_cut() { # arepl device, wrapper devices...
    local dev=$1 wrapper
    shift
    for wrapper in "$@"; do dmsetup suspend --noflush "$wrapper"; done
    for wrapper in "$@"; do
        dmsetup load "$wrapper" --table "0 $(sectors_of "/dev/mapper/$wrapper") error"
    done
    for wrapper in "$@"; do dmsetup resume "$wrapper"; done
    dmsetup remove "$dev"
}

# Gives wrapper device $1 the table $2, live (after power_cut: the "reboot").
swap_table() { # wrapper device, table
    dmsetup suspend "$1"
    dmsetup load "$1" --table "$2"
    dmsetup resume "$1"
}

spill_blank() {
    dd if=/dev/zero of="$1" bs=4k count=1 oflag=direct status=none
}
# Cuts both links so nothing leaves the production side.
links_cut_both() {
    link_cut dr0
    link_cut dr1
}
links_restore_both() {
    link_restore dr0
    link_restore dr1
}

# Writes a new pre-shared key (64 hex digits, mode 600) to each file named.
new_keys() {
    local file
    for file; do
        (umask 077; head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file"; echo >>"$file")
    done
}

# Loads key file $2 as the logon key $1 (replacing its payload if it exists).
load_key() {
    keyctl padd logon "$1" @u <"$2" >/dev/null
}

# One figure from replicad's metrics endpoint at $1 (inside the DR namespace): the first
# sample whose name, or name and leading labels, is $2, e.g.
# `replicad_metric 127.0.0.1:9477 replicad_durable_sequence`, or
# `replicad_metric 127.0.0.1:9477 'replicad_digest_checks_total{volume="db",result="match"'`.
replicad_metric() {
    ip netns exec dr bash -c 'exec 3<>"/dev/tcp/${1%:*}/${1##*:}" &&
        printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3' _ "$1" |
        awk -v name="$2" 'index($1, name) == 1 &&
            (length($1) == length(name) || substr($1, length(name) + 1, 1) ~ /[{,}]/) {
                print $2; exit
            }'
}
