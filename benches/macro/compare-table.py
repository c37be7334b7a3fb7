#!/usr/bin/env python3
"""Prints the Herald vs Socket.IO table (Markdown) from compare-socketio.sh's
JSON reports. Give one $OUT directory, or several (one per run): each figure
is then the median over the runs, followed by every run's value.

    python3 benches/macro/compare-table.py target/compare-x1 target/compare-x2 target/compare-x3
"""
import json
import os
import statistics
import sys

dirs = sys.argv[1:]
if not dirs:
    sys.exit("usage: compare-table.py OUT_DIR [OUT_DIR ...]")


def load(out, name):
    path = os.path.join(out, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None


def get(r, *keys):
    for k in keys:
        if r is None:
            return None
        if isinstance(k, int):
            r = r[k] if isinstance(r, list) and k < len(r) else None
        else:
            r = r.get(k) if isinstance(r, dict) else None
    return r


def across(name, *keys):
    """One figure from every run directory (None where it is missing)."""
    return [get(load(out, name), *keys) for out in dirs]


def median(values):
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def cell(values, fmt):
    m = median(values)
    if m is None:
        return "-"
    if len(values) == 1:
        return fmt(m)
    runs = " / ".join("-" if v is None else fmt(v) for v in values)
    return f"{fmt(m)} ({runs})"


def row(label, h, s, fmt, better_low):
    mh, ms_ = median(h), median(s)
    if not mh or not ms_:
        ratio = "-"
    else:
        ratio = f"{(ms_ / mh if better_low else mh / ms_):.1f}x"
    print(f"| {label} | {cell(h, fmt)} | {cell(s, fmt)} | {ratio} |")


def ms(us):
    if us is None:
        return "-"
    v = us / 1000
    return f"{v:.3g} ms" if v < 1000 else f"{v:,.0f} ms"


count = lambda v: f"{v:,.0f}"
print("| figure | Herald | Socket.IO | Herald better by |")
print("|---|---|---|---|")
row("RSS per idle connection at 15,000", across("herald-idle", "target", "rss_bytes_per_connection"),
    across("socketio-idle", "target", "rss_bytes_per_connection"), lambda v: f"{v:,.0f} B", True)
row("connections ok of 15,000", across("herald-idle", "connections", "ok"),
    across("socketio-idle", "connections", "ok"), count, False)
row("connect latency p99", across("herald-idle", "connect_latency_us", "p99"),
    across("socketio-idle", "connect_latency_us", "p99"), ms, True)
for case, label in (("5000", "1 room x 5,000"), ("10", "1,000 rooms x 10")):
    row(f"{label}: max sustained deliveries/s", across(f"herald-{case}", "rate", "max_sustained_deliveries_per_sec"),
        across(f"socketio-{case}", "rate", "max_sustained_deliveries_per_sec"), count, False)
    step = ("rate", "steps", 0)
    row(f"{label}: deliveries/s at Socket.IO's half max (same load)",
        across(f"herald-{case}-same", *step, "deliveries_per_sec"),
        across(f"socketio-{case}-half", *step, "deliveries_per_sec"), count, False)
    for q, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        row(f"{label}: {name} at Socket.IO's half max (same load)", across(f"herald-{case}-same", "latency_us", q),
            across(f"socketio-{case}-half", "latency_us", q), ms, True)
    row(f"{label}: target CPU per delivery at Socket.IO's half max (µs)",
        across(f"herald-{case}-same", *step, "target_cpu_us_per_delivery"),
        across(f"socketio-{case}-half", *step, "target_cpu_us_per_delivery"), lambda v: f"{v:.3g}", True)
    row(f"{label}: deliveries/s of the half-own-max runs", across(f"herald-{case}-half", *step, "deliveries_per_sec"),
        across(f"socketio-{case}-half", *step, "deliveries_per_sec"), count, False)
    for q, name in (("p50", "p50"), ("p99", "p99")):
        row(f"{label}: {name} at half of own max", across(f"herald-{case}-half", "latency_us", q),
            across(f"socketio-{case}-half", "latency_us", q), ms, True)
lost = sum(v or 0 for name in ("5000-half", "5000-same", "10-half", "10-same")
           for t in ("herald", "socketio") for v in across(f"{t}-{name}", "lost"))
print()
print(f"Lost in the half-max and same-load steps, both targets, all runs: {lost:,}.")
