"""Shared by the benchmarks: the figure line format, timing, peak RSS and a throwaway embedded
PostgreSQL.

Figures go to stdout, one per line, as ``name: value unit (notes, target, MISSED)``; progress
goes to stderr. Nothing here imports ``gpu_cost_pipeline.definitions``: the Dagster benchmarks
must set their GPU_COST_* variables first.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# The day the in-process benchmarks simulate. Any day works (the simulation is a pure function
# of seed and time); a fixed one keeps row counts comparable from run to run.
SIMULATED_DAY = datetime(2026, 11, 20, tzinfo=UTC)
BENCH_CLUSTER = "bench"
_STARTED = time.perf_counter()


@dataclass(frozen=True)
class Target:
    """A bound a figure should meet, e.g. ``Target("<=", 5, "s")``."""

    comparison: str  # ">=" or "<="
    bound: float
    unit: str = ""

    def met(self, value: float) -> bool:
        return value >= self.bound if self.comparison == ">=" else value <= self.bound

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"target {self.comparison} {self.bound:g}{unit}"


def number(value: float) -> str:
    """A figure as printed: integers as they are, floats with sensible precision."""
    if isinstance(value, int):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def report(
    name: str,
    value: float,
    unit: str,
    notes: Sequence[str] = (),
    target: Target | None = None,
    checked: float | None = None,
) -> None:
    """Print one figure line. ``target`` is checked against ``checked`` when given (e.g. a ratio
    shown in the notes), else against ``value``; a missed target adds MISSED."""
    extras = list(notes)
    if target is not None:
        extras.append(target.describe())
        if not target.met(value if checked is None else checked):
            extras.append("MISSED")
    suffix = f" ({', '.join(extras)})" if extras else ""
    print(f"{name}: {number(value)} {unit}{suffix}", flush=True)


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


class Stopwatch:
    """``with Stopwatch() as watch: ...`` then ``watch.seconds``."""

    seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self._start


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB). The
    embedded PostgreSQL runs in its own processes and is not included."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clean_environment() -> None:
    """Drop settings a developer's shell might carry, so every benchmark sees only its own."""
    for name in [n for n in os.environ if n.startswith("GPU_COST_")]:
        del os.environ[name]
    for name in ("DAGSTER_HOME", "KUBECONFIG"):
        os.environ.pop(name, None)


@contextmanager
def embedded_postgres_dir() -> Iterator[Path]:
    """A temporary data folder for an embedded PostgreSQL. Whatever server runs on it when the
    block exits (normally or not) is stopped, then the folder is removed."""
    from gpu_cost_pipeline.store.embedded import stop_embedded_server

    data_dir = Path(tempfile.mkdtemp(prefix="gpu-cost-bench-"))
    try:
        yield data_dir
    finally:
        try:
            if stop_embedded_server(data_dir):
                progress(f"stopped the embedded PostgreSQL in {data_dir}")
        except Exception:
            progress(f"could not stop the embedded PostgreSQL; left {data_dir} in place")
            raise
        shutil.rmtree(data_dir, ignore_errors=True)
