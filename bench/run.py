"""Run the benchmarks in order, each in a fresh subprocess (so peak RSS is per benchmark).

    .venv/bin/python bench/run.py                 # all of them (`make bench`)
    .venv/bin/python bench/run.py --only write    # one (repeat --only for several)

stdout carries only figure lines (``name: value unit (...)``); anything else a benchmark prints
on stdout is moved to stderr, with the progress. Exits 0 when every benchmark ran, missed
targets included (their lines say MISSED); 1 when one crashed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = (
    "derive",
    "write",
    "live_minute",
    "backfill_day",
    "prometheus_backfill",
    "price_resolution",
    "monitoring",
    "roi",
    "budget_status",
    "alert_latency",
    "ui_partitions",
)
FIGURE_LINE = re.compile(r"^[a-z][a-z0-9_]*: -?\d+(\.\d+)? \S+( \(.*\))?$")


def run_one(name: str) -> int:
    """Run ``bench.<name>`` in a subprocess; forward its figure lines; return its exit status."""
    print(f"=== {name}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-m", f"bench.{name}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    for line in child.stdout.splitlines():
        if FIGURE_LINE.match(line):
            print(line, flush=True)
        elif line.strip():
            print(f"[{name} stdout] {line}", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    print(f"=== {name}: {elapsed:.1f} s, exit {child.returncode}", file=sys.stderr, flush=True)
    if child.returncode != 0:
        print(f"{name}_exit_status: {child.returncode} code (FAILED, traceback on stderr)")
    return child.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks of the GPU cost pipeline.")
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, metavar="NAME", help=", ".join(BENCHMARKS)
    )
    chosen = parser.parse_args(argv).only or list(BENCHMARKS)
    started = time.perf_counter()
    statuses = [run_one(name) for name in BENCHMARKS if name in chosen]
    print(f"bench_total_wall_s: {time.perf_counter() - started:.1f} s", flush=True)
    return 0 if all(status == 0 for status in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
