#!/usr/bin/env python3
"""Markdown tables from benches/scripts/herald-cluster.sh's results.

Usage: python3 benches/scripts/herald_cluster_table.py [OUT]
(OUT: benches/results/herald-cluster). Medians over the rounds, with each
round's figure in brackets where it matters; the load average (1 min) and
the machine's CPU use over the second before each run, from loadavg.txt,
as the range over the runs a row is made of.
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


def f(x, fmt="{:,.0f}"):
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


def load(path):
    return json.load(open(path)) if os.path.exists(path) else None


def loads(d):
    """name -> (loadavg 1 min, cpu busy %), the last entry per name (the
    attempt that was kept), and the names marked CONTENDED after it."""
    out, contended = {}, set()
    path = os.path.join(d, "loadavg.txt")
    if not os.path.exists(path):
        return out, contended
    for line in open(path):
        m = re.match(r"(\S+) \S+ loadavg (\S+) \S+ \S+ cpu-busy-1s (\d+)%", line)
        if m:
            out[m.group(1)] = (float(m.group(2)), int(m.group(3)))
            contended.discard(m.group(1))
        m = re.match(r"(\S+) CONTENDED", line)
        if m:
            contended.add(m.group(1))
    return out, contended


def load_cell(la, names):
    xs = [la[n] for n in names if n in la]
    if not xs:
        return "–"
    l = [x[0] for x in xs]
    c = [x[1] for x in xs]
    return f"{min(l):.2f}–{max(l):.2f} ({min(c)}–{max(c)} %)"


def runs(d, prefix, rate):
    """Round -> report for DIR/PREFIX-RATE-ROUND.json."""
    out = {}
    for p in glob.glob(os.path.join(d, f"{prefix}-{rate}-*.json")):
        m = re.match(rf"{re.escape(prefix)}-{rate}-(\d+)\.json$", os.path.basename(p))
        if m:
            out[int(m.group(1))] = json.load(open(p))
    return dict(sorted(out.items()))


def rates_in(d, prefix):
    rs = set()
    for p in glob.glob(os.path.join(d, f"{prefix}-*-*.json")):
        m = re.match(rf"{re.escape(prefix)}-([0-9.]+)-(\d+)\.json$", os.path.basename(p))
        if m:
            rs.add(m.group(1))
    return sorted(rs, key=float)


def latency(out):
    base = os.path.join(out, "latency")
    if not os.path.isdir(base):
        return
    print("## Same-node vs cross-node latency (2 nodes)\n")
    kernel = os.path.join(base, "kernel")
    kla, _ = loads(kernel)
    sides = {}
    for kind in ("herald", "socketio"):
        d = os.path.join(base, kind)
        sides[kind] = (d, *loads(d))
    print("| publishes/s | deliveries/s | system | same-node p50 | same-node p99 (runs) | cross-node p50 | "
          "cross-node p99 (runs) | cross-node p99.9 | cross / same p50 (runs) | lost same / cross | "
          "nodes' CPU per delivery | kept up | load avg (CPU busy before) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rate in rates_in(os.path.join(base, "herald"), "fanout"):
        k = runs(kernel, "kernel", rate)
        if k:
            lat = [r["latency_us"] for r in k.values()]
            print(f"| {float(rate):,.0f} | {float(rate) * 10:,.0f} | kernel floor | {ms(med(x['p50'] for x in lat))} "
                  f"| {ms(med(x['p99'] for x in lat))} ({' / '.join(ms(x['p99']) for x in lat)}) | – | – | – | – | – "
                  f"| {f(med(r['writer_cpu_us_per_delivery']['user'] + r['writer_cpu_us_per_delivery']['sys'] for r in k.values()), '{:.3g} µs')} (writer) | – "
                  f"| {load_cell(kla, [f'kernel-{rate}-{i}' for i in k])} |")
        for kind, (d, la, cont) in sides.items():
            rs = runs(d, "fanout", rate)
            if not rs:
                continue
            side = lambda s, q: [get(r, "locality", s, "latency_us", q) for r in rs.values()]
            ratio = [c / s if s and c else None for s, c in zip(side("same_node", "p50"), side("cross_node", "p50"))]
            step = [get(r, "rate", "steps", 0) or {} for r in rs.values()]
            lost = lambda s: sum(get(r, "locality", s, "lost") or 0 for r in rs.values())
            names = [f"fanout-{rate}-{i}" for i in rs]
            flag = " ⚠ contended" if any(n in cont for n in names) else ""
            print(f"| {float(rate):,.0f} | {f(med(s.get('deliveries_per_sec') for s in step))} | "
                  f"{'Herald' if kind == 'herald' else 'Socket.IO'} "
                  f"| {ms(med(side('same_node', 'p50')))} | {ms(med(side('same_node', 'p99')))} "
                  f"({' / '.join(ms(x) for x in side('same_node', 'p99'))}) "
                  f"| {ms(med(side('cross_node', 'p50')))} | {ms(med(side('cross_node', 'p99')))} "
                  f"({' / '.join(ms(x) for x in side('cross_node', 'p99'))}) | {ms(med(side('cross_node', 'p999')))} "
                  f"| {f(med(ratio), '{:.2f}')}× ({' / '.join(f(x, '{:.2f}') for x in ratio)}) "
                  f"| {lost('same_node')} / {lost('cross_node')} "
                  f"| {f(med(s.get('target_cpu_us_per_delivery') for s in step), '{:.3g} µs')} "
                  f"| {sum(1 for s in step if s.get('kept_up'))}/{len(step)} | {load_cell(la, names)}{flag} |")
    print()
    print("Publish→ack p50 / p99 (median of the rounds) and the generator's CPU per delivery:\n")
    print("| publishes/s | system | ack p50 | ack p99 | generator CPU per delivery | send lag p99 |")
    print("|---|---|---|---|---|---|")
    for rate in rates_in(os.path.join(base, "herald"), "fanout"):
        for kind, (d, _, _) in sides.items():
            step = [get(r, "rate", "steps", 0) or {} for r in runs(d, "fanout", rate).values()]
            if step:
                print(f"| {float(rate):,.0f} | {'Herald' if kind == 'herald' else 'Socket.IO'} "
                      f"| {ms(med(get(s, 'ack_latency_us', 'p50') for s in step))} "
                      f"| {ms(med(get(s, 'ack_latency_us', 'p99') for s in step))} "
                      f"| {f(med(s.get('loadgen_cpu_us_per_delivery') for s in step), '{:.3g} µs')} "
                      f"| {ms(med(get(s, 'send_lag_us', 'p99') for s in step))} |")
    print()
    redis_table([(("Herald" if k == "herald" else "Socket.IO"), d, "fanout") for k, (d, _, _) in sides.items()],
                title="Redis per publish, 2 nodes")


def redis_rows(d, prefix, rate):
    rs = []
    for p in glob.glob(os.path.join(d, f"redis-{prefix}-{rate}-*.json")):
        rs.append(json.load(open(p)))
    return rs


def commands_mix(steady):
    names = {}
    for x in steady:
        for k, v in x["commands"].items():
            names.setdefault(k, []).append(v / max(x["publishes"], 1))
    return ", ".join(f"{k} {med(v):.2f}" for k, v in sorted(names.items(), key=lambda kv: -med(kv[1]))
                     if med(v) >= 0.05)


def redis_table(series, title):
    print(f"**{title}** (the step's steady part: from 1 s after its start to 0.5 s before its end, "
          "redis_window.py; median of the rounds):\n")
    print("| publishes/s | system | commands per publish (sent by clients) | of which, per publish | "
          "bytes in / out per publish | Redis CPU per publish (less idle) | Redis CPU, share of a core | "
          "whole run: commands, CPU per publish |")
    print("|---|---|---|---|---|---|---|---|")
    all_rates = sorted({r for _, d, p in series for r in rates_in(d, p)}, key=float)
    for rate in all_rates:
        for label, d, prefix in series:
            rows = redis_rows(d, prefix, rate)
            st = [x["steady"] for x in rows if x.get("steady")]
            if not st:
                continue
            pp = lambda k: med(get(x, "per_publish", k) for x in st)
            print(f"| {float(rate):,.0f} | {label} | {f(pp('commands'), '{:.2f}')} ({f(pp('client_commands'), '{:.2f}')}) "
                  f"| {commands_mix(st)} | {f(pp('bytes_in'))} / {f(pp('bytes_out'))} B "
                  f"| {f(pp('cpu_us'), '{:.1f}')} µs ({f(pp('cpu_us_less_idle'), '{:.1f}')} µs) "
                  f"| {f(med(x.get('cpu_share_of_a_core') for x in st), '{:.3f}')} "
                  f"| {f(med(get(x, 'per_publish', 'commands') for x in rows), '{:.2f}')}, "
                  f"{f(med(get(x, 'per_publish', 'cpu_us') for x in rows), '{:.1f}')} µs |")
    print()


def throughput(out):
    base = os.path.join(out, "throughput")
    if not os.path.isdir(base):
        return
    for shape, title, fan in (("rooms10", "Rooms of 10 (9,000 subscribers, 900 rooms, 20 publishers)", 10),
                              ("room5000", "One room of 5,000 (1 publisher)", 5000)):
        c, s = os.path.join(base, f"{shape}-cluster3"), os.path.join(base, f"{shape}-single")
        if not os.path.isdir(c):
            continue
        cla, ccont = loads(c)
        sla, scont = loads(s)
        print(f"## Deliveries/s, {title}: 3 nodes vs 1 node\n")
        print("| publishes/s | deliveries/s | 3 nodes: p50 | p99 (runs) | lost | kept up | nodes' CPU per delivery "
              "| Redis CPU per publish | Redis, share of a core | load avg (CPU busy before) "
              "| 1 node: p50 | p99 (runs) | kept up | node CPU per delivery | load avg (CPU busy before) "
              "| CPU per delivery, 3 nodes / 1 |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for rate in sorted(set(rates_in(c, "fanout")) | set(rates_in(s, "fanout")), key=float):
            cr, sr = runs(c, "fanout", rate), runs(s, "fanout", rate)
            cs = [get(r, "rate", "steps", 0) or {} for r in cr.values()]
            ss = [get(r, "rate", "steps", 0) or {} for r in sr.values()]
            rd = [x["steady"] for x in redis_rows(c, "fanout", rate) if x.get("steady")]
            p = lambda st, q: [get(x, "latency_us", q) for x in st]
            cpu = lambda st: med(x.get("target_cpu_us_per_delivery") for x in st)
            ccpu, scpu = cpu(cs), cpu(ss)
            cn = [f"fanout-{rate}-{i}" for i in cr]
            sn = [f"fanout-{rate}-{i}" for i in sr]
            cf = " ⚠" if any(n in ccont for n in cn) else ""
            sf = " ⚠" if any(n in scont for n in sn) else ""
            print(f"| {float(rate):,.0f} | {float(rate) * fan:,.0f} "
                  f"| {ms(med(p(cs, 'p50')))} | {ms(med(p(cs, 'p99')))} ({' / '.join(ms(x) for x in p(cs, 'p99'))}) "
                  f"| {sum(x.get('lost') or 0 for x in cs)} | {sum(1 for x in cs if x.get('kept_up'))}/{len(cs)} "
                  f"| {f(ccpu, '{:.3g} µs')} "
                  f"| {f(med(get(x, 'per_publish', 'cpu_us') for x in rd), '{:.1f} µs')} "
                  f"| {f(med(x.get('cpu_share_of_a_core') for x in rd), '{:.3f}')} | {load_cell(cla, cn)}{cf} "
                  f"| {ms(med(p(ss, 'p50')))} | {ms(med(p(ss, 'p99')))} ({' / '.join(ms(x) for x in p(ss, 'p99'))}) "
                  f"| {sum(1 for x in ss if x.get('kept_up'))}/{len(ss)} | {f(scpu, '{:.3g} µs')} "
                  f"| {load_cell(sla, sn)}{sf} "
                  f"| {f(ccpu / scpu if ccpu and scpu else None, '{:.2f}')} |")
        print()
        redis_table([("3 nodes", c, "fanout")], title=f"Redis per publish, {title}, 3 nodes")


def cross(out):
    d = os.path.join(out, "cross")
    if not os.path.isdir(d):
        return
    la, cont = loads(d)
    print("## CPU per delivery: every delivery cross-node, same-node through Redis, no Redis\n")
    print("| case | deliveries/s | p50 | p99 (runs) | lost | nodes' CPU per delivery (runs) | generator CPU per delivery "
          "| Redis commands per publish (clients) | bytes in / out per publish | Redis CPU per publish | load avg (CPU busy before) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, label in (("cross", "2 nodes, all subscribers on B, all publishers on A"),
                        ("local-redis", "1 node with Redis (all same-node)"),
                        ("single", "1 node without Redis")):
        rs = {}
        for p in glob.glob(os.path.join(d, f"{kind}-*.json")):
            m = re.match(rf"{kind}-(\d+)\.json$", os.path.basename(p))
            if m:
                rs[int(m.group(1))] = json.load(open(p))
        if not rs:
            continue
        rs = dict(sorted(rs.items()))
        st = [get(r, "rate", "steps", 0) or {} for r in rs.values()]
        rd = [json.load(open(os.path.join(d, f"redis-{kind}-{i}.json")))["steady"] for i in rs
              if os.path.exists(os.path.join(d, f"redis-{kind}-{i}.json"))]
        rd = [x for x in rd if x]
        names = [f"{kind}-{i}" for i in rs]
        flag = " ⚠" if any(n in cont for n in names) else ""
        cpu = [x.get("target_cpu_us_per_delivery") for x in st]
        pp = lambda k: med(get(x, "per_publish", k) for x in rd)
        print(f"| {label} | {f(med(x.get('deliveries_per_sec') for x in st))} "
              f"| {ms(med(get(x, 'latency_us', 'p50') for x in st))} "
              f"| {ms(med(get(x, 'latency_us', 'p99') for x in st))} ({' / '.join(ms(get(x, 'latency_us', 'p99')) for x in st)}) "
              f"| {sum(x.get('lost') or 0 for x in st)} "
              f"| {f(med(cpu), '{:.1f}')} µs ({' / '.join(f(x, '{:.1f}') for x in cpu)}) "
              f"| {f(med(x.get('loadgen_cpu_us_per_delivery') for x in st), '{:.1f}')} µs "
              f"| {f(pp('commands'), '{:.2f}')} ({f(pp('client_commands'), '{:.2f}')}) "
              f"| {f(pp('bytes_in'))} / {f(pp('bytes_out'))} B | {f(pp('cpu_us'), '{:.1f} µs')} "
              f"| {load_cell(la, names)}{flag} |")
    print()


def threads(out):
    """Per-thread CPU per delivery (thread_cpu.py), where runs recorded it."""
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "**", "threads-*.json"), recursive=True)):
        d = json.load(open(path))
        rel = os.path.relpath(path, out)
        parts = []
        for i, (pid, th) in enumerate(d["processes"].items()):
            cells = ", ".join(f"{k} {v['us_per_delivery']:.1f}" for k, v in
                              sorted(th.items(), key=lambda kv: -kv[1]["cpu_secs"]) if v["us_per_delivery"] >= 0.1)
            parts.append(f"node {i + 1}: {cells}")
        rows.append((rel, d["deliveries"], "; ".join(parts)))
    if not rows:
        return
    print("## Node CPU per thread, µs per delivery over the step (thread_cpu.py)\n")
    print("| run | deliveries | per node and thread |")
    print("|---|---|---|")
    for rel, n, cells in rows:
        print(f"| {rel} | {n:,.0f} | {cells} |")
    print()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "benches/results/herald-cluster"
    latency(out)
    throughput(out)
    cross(out)
    threads(out)


if __name__ == "__main__":
    main()
