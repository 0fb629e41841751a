# What both ends of the benchmark's link between two VMs do for themselves (sourced by
# bench-guest.sh on the primary and bench-dr-guest.sh on the DR side): shaping
# their own outgoing traffic, running one DRBD node, and counting their CPU time.
# shellcheck shell=bash

DRBDSETUP=/usr/lib/drbd/drbdsetup-84
DRBD_PORT=7789
# The pre-shared key of system arepl-tls on both ends: a fixed one (a benchmark keeps
# no secret), written by each machine for itself.
BENCH_KEY_FILE=/tmp/bench.key

bench_key() {
    (umask 077; printf '%064d\n' 7 >"$BENCH_KEY_FILE")
}

# Shapes what leaves network device $1 for network $2: 0ms (as it is), Nms (half the
# round trip: the other end delays its own half), 100mbit (tbf, no added delay).
shape_egress() {
    tc qdisc del dev "$1" root 2>/dev/null || true
    case $2 in
        0ms) ;;
        *ms) tc qdisc add dev "$1" root netem delay "$((${2%ms} / 2))ms" limit 100000 ;;
        100mbit) tc qdisc add dev "$1" root tbf rate 100mbit burst 256kb latency 200ms ;;
        *) fail "unknown network $2" ;;
    esac
}

# Brings up DRBD 8.4 resource r0 (minor 0, protocol A, default buffers) on disk $1 with
# fresh internal metadata, connecting from address $2 to the peer at $3. Both nodes
# run this; the primary then takes the role (drbd_take_primary).
drbd_node_up() {
    local disk=$1 me=$2 peer=$3
    [[ -x $DRBDSETUP ]] || fail "no $DRBDSETUP"
    grep -q '^version: 8\.4' /proc/drbd || fail "no DRBD 8.4 in this kernel: $(head -n1 /proc/drbd 2>&1)"
    local out
    out=$(drbdmeta --force 0 v08 "$disk" internal create-md < <(yes) 2>&1) ||
        fail "drbdmeta create-md on $disk: $out"
    "$DRBDSETUP" new-resource r0
    "$DRBDSETUP" new-minor r0 0 0
    "$DRBDSETUP" attach 0 "$disk" "$disk" internal
    "$DRBDSETUP" connect r0 "ipv4:$me:$DRBD_PORT" "ipv4:$peer:$DRBD_PORT" --protocol=A
}

# On the primary node, once both are up: both start from the same, unwritten history
# (no initial resync), and this node becomes primary.
drbd_take_primary() {
    local i
    for i in $(seq 600); do
        grep -q '^ 0: cs:Connected' /proc/drbd && break
        sleep 0.1
    done
    "$DRBDSETUP" new-current-uuid --clear-bitmap 0
    "$DRBDSETUP" primary 0
    grep -q '^ 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate A' /proc/drbd ||
        fail "DRBD did not become primary: $(cat /proc/drbd)"
}

drbd_node_down() { "$DRBDSETUP" down r0 2>/dev/null || true; }

# CPU seconds this machine spent busy so far (user, nice, system, irq, softirq).
busy_seconds() {
    awk -v tick="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8) / tick }' /proc/stat
}
