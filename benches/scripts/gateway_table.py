#!/usr/bin/env python3
"""Markdown tables for BENCHMARKS.md from runs of gateway-macro.sh.

Usage: python3 benches/scripts/gateway_table.py RUN_DIR [RUN_DIR ...]
(each RUN_DIR is an $OUT of benches/scripts/gateway-macro.sh). Every
figure is the median over the runs; p99 also lists each run's value.
"""
import json
import statistics
import sys


def load(run, name, required=True):
    try:
        with open(f"{run}/{name}") as f:
            return json.load(f)
    except FileNotFoundError:
        if required:
            sys.exit(f"{run}/{name} is missing: is {run} an $OUT of gateway-macro.sh?")
        return None


def ms(us):
    if us is None:
        return "–"
    if us < 1000:
        return f"{us:.0f} µs"
    v = us / 1000
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.3g} ms"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cpu(x):
    return "–" if x is None else f"{x:.3g} µs"


def raw(runs):
    print("| connections | deliveries/s (runs) | writer CPU per delivery (user + sys) | whole process per delivery |")
    print("|---|---|---|---|")
    for n, name in [(1000, "raw-max-1000.json"), (5000, "raw-max.json"), (9000, "raw-max-9000.json")]:
        v = [load(r, name) for r in runs]
        d = [x["deliveries_per_sec"] for x in v]
        user = med([x["writer_cpu_us_per_delivery"]["user"] for x in v])
        sys_ = med([x["writer_cpu_us_per_delivery"]["sys"] for x in v])
        proc = med([x["process_cpu_us_per_delivery"] for x in v])
        runs_s = " / ".join(f"{x:,.0f}" for x in d)
        print(f"| {n:,} | {med(d):,.0f} ({runs_s}) | {user:.2f} + {sys_:.2f} µs | {proc:.1f} µs |")
    lat = [load(r, "raw-sweep.json")["latency_us"] for r in runs]
    p50 = " / ".join(ms(x["p50"]) for x in lat)
    p99 = " / ".join(ms(x["p99"]) for x in lat)
    print()
    print(f"One message to all 5,000 connections, first write to last byte received: "
          f"p50 {ms(med([x['p50'] for x in lat]))} ({p50}), p99 {ms(med([x['p99'] for x in lat]))} ({p99}).")


def idle(runs):
    print("| node | RSS empty | RSS with 15,000 | per connection (runs) | ready |")
    print("|---|---|---|---|---|")
    for label, name in [("`herald serve` as shipped (lazy arena commit)", "idle.json"),
                        ("`MIMALLOC_ARENA_EAGER_COMMIT=2` (mimalloc's default)", "idle-eager.json")]:
        v = [load(r, name) for r in runs]
        t = [x["target"] for x in v]
        per = [x["rss_bytes_per_connection"] for x in t]
        ready = " / ".join(f"{x['connections']['ok']:,}" for x in v)
        print(f"| {label} | {med([x['rss_bytes_before'] for x in t]) / 1e6:.1f} MB | "
              f"{med([x['rss_bytes'] for x in t]) / 1e6:.1f} MB | {med(per):,.0f} B "
              f"({' / '.join(f'{x:,.0f}' for x in per)}) | {ready} |")


def fanout(runs, case, shards):
    sweeps = [load(r, f"{case}-s{shards}.json") for r in runs]
    halves = [load(r, f"{case}-s{shards}-half.json", required=False) for r in runs]
    maxes = [s["rate"]["max_sustained_deliveries_per_sec"] for s in sweeps]
    print("| msgs/s | deliveries/s | p50 | p90 | p99 (runs) | p99.9 | node CPU/delivery | generator CPU/delivery | send lag p99 | kept up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = list(zip(*[s["rate"]["steps"] for s in sweeps]))
    half_steps = [h["rate"]["steps"][0] for h in halves if h]
    for label, steps in [(s[0]["name"], s) for s in rows] + ([("half of max", half_steps)] if half_steps else []):
        lat = [s["latency_us"] for s in steps]
        if label == "half of max":
            rate = " / ".join(f"{s['rate']:,.0f}" for s in steps)
        else:
            rate = f"{float(label.removesuffix('/s')):,.0f}"
        dps = med([s["expected"] / s["duration_secs"] for s in steps])
        kept = sum(1 for s in steps if s["kept_up"])
        p99s = " / ".join(ms(x["p99"]) for x in lat)
        print(f"| {'**half of max**: ' + rate if label == 'half of max' else rate} | {dps:,.0f} | "
              f"{ms(med([x['p50'] for x in lat]))} | {ms(med([x['p90'] for x in lat]))} | "
              f"{ms(med([x['p99'] for x in lat]))} ({p99s}) | {ms(med([x['p999'] for x in lat]))} | "
              f"{cpu(med([s['target_cpu_us_per_delivery'] for s in steps]))} | "
              f"{cpu(med([s['loadgen_cpu_us_per_delivery'] for s in steps]))} | "
              f"{ms(med([s['send_lag_us']['p99'] for s in steps]))} | {kept}/{len(steps)} |")
    every = [s for row in rows for s in row] + half_steps
    lost_kept = sum(s["lost"] for s in every if s["kept_up"])
    lost_other = sum(s["lost"] for s in every if not s["kept_up"])
    dup = sum(s["duplicated"] for s in every)
    ooo = sum(s["out_of_order"] for s in every)
    print()
    print(f"Max sustained deliveries/s per run: {' / '.join(f'{m:,.0f}' if m else '–' for m in maxes)}. "
          f"Lost in kept-up steps: {lost_kept:,}; in steps not kept up: {lost_other:,} "
          f"(not delivered within the drain window); duplicated {dup}; out of order {ooo}.")


def main():
    runs = sys.argv[1:]
    if not runs:
        sys.exit(__doc__)
    print("### Kernel ceiling\n")
    raw(runs)
    print("\n### Idle memory\n")
    idle(runs)
    for case, title in [("fanout-5000", "1 room × 5,000"), ("fanout-10x1000", "1,000 rooms × 10")]:
        for shards in (2, 1):
            print(f"\n### {title}, {shards} shard{'s' if shards > 1 else ''}\n")
            fanout(runs, case, shards)


if __name__ == "__main__":
    main()
