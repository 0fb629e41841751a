#!/usr/bin/env python3
"""Where the guest's CPU time went during a benchmark run, by thread kind.

    cpu_split.py snapshot FILE                  (writes the counters now)
    cpu_split.py diff FILE SYSTEM NETWORK REP [KEY=VALUE]...
                                                (prints a "cpu_split" result line with
                                                 the extra fields KEY=VALUE)

Counters, in seconds: each thread's user and system time, summed by name with the
per-device and per-CPU suffixes dropped (arepl_tx/db and arepl_tx/web count as
arepl_tx, kworker/1:2 as kworker), plus the whole guest's interrupt and softirq time
from /proc/stat (network and block completions run there, in whatever thread).
"""

import json
import os
import re
import sys

TICK = os.sysconf("SC_CLK_TCK")


def counters():
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
            try:
                stat = open(f"/proc/{pid}/task/{tid}/stat").read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks = int(fields[11]) + int(fields[12])
            key = re.sub(r"[/:].*$", "", name)
            out[key] = out.get(key, 0) + ticks / TICK
    cpu = open("/proc/stat").readline().split()
    out["[irq]"] = int(cpu[6]) / TICK
    out["[softirq]"] = int(cpu[7]) / TICK
    return out


def main(argv):
    if len(argv) == 3 and argv[1] == "snapshot":
        json.dump(counters(), open(argv[2], "w"))
    elif len(argv) >= 6 and argv[1] == "diff":
        before = json.load(open(argv[2]))
        after = counters()
        spent = {k: round(v - before.get(k, 0), 2) for k, v in after.items()}
        top = dict(sorted(((k, v) for k, v in spent.items() if v >= 0.05), key=lambda kv: -kv[1]))
        line = {"kind": "cpu_split", "system": argv[3], "network": argv[4],
                "rep": int(argv[5]), "seconds": top}
        line.update(extra.split("=", 1) for extra in argv[6:])
        print(json.dumps(line, sort_keys=True))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
