#!/usr/bin/python3
"""The benchmark's report, from the results of scripts/bench-vm.sh (JSON lines):
printed as text (`make bench-quick`), and with --out-md/--out-png also rendered as
docs/benchmarks.md and its chart (`make bench`).

    bench-report.py RESULTS.jsonl [--out-md FILE --out-png FILE]

Regimes, each against dm-linear measured alongside (A/B/A/B):
- write path ("paused": bursts within the queue, link paused; "rate": link up, random
  64 KiB writes at QD4 at half the link rate): per case (pattern, block size, queue
  depth) and system, the median throughput over the repetitions, its ratio to
  dm-linear's median, the spread of the per-repetition ratios (each repetition's runs
  were back to back), and the ratios of the median p50 and p99 total latencies;
- sustained (link up, writes faster than it), per network: throughput against the
  ceiling min(dm-linear, link), drain rate (bytes written over the time until all
  were acknowledged) against the link measured before those runs, and the primary
  guest's CPU seconds per GiB, in all and by thread.
Optional sections: replicad alone applying a stream ("apply" lines) and the activity
log's cost per write ("activity_log" lines).

Output depends only on the input: everything is sorted, and the PNG carries no date.
A line that is not JSON ends the script with exit status 2, naming the line.
"""

import argparse
import json
import statistics
import sys
from collections import defaultdict

REFERENCE = "dm-linear"
SYSTEM_DESC = {
    REFERENCE: "no replication, the reference",
    "arepl": "this project: asynchronous replication to `replicad` (default table: "
    "payload CRC on the wire)",
    "arepl-nocrc": "arepl with `wire_crc:off` (no payload CRC on the wire, as DRBD's "
    "default)",
    "arepl-tls": "arepl with `key:`: both ends authenticated by a pre-shared key, the "
    "link encrypted by the kernel's TLS layer (AES-128-GCM)",
    "arepl-baseline": "arepl built from another commit",
    "drbd-a": "DRBD 8.4 protocol A (asynchronous), default buffers",
    "dm-mirror-nbd": "dm-mirror whose second leg is an nbd device served by the DR "
    "machine (synchronous)",
}
# The targets (benchmark figures): write path >= 0.97x dm-linear, p50 <= 1.1x,
# p99 <= 1.5x; sustained >= 0.95 of the ceiling, drain >= 0.95 of the link.
WRITE_PATH_TARGET = 0.97
DRAIN_TARGET = 0.95


def load(path):
    lines = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as err:
                print(f"{path}:{number}: not JSON ({err})", file=sys.stderr)
                sys.exit(2)
    return lines


def median(reps, field):
    return statistics.median(case[field] for case in reps.values())


def size(bs):
    units = {"k": 1 << 10, "m": 1 << 20}
    return int(bs[:-1]) * units[bs[-1]] if bs[-1] in units else int(bs)


def ratio_rows(cases):
    """Rows of a write-path table: (case label, dm-linear MiB/s, {system: cells})."""
    runs = defaultdict(dict)  # (pattern, bs, qd) -> system -> rep -> case
    for case in cases:
        key = (case["pattern"], case["bs"], case["iodepth"])
        runs[key].setdefault(case["system"], {})[int(case["rep"])] = case
    systems = sorted({s for by_system in runs.values() for s in by_system} - {REFERENCE})
    rows = []
    for key in sorted(runs, key=lambda k: (k[0], size(k[1]), k[2])):
        linear = runs[key].get(REFERENCE, {})
        if not linear:
            continue
        base = median(linear, "mib_s")
        cells = {}
        for system in systems:
            reps = runs[key].get(system, {})
            paired = [reps[r]["mib_s"] / linear[r]["mib_s"] for r in reps if r in linear]
            if not paired:
                continue
            lat = {f: median(reps, f) / median(linear, f) if median(linear, f) else float("nan")
                   for f in ("lat_p50_us", "lat_p99_us")}
            cells[system] = (median(reps, "mib_s"), median(reps, "mib_s") / base,
                             min(paired), max(paired), lat["lat_p50_us"], lat["lat_p99_us"])
        rows.append((f"{key[0]} {key[1]} QD{key[2]}", base, cells))
    return systems, rows


def sustained_rows(cases, link):
    """(ceiling, dm-linear MiB/s, dm-linear CPU per GiB, [(system, MiB/s, of ceiling,
    drain MiB/s, of link, CPU s per GiB)])."""
    by_system = defaultdict(dict)
    for case in cases:
        by_system[case["system"]][int(case["rep"])] = case
    linear = by_system.pop(REFERENCE, {})
    if not linear or not by_system:
        return None
    ceiling = min(median(linear, "mib_s"), link)
    rows = []
    for system, reps in sorted(by_system.items()):
        drain = statistics.median(c["written_mib"] / c["drained_s"] for c in reps.values())
        rows.append((system, median(reps, "mib_s"), median(reps, "mib_s") / ceiling, drain,
                     drain / link, cpu_per_gib(reps), cpu_per_gib(reps, "dr_cpu_s")))
    return ceiling, median(linear, "mib_s"), cpu_per_gib(linear), rows


def cpu_per_gib(reps, field="cpu_s"):
    """Median CPU seconds per GiB written (NaN when the runs did not record `field`)."""
    return statistics.median(c.get(field, float("nan")) / (c["written_mib"] / 1024)
                             for c in reps.values())


def cpu_split_rows(splits, cases):
    """Median seconds per GiB written by thread kind, per system, top 8."""
    written = {(c["system"], int(c["rep"])): c["written_mib"] / 1024 for c in cases}
    by_system = defaultdict(lambda: defaultdict(list))
    for split in splits:
        gib = written.get((split["system"], split["rep"]))
        for name, seconds in split["seconds"].items():
            if gib:
                by_system[split["system"]][name].append(seconds / gib)
    return [(system, sorted(((statistics.median(v), n) for n, v in names.items()),
                            key=lambda sn: (-sn[0], sn[1]))[:8])
            for system, names in sorted(by_system.items())]


class Report:
    def __init__(self, lines):
        self.meta = next((l for l in lines if l.get("kind") == "meta"), {})
        self.cases = [c for c in lines if c.get("kind") == "case"]
        # The link as measured before each network's runs (the last measurement counts).
        self.links = {}
        for line in lines:
            if line.get("kind") == "link":
                self.links[line.get("shaping", "0ms")] = line["mib_s"]
        self.splits = [c for c in lines if c.get("kind") == "cpu_split"]
        self.applies = [c for c in lines if c.get("kind") == "apply"]
        self.al_runs = [c for c in lines if c.get("kind") == "activity_log"]

    def regime(self, name, shaping=None):
        return [c for c in self.cases if c["network"] == name
                and (shaping is None or c.get("shaping") == shaping)]

    def sustained(self, shaping):
        return sustained_rows(self.regime("sustained", shaping), self.links[shaping])

    def splits_for(self, shaping):
        return cpu_split_rows([s for s in self.splits if s["network"] == "sustained"
                               and s.get("shaping") == shaping],
                              self.regime("sustained", shaping))


# --- Text (make bench-quick)

def text_ratio_table(systems, rows, title):
    print(title.rstrip("\n"))
    print("(median of repetitions; spread = lowest..highest per-repetition ratio)\n")
    header = f"{'case':<20} {'dm-linear MiB/s':>15}"
    for system in systems:
        header += f" | {system + ' MiB/s':>22} {'ratio':>6} {'spread':>11} {'p50':>5} {'p99':>5}"
    print(header)
    print("-" * len(header))
    for label, base, cells in rows:
        row = f"{label:<20} {base:>15.1f}"
        for system in systems:
            if system not in cells:
                row += f" | {'-':>22} {'':>6} {'':>11} {'':>5} {'':>5}"
                continue
            mib_s, ratio, low, high, p50, p99 = cells[system]
            row += (f" | {mib_s:>22.1f} {ratio:>6.2f} {low:>5.2f}..{high:<4.2f}"
                    f" {p50:>5.2f} {p99:>5.2f}")
        print(row)
    print()


def render_text(report):
    systems, rows = ratio_rows(report.regime("paused"))
    if rows:
        text_ratio_table(systems, rows, "Write-path regime (bursts within the queue, link"
                         " paused): ratio to dm-linear\n")
    if not report.links:
        return
    print("Link to the DR machine (a VM of its own): "
          + ", ".join(f"{shaping} {mib_s:.1f} MiB/s" for shaping, mib_s in report.links.items()))
    text_ratio_table(*ratio_rows(report.regime("rate")),
                     "\nRate regime (link up, random 64 KiB writes at QD4 at half the link rate)")
    for shaping in report.links:
        table = report.sustained(shaping)
        if table is None:
            continue
        ceiling, linear, linear_cpu, rows = table
        print(f"\nSustained regime, {shaping} (link up, 1 MiB writes at QD16, then the drain)")
        print(f"  ceiling min(dm-linear {linear:.1f}, link {report.links[shaping]:.1f}) MiB/s;"
              f" dm-linear CPU per GiB {linear_cpu:.2f} s")
        for system, mib_s, of_ceiling, drain, of_link, cpu, dr_cpu in rows:
            print(f"  {system:<14} throughput {mib_s:.1f} MiB/s = {of_ceiling:.2f} of the ceiling;"
                  f" drain {drain:.1f} MiB/s = {of_link:.2f} of the link; CPU per GiB {cpu:.2f} s"
                  f" (DR machine {dr_cpu:.2f} s)")
        print(f"\nSustained regime, {shaping}, CPU seconds per GiB by thread (median;"
              " softirq and irq are the whole guest's)")
        for system, top in report.splits_for(shaping):
            print(f"  {system:<14} " + ", ".join(f"{n} {s:.2f}" for s, n in top))


# --- Markdown and chart (make bench)

def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|:---|" + "---:|" * (len(header) - 1)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out + [""]


def md_ratio_table(systems, rows):
    header = ["case", "dm-linear MiB/s"]
    for system in systems:
        header += [f"{system} ×", "spread", "p50 ×", "p99 ×"]
    body = []
    for label, base, cells in rows:
        row = [label, f"{base:.1f}"]
        for system in systems:
            if system in cells:
                _, ratio, low, high, p50, p99 = cells[system]
                row += [f"**{ratio:.2f}**", f"{low:.2f}–{high:.2f}", f"{p50:.2f}", f"{p99:.2f}"]
            else:
                row += ["—"] * 4
        body.append(row)
    return md_table(header, body)


def render_md(report, png_name):
    m = report.meta
    out = ["# Benchmarks", ""]
    out.append(
        f"One `{m.get('command', 'make bench')}` run started {m.get('started', '?')}: kernel "
        f"{m.get('kernel', '?')}; {m.get('qemu', '?')}; the primary guest has "
        f"{m.get('cpus', '?')} vCPUs and the DR machine, a second VM, one; the host has "
        f"{m.get('host_cpus', '?')} cores. {m.get('reps', '?')} repetitions of every run, "
        "systems alternated run by run (A/B/A/B); medians, with the spread of the "
        "per-repetition ratios. All figures come from QEMU TCG (software emulation), "
        "where every byte the guest CPU copies or checksums is emulated while the "
        "virtual disks' DMA is native: read ratios, not absolute MiB/s.")
    out.append("")
    out.append(
        "To regenerate: `make bench` (results in `target/bench/results.jsonl`, copied to "
        "`docs/benchmarks.jsonl`); to re-render: `scripts/bench-report.py "
        "docs/benchmarks.jsonl --out-md docs/benchmarks.md --out-png docs/benchmarks.png`. "
        "`make bench-quick` prints the same tables from a shorter run.")
    out += ["", "The path: the DR side is a VM of its own on one bridge with the primary "
            "(taps in a network namespace the bench creates), so no receiver takes CPU "
            "from the primary guest, and every replicating system uses the same network "
            "card and link. Shaping: `Nms` delays each direction by half the round trip "
            "(netem on each VM's egress); `100mbit` is a tbf at 100 Mbit/s each way.", "",
            "Systems:", ""]
    present = {c["system"] for c in report.cases}
    out += [f"- `{s}`: {d}." for s, d in SYSTEM_DESC.items() if s in present]
    out += ["", f"![Write-path ratios and sustained drain against the link]({png_name})", ""]

    systems, rows = ratio_rows(report.regime("paused"))
    out += ["## Write path, link paused", "",
            "Bursts smaller than the queue (`queue_mb:1024`) into a fresh arepl device "
            "whose link is paused, so nothing is sent: what a write costs on the primary "
            "alone. fio, direct I/O, libaio; × is the ratio to dm-linear (throughput, and "
            "p50/p99 total latency, submission included). Target: ≥ "
            f"{WRITE_PATH_TARGET} throughput, p50 ≤ 1.1, p99 ≤ 1.5.", ""]
    out += md_ratio_table(systems, rows) if rows else ["Not measured in this run.", ""]
    if report.links:
        out += ["## Link", ""]
        out += md_table(["network", "measured TCP MiB/s (sendfile, 4 s)"],
                        [[f"`{s}`", f"{v:.1f}"] for s, v in report.links.items()])
        out += ["## Write path, link up, below its rate", "",
                "Random 64 KiB writes at QD4 at half the unshaped link's rate, so no "
                "queue fills: what a write costs while the link streams.", ""]
        out += md_ratio_table(*ratio_rows(report.regime("rate")))
        out += ["## Sustained: writes faster than the link", "",
                "1 MiB writes at QD16 (arepl with a 64 MiB queue, full at once), then "
                "the drain. Throughput against the ceiling min(dm-linear, link); drain "
                "rate (bytes written over the time until the DR side acknowledged all) "
                "against the link; the primary guest's CPU seconds (`/proc/stat`) per GiB "
                "written, and the DR machine's (one vCPU: a receiver that needs more than "
                "about one second per second limits the drain). Targets: ≥ {DRAIN_TARGET} of the ceiling and of the link.", ""]
        for shaping in report.links:
            table = report.sustained(shaping)
            if table is None:
                continue
            ceiling, linear, linear_cpu, rows = table
            out += [f"### `{shaping}`: ceiling {ceiling:.1f} MiB/s (dm-linear {linear:.1f}, "
                    f"link {report.links[shaping]:.1f}); dm-linear {linear_cpu:.2f} CPU s per GiB",
                    ""]
            out += md_table(["system", "MiB/s", "of ceiling", "drain MiB/s", "of link",
                             "CPU s per GiB", "DR machine CPU s per GiB"],
                            [[f"`{s}`", f"{v:.1f}", f"**{c:.2f}**", f"{d:.1f}", f"**{l:.2f}**",
                              f"{cpu:.2f}", f"{dr_cpu:.2f}"]
                             for s, v, c, d, l, cpu, dr_cpu in rows])
            splits = report.splits_for(shaping)
            if splits:
                out += ["CPU seconds per GiB by thread (softirq and irq: the whole guest's):", ""]
                out += [f"- `{s}`: " + ", ".join(f"{n} {v:.2f}" for v, n in top)
                        for s, top in splits]
                out.append("")
    if report.applies:
        out += apply_section(report.applies)
    if report.al_runs:
        out += activity_log_section(report.al_runs)
    return "\n".join(out).rstrip("\n") + "\n"


def apply_section(applies):
    out = ["## replicad applying", "",
           "How fast `replicad` writes a stream to its target, and the CPU it spends, "
           "against the target's own speed (fio, direct I/O, same block size, queue depth "
           "1). The stream was queued on a paused device and then sent at once over the "
           "unshaped link, so neither the link nor the primary's write path limits it. "
           "CPU is `replicad`'s user plus system time on the DR machine.", ""]
    rows = []
    for a in sorted(applies, key=lambda a: a["case"]):
        rate = a["mib"] / a["seconds"]
        rows.append([f"`{a['case']}`", a["bs"], f"{a['mib']:g}", str(a["entries"]),
                     f"{rate:.1f}", f"{a['target_mib_s']:.1f}",
                     f"{rate / a['target_mib_s']:.2f}" if a["target_mib_s"] else "—",
                     f"{1000 * a['replicad_cpu_s'] / a['mib']:.1f}"])
    return out + md_table(["case", "bs", "MiB", "entries", "applied MiB/s", "target MiB/s",
                           "ratio", "replicad CPU ms per MiB"], rows)


def activity_log_section(runs):
    out = ["## Activity log cost per write", "",
           "4 KiB random writes at queue depth 1 through arepl without a spill device and "
           "with one (`arepl-al`: the activity log lives on it), on the unshaped link, "
           "alternately, twice; medians. `hot`: 16 MiB written in 4 MiB regions (the "
           "default), which stay marked while written. `cold`: the whole volume in 64 KiB "
           "regions, so nearly every write waits for one 512-byte FUA write of the log "
           "first: the worst case. Cost per write is the difference of mean latencies.", ""]
    rows = []
    for case in ("hot", "cold"):
        def med(system, field):
            values = [r[field] for r in runs if r["system"] == system and r["case"] == case]
            return statistics.median(values) if values else None
        cells = [med(s, f) for f in ("iops", "lat_mean_us", "lat_p99_us")
                 for s in ("arepl", "arepl-al")]
        if None in cells:
            continue
        iops, iops_al, lat, lat_al, p99, p99_al = cells
        rows.append([f"`{case}`", f"{iops:.0f}", f"{iops_al:.0f}",
                     f"{iops_al / iops:.2f}" if iops else "—", f"{lat:.0f}", f"{lat_al:.0f}",
                     f"{lat_al - lat:.0f}", f"{p99:.0f}", f"{p99_al:.0f}"])
    return out + md_table(["case", "IOPS without", "IOPS with", "ratio", "mean µs without",
                           "mean µs with", "cost µs per write", "p99 µs without",
                           "p99 µs with"], rows)


def render_png(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    systems, rows = ratio_rows(report.regime("paused"))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        left.bar([x + i * width for x in range(len(rows))],
                 [cells.get(system, (0, 0))[1] for _, _, cells in rows], width, label=system)
    left.axhline(WRITE_PATH_TARGET, color="black", linestyle="--", linewidth=1,
                 label=f"target {WRITE_PATH_TARGET}")
    left.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(rows))])
    left.set_xticklabels([label for label, _, _ in rows], rotation=30, ha="right", fontsize=8)
    left.set_ylabel("throughput ÷ dm-linear")
    left.set_title("Write path, link paused")
    left.legend(fontsize=8)

    shapings = [s for s in report.links if report.sustained(s)]
    systems = sorted({row[0] for s in shapings for row in report.sustained(s)[3]})
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        values = []
        for shaping in shapings:
            rows = {row[0]: row for row in report.sustained(shaping)[3]}
            values.append(rows[system][4] if system in rows else 0)
        right.bar([x + i * width for x in range(len(shapings))], values, width, label=system)
    right.axhline(DRAIN_TARGET, color="black", linestyle="--", linewidth=1,
                  label=f"target {DRAIN_TARGET}")
    right.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(shapings))])
    right.set_xticklabels(shapings)
    right.set_ylabel("drain rate ÷ measured link")
    right.set_title("Sustained: drain against the link")
    right.legend(fontsize=8)
    fig.suptitle("QEMU TCG: read ratios, not absolutes", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results")
    parser.add_argument("--out-md")
    parser.add_argument("--out-png")
    args = parser.parse_args(argv[1:])
    report = Report(load(args.results))
    render_text(report)
    if args.out_md:
        with open(args.out_md, "w") as f:
            f.write(render_md(report, args.out_png.rsplit("/", 1)[-1] if args.out_png else ""))
    if args.out_png:
        render_png(report, args.out_png)


if __name__ == "__main__":
    main(sys.argv)
