"""`make bench` is not part of CI, so its scripts are at least imported here: an API they use
that moved or was renamed fails this test instead of the next benchmark run."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


def test_there_are_benchmarks():
    assert {"run", "derive", "write", "roi", "backfill_day"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_bench_module_imports(module: str):
    importlib.import_module(f"bench.{module}")
