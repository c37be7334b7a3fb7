#!/usr/bin/env python3
"""CPU per thread of some processes, between two moments.

Usage:
  thread_cpu.py snapshot PID[,PID...] OUT.json
      utime + stime (seconds) of every thread of each process, by thread
      name (/proc/PID/task/TID/comm), with the time taken.
  thread_cpu.py diff BEFORE.json AFTER.json DELIVERIES OUT.json
      Per process and thread name: CPU seconds between the two snapshots,
      share of a core, and µs per delivery.
"""
import json
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def snapshot(pids, path):
    out = {"t": time.time(), "processes": {}}
    for pid in pids.split(","):
        threads = {}
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                    stat = open(f"/proc/{pid}/task/{tid}/stat").read()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                secs = (int(fields[11]) + int(fields[12])) / TICK
                threads[name] = threads.get(name, 0) + secs
        except OSError:
            pass
        out["processes"][pid] = threads
    json.dump(out, open(path, "w"))


def diff(before, after, deliveries, path):
    a, b = json.load(open(before)), json.load(open(after))
    secs = b["t"] - a["t"]
    n = max(float(deliveries), 1)
    out = {"secs": round(secs, 3), "deliveries": n, "processes": {}}
    for pid, threads in b["processes"].items():
        old = a["processes"].get(pid, {})
        rows = {}
        for name, cpu in threads.items():
            d = cpu - old.get(name, 0)
            if d > 0:
                rows[name] = {"cpu_secs": round(d, 3), "share_of_a_core": round(d / secs, 3),
                              "us_per_delivery": round(d * 1e6 / n, 2)}
        out["processes"][pid] = rows
    json.dump(out, open(path, "w"), indent=1)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "snapshot":
        snapshot(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "diff":
        diff(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
