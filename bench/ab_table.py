#!/usr/bin/env python3
"""Turns the raw outputs of `bench/ab.sh` into a Markdown table: for every workload, each
configuration's events/s run by run, its median, and the default's gain over it.

    bench/ab_table.py OUT

The gain of a mechanism is median(default) / median(mechanism switched off) - 1: what
switching it off costs. In-process rows also give Caskade's ratio to SQLite in the same run.
"""

import pathlib
import re
import statistics
import sys

INPROC_ROW = re.compile(r"^(1_writer|16_writers|batch_100|16_shared)\s+(\d+)\s+(\d+)\s+([\d.]+)x")
GRPC_ROW = re.compile(r"^(append \d+ events?)\s+clients\s+(\d+)\s+\d+ calls/s\s+(\d+) events/s")


def runs(out):
    """{(workload, config): [(round, events_per_s, ratio_or_None)]}"""
    figures = {}
    for path in sorted(out.glob("*-*.txt")):
        match = re.fullmatch(r"(\d+)-(.+)-(inproc|grpc)\.txt", path.name)
        if not match:
            continue
        round_, config, kind = int(match[1]), match[2], match[3]
        for line in path.read_text().splitlines():
            if kind == "inproc" and (row := INPROC_ROW.match(line)):
                key = (f"in-process {row[1]}", config)
                figures.setdefault(key, []).append((round_, float(row[2]), float(row[4])))
            elif kind == "grpc" and (row := GRPC_ROW.match(line)):
                key = (f"gRPC {row[1]} x{row[2]}", config)
                figures.setdefault(key, []).append((round_, float(row[3]), None))
    return figures


def main():
    out = pathlib.Path(sys.argv[1])
    figures = runs(out)
    workloads = sorted({w for w, _ in figures}, key=lambda w: (not w.startswith("in"), w))
    configs = sorted({c for _, c in figures}, key=lambda c: (c != "default", c))
    print("| workload | configuration | events/s, rounds 1..n | median | default's gain |")
    print("|---|---|---|---|---|")
    for workload in workloads:
        base = figures.get((workload, "default"))
        base_median = statistics.median(v for _, v, _ in base) if base else None
        for config in configs:
            rows = sorted(figures.get((workload, config), []))
            if not rows:
                continue
            values = ", ".join(f"{v:.0f}" for _, v, _ in rows)
            median = statistics.median(v for _, v, _ in rows)
            ratios = [r for _, _, r in rows if r is not None]
            ratio = f" ({statistics.median(ratios):.2f}x SQLite)" if ratios else ""
            gain = ""
            if config != "default" and base_median:
                gain = f"{(base_median / median - 1) * 100:+.1f} %"
            print(f"| {workload} | {config} | {values} | {median:.0f}{ratio} | {gain} |")


if __name__ == "__main__":
    main()
