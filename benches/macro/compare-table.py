#!/usr/bin/env python3
"""Prints the Herald vs Socket.IO table (Markdown) from compare-socketio.sh's
JSON reports in the directory given."""
import json
import os
import sys

out = sys.argv[1]


def load(name):
    path = os.path.join(out, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None


def ms(us):
    return "-" if us is None else f"{us / 1000:.2f} ms"


def row(label, h, s, fmt, better_low):
    if h is None or s is None:
        ratio = "-"
    elif h == 0 or s == 0:
        ratio = "-"
    else:
        ratio = f"{(s / h if better_low else h / s):.1f}x"
    print(f"| {label} | {fmt(h)} | {fmt(s)} | {ratio} |")


def get(r, *keys):
    for k in keys:
        if r is None:
            return None
        r = r.get(k) if isinstance(r, dict) else None
    return r


print("| figure | Herald | Socket.IO | Herald better by |")
print("|---|---|---|---|")
h, s = load("herald-idle"), load("socketio-idle")
row("RSS per idle connection at 15,000", get(h, "target", "rss_bytes_per_connection"),
    get(s, "target", "rss_bytes_per_connection"), lambda v: "-" if v is None else f"{v:,.0f} B", True)
row("connections ok of 15,000", get(h, "connections", "ok"), get(s, "connections", "ok"),
    lambda v: "-" if v is None else f"{v:,}", False)
for case, label in (("5000", "1 room x 5,000"), ("10", "1,000 rooms x 10")):
    h, s = load(f"herald-{case}"), load(f"socketio-{case}")
    row(f"{label}: max sustained deliveries/s", get(h, "rate", "max_sustained_deliveries_per_sec"),
        get(s, "rate", "max_sustained_deliveries_per_sec"), lambda v: "-" if v is None else f"{v:,.0f}", False)
    hh, sh = load(f"herald-{case}-half"), load(f"socketio-{case}-half")
    for q, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        row(f"{label}: {name} at half of own max", get(hh, "latency_us", q), get(sh, "latency_us", q), ms, True)
    hs = load(f"herald-{case}-same")
    for q, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        row(f"{label}: {name} at Socket.IO's half max (same load)", get(hs, "latency_us", q),
            get(sh, "latency_us", q), ms, True)
    cpu = lambda r: get(r, "rate", "steps")[0].get("target_cpu_us_per_delivery") if get(r, "rate", "steps") else None
    row(f"{label}: target CPU per delivery at Socket.IO's half max (µs)", cpu(hs), cpu(sh),
        lambda v: "-" if v is None else f"{v:.2f}", True)
    rate = lambda r: get(r, "rate", "steps")[0].get("deliveries_per_sec") if get(r, "rate", "steps") else None
    row(f"{label}: deliveries/s of the half-max runs", rate(hh), rate(sh),
        lambda v: "-" if v is None else f"{v:,.0f}", False)
