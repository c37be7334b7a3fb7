#!/usr/bin/env python3
"""Markdown tables from runs of benches/scripts/socketio-cluster.sh.

Usage: python3 benches/scripts/cluster_table.py OUT
(OUT holds fanout-RATE-ROUND.json and, when Redis was read,
redis-RATE-ROUND.json). Per rate: the median over the rounds, with each
round's figure in brackets for the p99s.
"""
import glob
import json
import os
import re
import statistics
import sys


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ms(us):
    if us is None:
        return "–"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.3g} ms"


def num(x, fmt="{:,.0f}"):
    return "–" if x is None else fmt.format(x)


def get(v, *path):
    for k in path:
        if isinstance(v, list) and isinstance(k, int) and k < len(v):
            v = v[k]
        elif isinstance(v, dict) and v.get(k) is not None:
            v = v[k]
        else:
            return None
    return v


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    runs = {}
    for path in glob.glob(os.path.join(out, "fanout-*.json")):
        m = re.match(r"fanout-([0-9.]+)(?:-(.+))?\.json$", os.path.basename(path))
        if not m:
            continue
        rate, tag = float(m.group(1)), m.group(2) or ""
        report = json.load(open(path))
        redis_path = os.path.join(out, f"redis-{m.group(1)}{'-' + tag if tag else ''}.json")
        redis = json.load(open(redis_path)) if os.path.exists(redis_path) else None
        runs.setdefault(rate, []).append((tag, report, redis))
    if not runs:
        sys.exit(f"no fanout-*.json in {out}: is it an $OUT of socketio-cluster.sh?")
    first = next(iter(runs.values()))[0][1]
    print(f"targets: {', '.join(first.get('targets', []))}; "
          f"placement: {json.dumps(first.get('placement'))}")
    print()
    print("| publishes/s | deliveries/s | same-node p50 | same-node p99 (runs) | cross-node p50 "
          "| cross-node p99 (runs) | cross-node p99.9 | lost same / cross | nodes' CPU per delivery | kept up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate in sorted(runs):
        rs = sorted(runs[rate], key=lambda r: r[0])
        step = [get(r, "rate", "steps", 0) or {} for _, r, _ in rs]
        side = lambda s, k: [get(r, "locality", s, "latency_us", k) for _, r, _ in rs]
        lost = lambda s: sum(get(r, "locality", s, "lost") or 0 for _, r, _ in rs)
        p99s = lambda s: " / ".join(ms(x) for x in side(s, "p99"))
        print(f"| {rate:,.0f} | {num(med([s.get('deliveries_per_sec') for s in step]))} "
              f"| {ms(med(side('same_node', 'p50')))} | {ms(med(side('same_node', 'p99')))} ({p99s('same_node')}) "
              f"| {ms(med(side('cross_node', 'p50')))} | {ms(med(side('cross_node', 'p99')))} ({p99s('cross_node')}) "
              f"| {ms(med(side('cross_node', 'p999')))} | {lost('same_node')} / {lost('cross_node')} "
              f"| {num(med([s.get('target_cpu_us_per_delivery') for s in step]), '{:.3g} µs')} "
              f"| {sum(1 for s in step if s.get('kept_up'))}/{len(step)} |")
    if any(redis for rs in runs.values() for _, _, redis in rs):
        print()
        print("| publishes/s | Redis commands per publish | of which | bytes in / out per publish "
              "| Redis CPU per publish |")
        print("|---|---|---|---|---|")
        for rate in sorted(runs):
            rd = [redis for _, _, redis in runs[rate] if redis]
            if not rd:
                continue
            per = lambda k: med([get(x, "per_publish", k) for x in rd])
            names = {}
            for x in rd:
                for k, v in x["commands"].items():
                    names.setdefault(k, []).append(v / max(x["publishes"], 1))
            which = ", ".join(f"{k} {med(v):.2f}" for k, v in sorted(names.items(), key=lambda kv: -med(kv[1])))
            print(f"| {rate:,.0f} | {num(per('commands'), '{:.2f}')} | {which} "
                  f"| {num(per('bytes_in'))} / {num(per('bytes_out'))} B | {num(per('cpu_us'), '{:.1f} µs')} |")


if __name__ == "__main__":
    main()
