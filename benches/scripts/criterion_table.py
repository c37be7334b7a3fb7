#!/usr/bin/env python3
"""Prints criterion results as a Markdown table of median times per operation.

Usage: criterion_table.py [CRITERION_DIR ...]

Each CRITERION_DIR is a criterion output directory (default: target/criterion
under the workspace root), or a copy of one saved after a run. With several
directories (several runs), the table shows each run's median and the median
across runs.
"""
import json
import pathlib
import statistics
import sys


def medians(root: pathlib.Path) -> dict:
    out = {}
    for est in sorted(root.glob("**/new/estimates.json")):
        bench = est.parent.parent.relative_to(root).as_posix()
        with open(est) as f:
            data = json.load(f)
        m = data["median"]
        out[bench] = (
            m["point_estimate"],
            m["confidence_interval"]["lower_bound"],
            m["confidence_interval"]["upper_bound"],
        )
    return out


def fmt(ns: float) -> str:
    if ns >= 1000:
        return f"{ns / 1000:.2f} µs"
    return f"{ns:.1f} ns"


def main() -> None:
    default = pathlib.Path(__file__).resolve().parents[2] / "target" / "criterion"
    roots = [pathlib.Path(a) for a in sys.argv[1:]] or [default]
    runs = [medians(r) for r in roots]
    benches = sorted(set().union(*runs))
    if len(runs) == 1:
        print("| benchmark | median | 95% CI of the median |")
        print("| --- | ---: | ---: |")
        for b in benches:
            if b in runs[0]:
                p, lo, hi = runs[0][b]
                print(f"| {b} | {fmt(p)} | {fmt(lo)} – {fmt(hi)} |")
        return
    head = " | ".join(f"run {i + 1}" for i in range(len(runs)))
    print(f"| benchmark | {head} | median of runs |")
    print("| --- |" + " ---: |" * (len(runs) + 1))
    for b in benches:
        vals = [r[b][0] for r in runs if b in r]
        cells = " | ".join(fmt(r[b][0]) if b in r else "–" for r in runs)
        print(f"| {b} | {cells} | {fmt(statistics.median(vals))} |")


if __name__ == "__main__":
    main()
