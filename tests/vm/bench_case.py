#!/usr/bin/env python3
"""One `make bench` result line from one fio run.

Reads fio's JSON output on stdin and prints one JSON object (a "case" line of
target/bench/results.jsonl, read by scripts/bench-report.py): the case's identity from
the arguments, throughput, IOPS and latency percentiles from fio (total latency,
submission included, when fio ran with --lat_percentiles=1: arepl's writers wait at
submission; completion latency otherwise), and any extra fields given as KEY=VALUE
(a number, or else a string).

    bench_case.py SYSTEM NETWORK PATTERN BS IODEPTH [KEY=VALUE]... < fio.json
"""

import json
import sys


def main(argv):
    if len(argv) < 6:
        sys.exit(__doc__)
    system, network, pattern, bs, iodepth = argv[1:6]
    job = json.load(sys.stdin)["jobs"][0]
    write = job["write"]
    latency = "lat_ns" if "percentile" in write["lat_ns"] else "clat_ns"
    percentiles = write[latency].get("percentile", {})
    case = {
        "kind": "case",
        "system": system,
        "network": network,
        "pattern": pattern,
        "bs": bs,
        "iodepth": int(iodepth),
        "mib_s": round(write["bw_bytes"] / 2**20, 3),
        "iops": round(write["iops"], 1),
        "lat_p50_us": round(percentiles.get("50.000000", 0) / 1000, 1),
        "lat_p99_us": round(percentiles.get("99.000000", 0) / 1000, 1),
        "latency": latency,
        "written_mib": round(write["io_bytes"] / 2**20, 3),
        "runtime_s": round(write["runtime"] / 1000, 3),
    }
    for extra in argv[6:]:
        key, _, value = extra.partition("=")
        try:
            case[key] = float(value)
        except ValueError:
            case[key] = value
    if "drain_s" in case:
        # What left the primary per second, from the first write to the last ack.
        spent = case["runtime_s"] + case["drain_s"]
        case["sent_mib_s"] = round(case["written_mib"] / spent, 3) if spent else 0.0
    print(json.dumps(case, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv)
