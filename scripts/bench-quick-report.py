#!/usr/bin/env python3
"""The tables `make bench-quick` prints: arepl against dm-linear, per regime.

Write path (link paused): for every case (pattern, block size, queue depth) and
system, the median throughput over the repetitions, its ratio to dm-linear's median,
the spread of the per-repetition ratios (each repetition's runs were back to back),
and the ratios of the median p50 and p99 total latencies.
Rate (link up, writes below its rate): the same, from the "rate" runs.
Sustained (link up, writes faster than it), per network shaping: throughput against
the ceiling min(dm-linear, link), drain rate (bytes written over the time until all
were acknowledged) against the link, and CPU seconds per GiB of each system (arepl,
arepl-nocrc with wire_crc:off, drbd-a) and of dm-linear.

    bench-quick-report.py RESULTS.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    lines = [json.loads(line) for line in open(argv[1])]
    cases = [c for c in lines if c.get("kind") == "case"]
    ratio_table(
        [c for c in cases if c["network"] == "paused"],
        "Write-path regime (bursts within the queue, link paused): ratio to dm-linear",
    )
    # The link as measured before each shaping's runs (the last measurement counts).
    links = {c.get("shaping", "0ms"): c["mib_s"] for c in lines if c.get("kind") == "link"}
    if links:
        print("\nLink to the DR machine (a VM of its own): "
              + ", ".join(f"{shaping} {mib_s:.1f} MiB/s" for shaping, mib_s in links.items()))
        ratio_table(
            [c for c in cases if c["network"] == "rate"],
            "\nRate regime (link up, random 64 KiB writes at QD4 at half the link rate)",
        )
    for shaping, link in links.items():
        runs = [c for c in cases if c["network"] == "sustained" and c.get("shaping") == shaping]
        if not runs:
            continue
        sustained(runs, link, shaping)
        cpu_split([c for c in lines if c.get("kind") == "cpu_split"
                   and c["network"] == "sustained" and c.get("shaping") == shaping], runs, shaping)


def sustained(cases, link, shaping):
    by_system = defaultdict(dict)
    for case in cases:
        by_system[case["system"]][int(case["rep"])] = case
    linear = by_system.pop("dm-linear", {})
    if not linear or not by_system:
        return
    ceiling = min(median(linear, "mib_s"), link)
    print(f"\nSustained regime, {shaping} (link up, 1 MiB writes at QD16, then the drain)")
    print(f"  ceiling min(dm-linear {median(linear, 'mib_s'):.1f}, link {link:.1f}) MiB/s;"
          f" dm-linear CPU per GiB {cpu_per_gib(linear):.2f} s")
    for system, reps in sorted(by_system.items()):
        drain = statistics.median(c["written_mib"] / c["drained_s"] for c in reps.values())
        print(f"  {system:<14} throughput {median(reps, 'mib_s'):.1f} MiB/s ="
              f" {median(reps, 'mib_s') / ceiling:.2f} of the ceiling;"
              f" drain {drain:.1f} MiB/s = {drain / link:.2f} of the link;"
              f" CPU per GiB {cpu_per_gib(reps):.2f} s")


def cpu_split(splits, cases, shaping):
    """Median seconds per GiB written by thread kind, per system (sustained runs)."""
    written = {(c["system"], int(c["rep"])): c["written_mib"] / 1024 for c in cases}
    by_system = defaultdict(lambda: defaultdict(list))
    for split in splits:
        gib = written.get((split["system"], split["rep"]))
        for name, seconds in split["seconds"].items():
            if gib:
                by_system[split["system"]][name].append(seconds / gib)
    if by_system:
        print(f"\nSustained regime, {shaping}, CPU seconds per GiB by thread (median;"
              " softirq and irq are the whole guest's)")
    for system, names in sorted(by_system.items()):
        top = sorted(((statistics.median(v), n) for n, v in names.items()), reverse=True)[:8]
        print(f"  {system:<14} " + ", ".join(f"{n} {s:.2f}" for s, n in top))


def cpu_per_gib(reps):
    return statistics.median(c["cpu_s"] / (c["written_mib"] / 1024) for c in reps.values())


def ratio_table(cases, title):
    runs = defaultdict(dict)  # (pattern, bs, qd) -> system -> rep -> case
    for case in cases:
        key = (case["pattern"], case["bs"], case["iodepth"])
        runs[key].setdefault(case["system"], {})[int(case["rep"])] = case
    systems = sorted({s for by_system in runs.values() for s in by_system if s != "dm-linear"})
    print(title)
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
