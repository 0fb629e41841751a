#!/usr/bin/env bash
# `make bench-quick`: the benchmark's headline figures in a few minutes (see
# tests/vm/bench-quick-guest.sh), printed as ratios to dm-linear. Results stay in
# target/bench-quick/; docs/ is left alone.
#
#   scripts/bench-quick.sh [BASELINE_KO]   (BASELINE_KO: a dm-arepl.ko built from another
#                                           commit, measured as "arepl-baseline")
#
# The DR side runs on this host, not in the guest, so it takes no CPU from the
# primary's (emulated) one: replicad, natively, in a network namespace of its own
# that the bench creates, reached through a tap device that the guest sees as its
# network card; one replicad per arepl run (ports from 7788 on, each with its own
# target and state), since every run's device starts a history of its own, which a
# replica of another history refuses. BENCH_DR=none skips the runs that need it.
# The guest's knobs (BENCH_REPS, BENCH_RUNTIME, BENCH_BURST_MB, BENCH_CASES,
# BENCH_SUSTAINED_S) pass through the environment.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out_dir="$REPO_ROOT/target/bench-quick"
mkdir -p "$out_dir"
results="$out_dir/results.jsonl"
rm -f "$results"
knobs=()
for var in $(compgen -v BENCH_); do knobs+=("$var=${!var}"); done
if [[ -n ${1:-} ]]; then
    [[ -f $1 ]] || die "no module at $1"
    cp "$1" "$out_dir/baseline.ko"
    knobs+=("BENCH_BASELINE_KO=$out_dir/baseline.ko")
fi
# The guest runs a copy: editing the script during a run cannot change what runs.
guest_dir="$out_dir/guest"
rm -rf "$guest_dir"
mkdir -p "$guest_dir"
cp "$REPO_ROOT"/tests/vm/{bench-quick-guest.sh,lib.sh,bench_case.py,bench_link.py,cpu_split.py} \
    "$guest_dir/"
knobs+=("AREPL_REPO_ROOT=$REPO_ROOT")

vm_opts=(--disk-mb 1024 --rwdir "$out_dir")
run=()
if [[ ${BENCH_DR:-host} != none ]]; then
    ns=arepl-bench-$$
    tap=areplt0
    dr_ip=10.77.0.1
    cleanup() {
        [[ -n ${dr_pids:-} ]] && kill $dr_pids 2>/dev/null
        ip netns del "$ns" 2>/dev/null || true
    }
    trap cleanup EXIT
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" tuntap add dev "$tap" mode tap
    ip -n "$ns" addr add "$dr_ip/24" dev "$tap"
    ip -n "$ns" link set "$tap" up
    # Link runs: 2 regimes x repetitions x at most 4 systems.
    dr_runs=$((2 * ${BENCH_REPS:-3} * 4))
    rm -rf "$out_dir/dr"
    for i in $(seq 0 $((dr_runs - 1))); do
        mkdir -p "$out_dir/dr/$i/state"
        truncate -s 1G "$out_dir/dr/$i/replica.img"
        ip netns exec "$ns" "$REPO_ROOT/target/release/replicad" --listen "$dr_ip:$((7788 + i))" \
            --target "$out_dir/dr/$i/replica.img" --state-dir "$out_dir/dr/$i/state" \
            >"$out_dir/dr/$i/replicad.log" 2>&1 &
        dr_pids+=" $!"
    done
    ip netns exec "$ns" python3 "$guest_dir/bench_link.py" sink 5001 >/dev/null &
    dr_pids+=" $!"
    knobs+=("BENCH_DR_ADDR=$dr_ip:7788" "BENCH_DR_RUNS=$dr_runs")
    vm_opts+=(--tap "$tap")
    run=(ip netns exec "$ns")
fi
"${run[@]}" timeout --kill-after=30 3600 "$REPO_ROOT/scripts/vm-run.sh" "${vm_opts[@]}" -- \
    env "${knobs[@]}" "$guest_dir/bench-quick-guest.sh" "$results"
[[ -s $results ]] || die "the guest wrote no results to $results"
"$REPO_ROOT/scripts/bench-quick-report.py" "$results" | tee "$out_dir/summary.txt"
