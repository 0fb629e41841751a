#!/usr/bin/env python3
"""Render `make bench` results (JSON lines) as docs/benchmarks.md and docs/benchmarks.png.

Usage:
    scripts/bench-report.py RESULTS.jsonl --out-md docs/benchmarks.md --out-png docs/benchmarks.png

The input holds one JSON object per line (blank lines are skipped):

  kind "meta" (exactly one, the first line):
      kernel, qemu, command, started (strings), cpus (integer), runtime_s, disk_mb
      (numbers), notes (list of strings); optional host_cpus (integer).
  kind "link" (one per network):
      network (string), rtt_ms (number), rate_mbit (number or null),
      measured_mib_s (number).
  kind "case" (one per fio run):
      system ("dm-linear", "arepl", "drbd-a", "dm-mirror-nbd"), network (string;
      "local" for dm-linear and only for it), pattern ("write" or "randwrite"),
      bs (e.g. "4k", "1m"), iodepth (integer >= 1), mib_s, iops, lat_p50_us,
      lat_p99_us (numbers); arepl cases also drained_mib, drain_s, lag_ms_p50,
      lag_ms_max, sent_mib_s (numbers).
  kind "unavailable":
      system (as above), network (string or null), error (string).
  kind "apply" (one per replicad apply case, optional):
      case (string), bs (size string), entries (integer), mib, seconds,
      replicad_cpu_s, target_mib_s (numbers), started (string: when that run began).
  kind "activity_log" (optional; 4 KiB random writes at QD1 without and with the
      activity log): system ("arepl" or "arepl-al"), case ("hot" or "cold"),
      repetition (integer), iops, lat_mean_us, lat_p99_us (numbers), started
      (string: when that run began).

Unknown extra fields are ignored. A malformed line ends the script with exit status 2
and a message naming the line. Output depends only on the input and the output paths:
everything is sorted and formatted the same way on every run, and the PNG carries no
creation date or software version.

The figures come from QEMU TCG (software emulation); the report compares each system
with dm-linear on the same (pattern, block size, queue depth) case, so read ratios.
"""

import argparse
import json
import math
import os
import statistics
import sys

REFERENCE = "dm-linear"
SYSTEMS = ("arepl", "drbd-a", "dm-mirror-nbd")
ALL_SYSTEMS = (REFERENCE,) + SYSTEMS
SYSTEM_DESC = {
    REFERENCE: "no replication, the reference",
    "arepl": "this project, asynchronous replication to `replicad`",
    "drbd-a": "DRBD protocol A, asynchronous",
    "dm-mirror-nbd": "dm-mirror whose second leg is an nbd device served from the "
    "DR namespace, synchronous",
}
LOCAL = "local"
KNOWN_NETWORKS = ("0ms", "10ms", "50ms", "100mbit")
PATTERNS = ("write", "randwrite")
AREPL_FIELDS = ("drained_mib", "drain_s", "lag_ms_p50", "lag_ms_max", "sent_mib_s")
BS_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
COLORS = {"arepl": "#1f77b4", "drbd-a": "#ff7f0e", "dm-mirror-nbd": "#2ca02c"}
DASH = "—"


class Malformed(Exception):
    """An input line that cannot be used; the message says why."""


# ---------------------------------------------------------------------------
# Parsing and validation


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _field(obj, name):
    if name not in obj:
        raise Malformed(f"missing field {name!r}")
    return obj[name]


def get_str(obj, name, choices=None, nullable=False):
    value = _field(obj, name)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        raise Malformed(f"field {name!r} must be a non-empty string, got "
                        f"{_type_name(value)} {json.dumps(value)}")
    if choices is not None and value not in choices:
        raise Malformed(f"field {name!r} is {value!r}, expected one of "
                        + ", ".join(repr(c) for c in choices))
    return value


def get_num(obj, name, nullable=False, integer=False, minimum=0):
    value = _field(obj, name)
    if value is None and nullable:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        what = "an integer" if integer else "a number"
        raise Malformed(f"field {name!r} must be {what}, got "
                        f"{_type_name(value)} {json.dumps(value)}")
    if not math.isfinite(value):
        raise Malformed(f"field {name!r} must be finite")
    if value < minimum:
        raise Malformed(f"field {name!r} is {value}, must be >= {minimum}")
    return value


def bs_bytes(bs):
    """Block size string ("4k", "1m", "512") to bytes, or None if not one."""
    text = bs.strip().lower()
    unit = text[-1:] if text[-1:] in BS_UNITS and not text[-1:].isdigit() else ""
    digits = text[: len(text) - len(unit)]
    if not digits.isdigit() or int(digits) == 0 or digits.startswith("0"):
        return None
    return int(digits) * BS_UNITS[unit]


def network_key(net):
    if net in KNOWN_NETWORKS:
        return (0, KNOWN_NETWORKS.index(net), "")
    return (1, 0, net)


def case_key(key):
    pattern, bs, qd = key
    return (PATTERNS.index(pattern), bs_bytes(bs), bs, qd)


def parse_meta(obj):
    meta = {
        "kernel": get_str(obj, "kernel"),
        "qemu": get_str(obj, "qemu"),
        "cpus": get_num(obj, "cpus", integer=True, minimum=1),
        "runtime_s": get_num(obj, "runtime_s"),
        "disk_mb": get_num(obj, "disk_mb"),
        "command": get_str(obj, "command"),
        "started": get_str(obj, "started"),
        "host_cpus": None,
    }
    if obj.get("host_cpus") is not None:
        meta["host_cpus"] = get_num(obj, "host_cpus", integer=True, minimum=1)
    notes = _field(obj, "notes")
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise Malformed("field 'notes' must be a list of strings")
    meta["notes"] = notes
    return meta


def parse_link(obj):
    return {
        "network": get_str(obj, "network"),
        "rtt_ms": get_num(obj, "rtt_ms"),
        "rate_mbit": get_num(obj, "rate_mbit", nullable=True),
        "measured_mib_s": get_num(obj, "measured_mib_s"),
    }


def parse_case(obj):
    system = get_str(obj, "system", choices=ALL_SYSTEMS)
    network = get_str(obj, "network")
    if system == REFERENCE and network != LOCAL:
        raise Malformed(f"{REFERENCE} cases must have network {LOCAL!r}, got {network!r}")
    if system != REFERENCE and network == LOCAL:
        raise Malformed(f"network {LOCAL!r} is only for {REFERENCE}, not {system}")
    bs = get_str(obj, "bs")
    if bs_bytes(bs) is None:
        raise Malformed(f"field 'bs' is {bs!r}, expected a size such as '4k' or '1m'")
    case = {
        "system": system,
        "network": network,
        "pattern": get_str(obj, "pattern", choices=PATTERNS),
        "bs": bs,
        "iodepth": get_num(obj, "iodepth", integer=True, minimum=1),
        "mib_s": get_num(obj, "mib_s"),
        "iops": get_num(obj, "iops"),
        "lat_p50_us": get_num(obj, "lat_p50_us"),
        "lat_p99_us": get_num(obj, "lat_p99_us"),
    }
    if system == "arepl":
        for name in AREPL_FIELDS:
            case[name] = get_num(obj, name)
    return case


def parse_apply(obj):
    bs = get_str(obj, "bs")
    if bs_bytes(bs) is None:
        raise Malformed(f"field 'bs' is {bs!r}, expected a size such as '4k' or '1m'")
    apply = {"case": get_str(obj, "case"), "bs": bs, "started": get_str(obj, "started"),
             "entries": get_num(obj, "entries", integer=True)}
    for name in ("mib", "seconds", "replicad_cpu_s", "target_mib_s"):
        apply[name] = get_num(obj, name)
    if apply["mib"] == 0 or apply["seconds"] == 0:
        raise Malformed("an apply case needs mib and seconds above 0")
    return apply


def parse_activity_log(obj):
    run = {"system": get_str(obj, "system", choices=("arepl", "arepl-al")),
           "case": get_str(obj, "case", choices=("hot", "cold")),
           "repetition": get_num(obj, "repetition", integer=True),
           "started": get_str(obj, "started")}
    for name in ("iops", "lat_mean_us", "lat_p99_us"):
        run[name] = get_num(obj, name)
    return run


def parse_unavailable(obj):
    return {
        "system": get_str(obj, "system", choices=ALL_SYSTEMS),
        "network": get_str(obj, "network", nullable=True),
        "error": get_str(obj, "error"),
    }


def load(path):
    """Read and validate the results file; raise Malformed with path:line on error."""
    meta = None
    links = {}  # network -> link
    cases = {}  # (system, network, (pattern, bs, qd)) -> case
    where = {}  # same key / ("link", network) -> line number
    unavailable = []
    applies = []
    activity = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise Malformed(f"{path}: cannot read: {e}") from None
    first = True
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            try:
                obj = json.loads(line, object_pairs_hook=_unique_keys,
                                 parse_constant=_reject_constant)
            except ValueError as e:
                raise Malformed(f"not valid JSON: {e}") from None
            if not isinstance(obj, dict):
                raise Malformed(f"expected a JSON object, got {_type_name(obj)}")
            kind = get_str(obj, "kind",
                           choices=("meta", "link", "case", "unavailable", "apply",
                                    "activity_log"))
            if first and kind != "meta":
                raise Malformed(f"the first line must be kind 'meta', got {kind!r}")
            first = False
            if kind == "meta":
                if meta is not None:
                    raise Malformed("a second 'meta' line (there must be exactly one)")
                meta = parse_meta(obj)
            elif kind == "link":
                link = parse_link(obj)
                net = link["network"]
                if net == LOCAL:
                    raise Malformed(f"network {LOCAL!r} has no link")
                if ("link", net) in where:
                    raise Malformed(f"a second link line for network {net!r} "
                                    f"(first on line {where[('link', net)]})")
                where[("link", net)] = lineno
                links[net] = link
            elif kind == "case":
                case = parse_case(obj)
                key = (case["system"], case["network"],
                       (case["pattern"], case["bs"], case["iodepth"]))
                if key in where:
                    raise Malformed(f"duplicate case {key[0]} {key[1]} {key[2][0]} "
                                    f"bs={key[2][1]} iodepth={key[2][2]} "
                                    f"(first on line {where[key]})")
                where[key] = lineno
                cases[key] = case
            elif kind == "apply":
                applies.append(parse_apply(obj))
            elif kind == "activity_log":
                activity.append(parse_activity_log(obj))
            else:
                unavailable.append(parse_unavailable(obj))
        except Malformed as e:
            raise Malformed(f"{path}:{lineno}: malformed line: {e}") from None
    if meta is None:
        raise Malformed(f"{path}: no 'meta' line (the first line must be kind 'meta')")
    return meta, links, cases, unavailable, applies, activity


# ---------------------------------------------------------------------------
# Analysis


def geomean(values):
    if any(v == 0 for v in values):
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


class Data:
    def __init__(self, meta, links, cases, unavailable, applies, activity):
        self.meta = meta
        self.applies = sorted(applies, key=lambda a: (a["started"], a["case"]))
        self.activity = activity
        self.links = links
        self.cases = cases
        self.unavailable = sorted(
            unavailable,
            key=lambda u: (ALL_SYSTEMS.index(u["system"]),
                           u["network"] is not None,
                           network_key(u["network"] or ""), u["error"]))
        nets = {n for (s, n, _) in cases if n != LOCAL} | set(links)
        nets |= {u["network"] for u in unavailable if u["network"] not in (None, LOCAL)}
        self.networks = sorted(nets, key=network_key)
        self.ref_keys = sorted((k for (s, n, k) in cases if s == REFERENCE), key=case_key)

    def case(self, system, network, key):
        return self.cases.get((system, LOCAL if system == REFERENCE else network, key))

    def keys_for(self, network):
        keys = {k for (s, n, k) in self.cases if n == network or s == REFERENCE}
        return sorted(keys, key=case_key)

    def has_cases(self, system, network):
        return any(s == system and n == network for (s, n, _) in self.cases)

    def is_unavailable(self, system, network):
        return any(u["system"] == system and u["network"] in (None, network)
                   for u in self.unavailable)

    def ratios(self, system, network, field):
        """Ratios system/dm-linear of `field` over cases both ran (reference > 0)."""
        out = []
        for (s, n, key), case in sorted(self.cases.items(),
                                        key=lambda kv: case_key(kv[0][2])):
            if s != system or n != network:
                continue
            ref = self.cases.get((REFERENCE, LOCAL, key))
            if ref is None or ref[field] <= 0:
                continue
            out.append(case[field] / ref[field])
        return out

    def summary(self, system, network, field):
        """(geometric mean, min, max, count) or None."""
        r = self.ratios(system, network, field)
        if not r:
            return None
        return geomean(r), min(r), max(r), len(r)


# ---------------------------------------------------------------------------
# Formatting


def fmt_num(x):
    """A figure with three or so significant digits, thousands separated."""
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_setting(x):
    """A configured value (seconds, MiB, ms, Mbit/s): as given, no padding."""
    return f"{x:,}" if isinstance(x, int) else f"{x:,g}"


def fmt_ratio(x):
    return fmt_num(x) + "×"


def fmt_pct(x):
    return f"{x:.0f}%" if x >= 10 else f"{x:.1f}%"


def md_table(header, rows, align):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    for row in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return out


def fence(text):
    """A fenced code block that the text itself cannot close."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * max(3, longest + 1)
    return [ticks + "text", *text.split("\n"), ticks]


def describe_network(net, link):
    if link is None:
        return f"`{net}`"
    parts = [f"RTT {fmt_setting(link['rtt_ms'])} ms"]
    if link["rate_mbit"] is not None:
        parts.append(f"rate {fmt_setting(link['rate_mbit'])} Mbit/s")
    parts.append(f"measured TCP {fmt_num(link['measured_mib_s'])} MiB/s")
    return f"`{net}` ({', '.join(parts)})"


def headline_table(d, field):
    header = ["System"] + [f"`{n}`" for n in d.networks]
    rows = []
    full = len(d.ref_keys)
    for system in SYSTEMS:
        row = [system]
        for net in d.networks:
            s = d.summary(system, net, field)
            if s is None:
                row.append("unavailable" if d.is_unavailable(system, net)
                           and not d.has_cases(system, net) else DASH)
                continue
            g, lo, hi, n = s
            extra = "" if n == full else f", {n} cases"
            row.append(f"**{fmt_ratio(g)}** ({fmt_ratio(lo)[:-1]}–{fmt_ratio(hi)}{extra})")
        rows.append(row)
    return md_table(header, rows, "l" + "r" * len(d.networks))


def detail_table(d, net):
    systems = [s for s in SYSTEMS if d.has_cases(s, net)]
    header = ["Pattern", "bs", "QD", f"{REFERENCE} MiB/s", f"{REFERENCE} p50/p99 µs"]
    for system in systems:
        header += [f"{system} MiB/s (ratio)", f"{system} p50/p99 µs"]
    rows = []
    for key in d.keys_for(net):
        pattern, bs, qd = key
        ref = d.case(REFERENCE, net, key)
        row = [pattern, bs, str(qd)]
        if ref is None:
            row += [DASH, DASH]
        else:
            row += [fmt_num(ref["mib_s"]),
                    f"{fmt_num(ref['lat_p50_us'])} / {fmt_num(ref['lat_p99_us'])}"]
        for system in systems:
            c = d.case(system, net, key)
            if c is None:
                row += [DASH, DASH]
                continue
            ratio = (f" ({fmt_ratio(c['mib_s'] / ref['mib_s'])})"
                     if ref is not None and ref["mib_s"] > 0 else "")
            row += [fmt_num(c["mib_s"]) + ratio,
                    f"{fmt_num(c['lat_p50_us'])} / {fmt_num(c['lat_p99_us'])}"]
        rows.append(row)
    return md_table(header, rows, "lll" + "r" * (len(header) - 3))


def drain_table(d):
    header = ["Network", "Link MiB/s", "Cases drained", "Drain MiB/s median / max",
              "Drain ÷ link median / max", "Replicated MiB/s median",
              "Lag median of p50 ms", "Lag max ms"]
    rows = []
    for net in d.networks:
        runs = [c for (s, n, k), c in sorted(d.cases.items(),
                                             key=lambda kv: case_key(kv[0][2]))
                if s == "arepl" and n == net]
        link = d.links.get(net)
        if not runs and link is None:
            continue
        link_rate = link["measured_mib_s"] if link is not None else None
        rates = [c["drained_mib"] / c["drain_s"] for c in runs
                 if c["drain_s"] > 0 and c["drained_mib"] > 0]
        row = [f"`{net}`", fmt_num(link_rate) if link_rate is not None else DASH,
               f"{len(rates)} of {len(runs)}"]
        if rates:
            med, top = statistics.median(rates), max(rates)
            row.append(f"{fmt_num(med)} / {fmt_num(top)}")
            if link_rate:
                row.append(f"{fmt_pct(100 * med / link_rate)} / "
                           f"{fmt_pct(100 * top / link_rate)}")
            else:
                row.append(DASH)
        else:
            row += [DASH, DASH]
        if runs:
            row += [fmt_num(statistics.median(c["sent_mib_s"] for c in runs)),
                    fmt_num(statistics.median(c["lag_ms_p50"] for c in runs)),
                    fmt_num(max(c["lag_ms_max"] for c in runs))]
        else:
            row += [DASH, DASH, DASH]
        rows.append(row)
    return md_table(header, rows, "l" + "r" * (len(header) - 1))


def render_md(d, png_ref, note_missing_link):
    m = d.meta
    host = f", on a {m['host_cpus']}-core host" if m["host_cpus"] else ""
    out = ["# Benchmarks", ""]
    out.append(
        "fio write throughput and latency through four block stacks on the same virtual "
        "disks: dm-linear without replication as the reference, and three replicating "
        "stacks, each run over several emulated links between two network namespaces. "
        f"Kernel {m['kernel']}; {m['qemu']}; {m['cpus']} vCPUs{host}; "
        f"{fmt_setting(m['runtime_s'])} s per fio run; "
        f"{fmt_setting(m['disk_mb'])} MiB disks; run started {m['started']} with `{m['command']}`. "
        "All figures come from QEMU TCG software emulation, so absolute MiB/s and "
        "latencies are far below real hardware: read the ratios to dm-linear.")
    out.append("")
    out.append(
        "To regenerate: `make bench` runs the benchmark, writes "
        "`target/bench/results.jsonl` and renders this page. To re-render from saved "
        "results: `scripts/bench-report.py target/bench/results.jsonl --out-md "
        "docs/benchmarks.md --out-png docs/benchmarks.png`. The raw results behind "
        "this page are committed as `docs/benchmarks.jsonl`.")
    out.append("")
    out.append("Systems:")
    out.append("")
    for system in ALL_SYSTEMS:
        out.append(f"- `{system}`: {SYSTEM_DESC[system]}.")
    out.append("")
    if d.networks:
        out.append("Networks: " + "; ".join(describe_network(n, d.links.get(n))
                                            for n in d.networks) + ".")
        out.append("")

    out += ["## Headline: throughput relative to dm-linear", ""]
    if not d.networks or not d.ref_keys:
        out += [f"No results to compare: the input has no {REFERENCE} cases or no "
                "replicated cases.", ""]
    else:
        out += headline_section(d)
    out += [f"![Throughput and p99 latency ratios to dm-linear per network "
            f"(QEMU TCG)]({png_ref})", ""]

    if d.networks:
        out += ["## Detail per network", ""]
        out.append(f"`write` is sequential, `randwrite` random; QD is the fio iodepth. "
                   f"{REFERENCE} has no network, so its column is the same local run "
                   "in every table. Ratios are to that run; — means no result.")
        out.append("")
    for net in d.networks:
        out += [f"### `{net}`", ""]
        if net in d.links:
            out += [describe_network(net, d.links[net]) + ".", ""]
        out += detail_table(d, net)
        missing = [s for s in SYSTEMS if not d.has_cases(s, net)]
        if missing:
            out.append("")
            out.append("No results (no columns) for " + ", ".join(
                f"{s}" + (" (unavailable, see below)" if d.is_unavailable(s, net) else "")
                for s in missing) + ".")
        out.append("")

    drain = drain_table(d)
    if len(drain) > 2:
        out += drain_section(drain, note_missing_link)

    if d.applies:
        out += apply_section(d.applies)

    if d.activity:
        out += activity_log_section(d.activity)

    if d.unavailable:
        out += ["## Unavailable", ""]
        for u in d.unavailable:
            where = f" on `{u['network']}`" if u["network"] is not None else ""
            out += [f"`{u['system']}`{where} could not be set up:", ""]
            out += fence(u["error"])
            out.append("")

    if m["notes"]:
        out += ["## Notes", ""]
        for note in m["notes"]:
            out.append("- " + "\n  ".join(note.strip().split("\n")))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def apply_section(applies):
    out = ["## replicad applying", ""]
    runs = sorted({a["started"] for a in applies})
    out.append(
        "How fast `replicad` writes a stream to its target, and the CPU it spends, against "
        "the target's own speed (fio, direct I/O, same block size, queue depth 1). The "
        "stream was queued on a paused device and then sent at once over the 0 ms link, "
        "so neither the link nor the primary's write path limits it. CPU is `replicad`'s "
        "user plus system time from `/proc/PID/stat` (TCG-emulated, like everything "
        "here); the primary's CPU is not counted. Measured in the run(s) started "
        + ", ".join(runs) + ".")
    out.append("")
    rows = []
    for a in applies:
        rate = a["mib"] / a["seconds"]
        rows.append([
            f"`{a['case']}`", a["bs"], fmt_num(a["mib"]), str(a["entries"]),
            fmt_num(rate), fmt_num(a["target_mib_s"]),
            fmt_ratio(rate / a["target_mib_s"]) if a["target_mib_s"] else DASH,
            fmt_num(1000 * a["replicad_cpu_s"] / a["mib"]),
        ])
    out += md_table(["case", "bs", "MiB", "entries", "applied MiB/s", "target MiB/s",
                     "ratio", "replicad CPU ms per MiB"], rows,
                    ["l", "r", "r", "r", "r", "r", "r", "r"])
    out.append("")
    return out


def activity_log_section(runs):
    out = ["## Activity log cost per write", ""]
    out.append(
        "4 KiB random writes at queue depth 1 through arepl without a spill device and "
        "with one (`arepl-al`: the activity log lives on it), on the 0 ms link, each "
        "case run alternately without and with, twice; medians of the runs. `hot`: 16 "
        "MiB written in 4 MiB regions (the default), which stay marked while written, "
        "so hardly a write waits for the log. `cold`: the whole volume in 64 KiB "
        "regions, so nearly every write waits for one 512-byte FUA write of the log "
        "first: the worst case. Cost per write is the difference of mean latencies "
        "(fio `lat`, submission to completion). Measured in the run(s) started "
        + ", ".join(sorted({r["started"] for r in runs})) + ".")
    out.append("")
    rows = []
    for case in ("hot", "cold"):
        def median(system, field):
            values = [r[field] for r in runs if r["system"] == system and r["case"] == case]
            return statistics.median(values) if values else None
        base, al = median("arepl", "iops"), median("arepl-al", "iops")
        lat, lat_al = median("arepl", "lat_mean_us"), median("arepl-al", "lat_mean_us")
        p99, p99_al = median("arepl", "lat_p99_us"), median("arepl-al", "lat_p99_us")
        if None in (base, al, lat, lat_al, p99, p99_al):
            continue
        rows.append([f"`{case}`", fmt_num(base), fmt_num(al),
                     fmt_ratio(al / base) if base else DASH, fmt_num(lat), fmt_num(lat_al),
                     fmt_num(lat_al - lat), fmt_num(p99), fmt_num(p99_al)])
    out += md_table(["case", "IOPS without", "IOPS with", "ratio", "mean µs without",
                     "mean µs with", "cost µs per write", "p99 µs without", "p99 µs with"],
                    rows, ["l"] + ["r"] * 8)
    out.append("")
    return out


def headline_section(d):
    out = []
    out.append(
        f"Each cell is the geometric mean, over the {len(d.ref_keys)} (pattern, block "
        "size, queue depth) cases run on both, of the system's MiB/s divided by "
        "dm-linear's MiB/s for the same case; minimum–maximum in parentheses, and the "
        "number of cases when fewer. Above 1× is faster than dm-linear.")
    out.append("")
    out += headline_table(d, "mib_s")
    out += ["", "### p99 latency relative to dm-linear", ""]
    out.append("The same for p99 completion latency (system p99 ÷ dm-linear p99); "
               "below 1× is lower latency than dm-linear.")
    out.append("")
    out += headline_table(d, "lat_p99_us")
    out.append("")
    return out


def drain_section(table, note_missing_link):
    out = ["## Replication drain and lag (arepl)", ""]
    out.append(
        "- Drain rate is the data arepl still had queued when fio ended divided by the "
        "time it took to send it (`drained_mib / drain_s`); runs with nothing left to "
        "drain have no rate and are not counted.")
    out.append(
        "- Lag is the status field `lag_ms`, the age of the oldest unacknowledged "
        "write, sampled once a second during each fio run; the table gives the median "
        "of the per-run medians and the largest sample of any run.")
    out.append(
        "- Replicated MiB/s is the data replicated during the fio run and the drain "
        "divided by that total time; link MiB/s is the measured TCP bulk throughput "
        "between the namespaces.")
    out.append("")
    out += table
    if note_missing_link:
        out += ["", "No link measurement for: " +
                ", ".join(f"`{n}`" for n in note_missing_link) + "."]
    out.append("")
    return out


# ---------------------------------------------------------------------------
# Chart


def _import_pyplot():
    try:
        import matplotlib
    except ImportError:
        # A python3 without matplotlib (pyenv, venv) ahead of Debian's on PATH: use the
        # system interpreter, which has python3-matplotlib, once.
        system_python = "/usr/bin/python3"
        if (os.path.exists(system_python) and not os.environ.get("BENCH_REPORT_REEXEC")
                and os.path.realpath(sys.executable) != os.path.realpath(system_python)):
            os.environ["BENCH_REPORT_REEXEC"] = "1"
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(system_python, [system_python, os.path.abspath(__file__)]
                     + sys.argv[1:])
        sys.exit("bench-report: matplotlib is needed (Debian: apt install python3-matplotlib)")
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "dm-arepl-bench"
    matplotlib.rcParams["font.family"] = "DejaVu Sans"
    import matplotlib.pyplot as plt
    from matplotlib import patches, ticker, transforms
    return plt, ticker, transforms, patches


def render_png(d, path, mpl):
    plt, ticker, transforms, patches = mpl
    fig, axes = plt.subplots(1, 2, figsize=(14, 9), dpi=100)
    nets = d.networks
    width = 0.8 / len(SYSTEMS)
    panels = (
        (axes[0], "mib_s", "Throughput ÷ dm-linear (higher is better)", False),
        (axes[1], "lat_p99_us", "p99 latency ÷ dm-linear (lower is better, log scale)",
         True),
    )
    for ax, field, ylabel, log in panels:
        values = []
        for i, system in enumerate(SYSTEMS):
            xs, ys = [], []
            for j, net in enumerate(nets):
                x = j + (i - (len(SYSTEMS) - 1) / 2) * width
                s = d.summary(system, net, field)
                if s is None:
                    label = ("unavailable" if d.is_unavailable(system, net)
                             and not d.has_cases(system, net) else "no data")
                    ax.text(x, 0.02, label, rotation=90, ha="center", va="bottom",
                            fontsize=9, color="0.4",
                            transform=transforms.blended_transform_factory(
                                ax.transData, ax.transAxes))
                    continue
                xs.append(x)
                ys.append(s[0])
            values += ys
            bars = ax.bar(xs, ys, width * 0.95, label=system, color=COLORS[system],
                          zorder=2)
            ax.bar_label(bars, labels=[fmt_ratio(y) for y in ys], fontsize=9,
                         padding=2)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1.2, zorder=3)
        ax.set_xticks(range(len(nets)))
        ax.set_xticklabels(nets, fontsize=12)
        ax.set_xlabel("Network between primary and DR", fontsize=12)
        ax.set_ylabel(ylabel, fontsize=12)
        ax.tick_params(axis="y", labelsize=11)
        ax.set_xlim(-0.6, max(len(nets), 1) - 0.4)
        ax.grid(axis="y", color="0.85", zorder=0)
        positive = [v for v in values if v > 0]
        if log:
            ax.set_yscale("log")
            lo = min(positive + [1.0]) / 1.6
            hi = max(positive + [1.0]) * 2.0
            ax.set_ylim(lo, hi)
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_minor_locator(ticker.NullLocator())
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        else:
            ax.set_ylim(0, max(values + [1.0]) * 1.15)
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    axes[0].set_title("Throughput (geometric mean over cases)", fontsize=13)
    axes[1].set_title("p99 latency (geometric mean over cases)", fontsize=13)
    fig.suptitle(f"dm-arepl benchmarks, kernel {d.meta['kernel']} — "
                 "QEMU TCG; ratios to dm-linear", fontsize=15)
    handles = [patches.Patch(color=COLORS[s], label=s) for s in SYSTEMS]
    handles.append(plt.Line2D([], [], color="black", linestyle="--", label="dm-linear = 1×"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=12,
               frameon=False, bbox_to_anchor=(0.5, 0.945))
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path, dpi=100, format="png", metadata={"Software": None})
    plt.close(fig)


# ---------------------------------------------------------------------------


def write_text(path, text):
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Render `make bench` JSON-lines results as a Markdown report and "
                    "a PNG chart.")
    ap.add_argument("results", help="results file, one JSON object per line")
    ap.add_argument("--out-md", required=True, help="Markdown report to write")
    ap.add_argument("--out-png", required=True, help="PNG chart to write")
    args = ap.parse_args(argv)
    mpl = _import_pyplot()

    try:
        data = Data(*load(args.results))
    except Malformed as e:
        print(f"bench-report: {e}", file=sys.stderr)
        return 2

    missing_link = [n for n in data.networks if n not in data.links]
    for net in missing_link:
        print(f"bench-report: warning: no link line for network {net!r}", file=sys.stderr)
    if not data.ref_keys:
        print(f"bench-report: warning: no {REFERENCE} cases, so no ratios", file=sys.stderr)

    md_dir = os.path.dirname(os.path.abspath(args.out_md))
    png_ref = os.path.relpath(os.path.abspath(args.out_png), md_dir).replace(os.sep, "/")
    write_text(args.out_md, render_md(data, png_ref, missing_link))
    parent = os.path.dirname(args.out_png)
    if parent:
        os.makedirs(parent, exist_ok=True)
    render_png(data, args.out_png, mpl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
