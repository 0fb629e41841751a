#!/usr/bin/env bash
# Runs the benchmark's VMs (`make bench` and `make bench-quick`): the primary
# (tests/vm/bench-guest.sh, which measures) and the DR machine
# (tests/vm/bench-dr-guest.sh, one vCPU), and leaves the results in
# OUT_DIR/results.jsonl.
#
#   scripts/bench-vm.sh OUT_DIR [BASELINE_KO]   (BASELINE_KO: a dm-arepl.ko built from
#                                                another commit, measured as
#                                                "arepl-baseline")
#
# The DR side is a VM of its own so that it takes no CPU from the primary guest's, and
# every replicating system gets the same path: the two VMs' network cards are taps on
# one bridge in a network namespace this script creates, and the primary's guest
# starts and stops each system's receiver (replicad, the DRBD peer, nbd-server) through
# the DR machine's agent. BENCH_DR=none skips the runs that need it. The guest's knobs
# (BENCH_*, see tests/vm/bench-guest.sh) pass through the environment.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out_dir=${1:?usage: bench-vm.sh OUT_DIR [BASELINE_KO]}
mkdir -p "$out_dir"
results="$out_dir/results.jsonl"
rm -f "$results"
# What the guest cannot see for itself, for the results' "meta" line.
BENCH_QEMU=$(qemu-system-x86_64 --version | head -n1)
BENCH_HOST_CPUS=$(nproc)
knobs=()
for var in $(compgen -v BENCH_); do knobs+=("$var=${!var}"); done
if [[ -n ${2:-} ]]; then
    [[ -f $2 ]] || die "no module at $2"
    cp "$2" "$out_dir/baseline.ko"
    knobs+=("BENCH_BASELINE_KO=$out_dir/baseline.ko")
fi
# The guests run a copy: editing the scripts during a run cannot change what runs.
guest_dir="$out_dir/guest"
rm -rf "$guest_dir"
mkdir -p "$guest_dir"
cp "$REPO_ROOT"/tests/vm/{bench-guest.sh,bench-dr-guest.sh,bench-nodes.sh,lib.sh} \
    "$REPO_ROOT"/tests/vm/{bench_case.py,bench_link.py,bench_dr_agent.py,cpu_split.py} "$guest_dir/"
knobs+=("AREPL_REPO_ROOT=$REPO_ROOT")

# The primary disk, and a small one for the activity log's spill device.
vm_opts=(--disk-mb 1024 --disk-mb 64 --rwdir "$out_dir")
run=()
if [[ ${BENCH_DR:-vm} != none ]]; then
    ns=arepl-bench-$$
    dr_vm=
    cleanup() {
        [[ -n $dr_vm ]] && kill "$dr_vm" 2>/dev/null
        ip netns del "$ns" 2>/dev/null || true
    }
    trap cleanup EXIT
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add areplbr0 type bridge
    ip -n "$ns" link set areplbr0 up
    for tap in areplp0 arepld0; do
        ip -n "$ns" tuntap add dev "$tap" mode tap
        ip -n "$ns" link set "$tap" master areplbr0
        ip -n "$ns" link set "$tap" up
    done
    # The primary's guest tells the DR machine to quit when it is done with it.
    ip netns exec "$ns" timeout --kill-after=30 10800 "$REPO_ROOT/scripts/vm-run.sh" \
        --cpus 1 --disk-mb 1024 --tap arepld0 -- \
        env "AREPL_REPO_ROOT=$REPO_ROOT" "$guest_dir/bench-dr-guest.sh" >"$out_dir/dr.log" 2>&1 &
    dr_vm=$!
    knobs+=("BENCH_DR_ADDR=10.77.0.1")
    vm_opts+=(--tap areplp0)
    run=(ip netns exec "$ns")
fi
"${run[@]}" timeout --kill-after=30 10800 "$REPO_ROOT/scripts/vm-run.sh" "${vm_opts[@]}" -- \
    env "${knobs[@]}" "$guest_dir/bench-guest.sh" "$results"
if [[ -n ${dr_vm:-} ]]; then
    wait "$dr_vm" || log "the DR machine failed: see $out_dir/dr.log"
    dr_vm=
fi
[[ -s $results ]] || die "the guest wrote no results to $results"
