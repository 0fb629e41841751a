#!/usr/bin/env python3
"""The table `make bench-quick` prints: each arepl system against dm-linear, per case.

For every case (pattern, block size, queue depth) and system: the median throughput
over the repetitions, its ratio to dm-linear's median, the spread of the per-repetition
ratios (each repetition's runs were back to back), and the ratios of the median p50 and
p99 total latencies.

    bench-quick-report.py RESULTS.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    runs = defaultdict(dict)  # (pattern, bs, qd) -> system -> rep -> case
    for line in open(argv[1]):
        case = json.loads(line)
        key = (case["pattern"], case["bs"], case["iodepth"])
        runs[key].setdefault(case["system"], {})[int(case["rep"])] = case
    systems = sorted({s for by_system in runs.values() for s in by_system if s != "dm-linear"})
    print("Write-path regime (bursts within the queue, link paused): ratio to dm-linear")
    print("(median of repetitions; spread = lowest..highest per-repetition ratio)\n")
    header = f"{'case':<20} {'dm-linear MiB/s':>15}"
    for system in systems:
        header += f" | {system + ' MiB/s':>22} {'ratio':>6} {'spread':>11} {'p50':>5} {'p99':>5}"
    print(header)
    print("-" * len(header))
    for key in sorted(runs, key=lambda k: (k[0], size(k[1]), k[2])):
        by_system = runs[key]
        linear = by_system.get("dm-linear", {})
        if not linear:
            continue
        base = median(linear, "mib_s")
        row = f"{key[0] + ' ' + key[1] + ' QD' + str(key[2]):<20} {base:>15.1f}"
        for system in systems:
            reps = by_system.get(system, {})
            if not reps:
                row += f" | {'-':>22} {'':>6} {'':>11} {'':>5} {'':>5}"
                continue
            paired = [reps[r]["mib_s"] / linear[r]["mib_s"] for r in reps if r in linear]
            row += (
                f" | {median(reps, 'mib_s'):>22.1f} {median(reps, 'mib_s') / base:>6.2f}"
                f" {min(paired):>5.2f}..{max(paired):<4.2f}"
                f" {ratio(reps, linear, 'lat_p50_us'):>5.2f} {ratio(reps, linear, 'lat_p99_us'):>5.2f}"
            )
        print(row)


def median(reps, field):
    return statistics.median(case[field] for case in reps.values())


def ratio(reps, linear, field):
    base = median(linear, field)
    return median(reps, field) / base if base else float("nan")


def size(bs):
    units = {"k": 1 << 10, "m": 1 << 20}
    return int(bs[:-1]) * units.get(bs[-1], 1) if bs[-1] in units else int(bs)


if __name__ == "__main__":
    main(sys.argv)
