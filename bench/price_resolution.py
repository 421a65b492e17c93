"""price_resolution: resolving prices from a stored price book, against a fresh embedded
PostgreSQL.

1. One minute window with 200 distinct price keys (100 spot keys, one per zone and instance
   type, and 100 on-demand keys) from a book of 100,000 points (hourly spot series and list
   prices): what gpu_prices does for a window, timed part by part: the reads (the window's keys,
   the book points around and inside it, the overrides), the resolution in pandas, and the write
   of the price points (delete window + COPY), in one transaction. Median of 30 runs after 3
   warm-up runs.
2. A day-range backfill run (1,440 minute partitions as one run, 1,000 simulated pods) with a
   book whose spot prices change every hour: the gpu_prices step as a share of the run.
"""

from __future__ import annotations

import os
import statistics
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from bench._common import (
    BENCH_CLUSTER,
    Stopwatch,
    Target,
    clean_environment,
    embedded_postgres_dir,
    progress,
    report,
)
from gpu_cost_pipeline.core.gpus import INSTANCE_TYPES
from gpu_cost_pipeline.core.price_book import BOOK_COLUMNS, BookFetch
from gpu_cost_pipeline.core.pricing import EstimateSettings, resolve_window
from gpu_cost_pipeline.settings import first_of_previous_month
from gpu_cost_pipeline.store import price_book, queries
from gpu_cost_pipeline.store.cost_store import CostStore

KEYS = 200
BOOK_POINTS = 100_000
RUNS, WARMUP = 30, 3
MINUTE_TARGET = Target("<=", 50, "ms")
BACKFILL_PODS = 1000
AWS_TYPES = sorted(i.name for i in INSTANCE_TYPES.values() if i.provider == "aws")
ZONES = [f"us-east-1{z}" for z in "abcdef"]


def _usage_and_book(minute: datetime) -> tuple[pd.DataFrame, BookFetch]:
    """200 GPU nodes, each its own price key, and a 100,000-point book covering them."""
    spot = [(t, z) for t in AWS_TYPES for z in ZONES][: KEYS // 2]
    on_demand = [(t, z) for t in AWS_TYPES for z in ZONES[:2]][: KEYS // 2]
    nodes = [
        {"instance_type": t, "zone": z, "capacity_type": c}
        for c, pairs in (("spot", spot), ("on-demand", on_demand))
        for t, z in pairs
    ]
    usage = pd.DataFrame(nodes).assign(
        minute=minute,
        node=[f"node-{i}" for i in range(len(nodes))],
        gpu_model=lambda f: [INSTANCE_TYPES[t].gpu_model for t in f["instance_type"]],
        gpu_count=lambda f: [INSTANCE_TYPES[t].gpu_count for t in f["instance_type"]],
        sharing_mode="exclusive",
        provider="aws",
        region="us-east-1",
        seconds=60,
        gpus_held=1.0,
        idle_gpus=lambda f: f["gpu_count"] - 1.0,
    )
    list_series = [(t, "", "on-demand") for t in AWS_TYPES]
    spot_series = [(t, z, "spot") for t, z in spot]
    per_series = (BOOK_POINTS - len(list_series) * 12) // len(spot_series)
    rows = []
    for t, z, capacity in list_series + spot_series:
        count = 12 if capacity == "on-demand" else per_series  # list prices: monthly changes
        step = timedelta(days=30) if capacity == "on-demand" else timedelta(hours=1)
        times = [minute - step * i for i in range(count)]
        prices = 1.0 + np.random.default_rng(len(rows)).random(count)
        rows += [
            {"provider": "aws", "region": "us-east-1", "zone": z, "instance_type": t,
             "gpu_model": INSTANCE_TYPES[t].gpu_model, "capacity_type": capacity,
             "price_per_gpu_hour": p, "price_per_instance_hour": None, "gpu_count": None,
             "effective_at": at, "feed": "bench", "sku": "", "term": ""}
            for at, p in zip(times, prices, strict=True)
        ]  # fmt: skip
    book = pd.DataFrame(rows, columns=BOOK_COLUMNS)
    return usage, BookFetch(provider="aws", points=book, feeds=["bench"], regions=["us-east-1"])


def one_minute(store: CostStore) -> dict[str, list[float]]:
    minute = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    end = minute + timedelta(minutes=1)
    usage, book = _usage_and_book(minute)
    with store.write_window(BENCH_CLUSTER, minute, end) as writer:
        writer.replace("gpu_node_usage", usage)
    with store.connection() as conn:
        price_book.write_fetch(conn, book, minute, minute)
        conn.execute("ANALYZE")
    stored = store.read_frame("SELECT count(*) AS n FROM price_book_points").loc[0, "n"]
    progress(f"{len(usage)} price keys, {stored} book points stored")
    timings: dict[str, list[float]] = {
        "resolution": [], "total": [], "reads": [], "resolve": [], "write": []
    }  # fmt: skip
    for run in range(WARMUP + RUNS):
        with Stopwatch() as total, store.write_window(BENCH_CLUSTER, minute, end) as writer:
            with Stopwatch() as reads:
                conn = writer.conn
                keys = queries.price_keys(conn, BENCH_CLUSTER, minute, end)
                points = price_book.window_book(conn, keys, minute, end)
                overrides = price_book.window_overrides(conn, keys, end)
            with Stopwatch() as resolve:
                resolved = resolve_window(keys, minute, end, points, overrides, EstimateSettings())
            with Stopwatch() as write:
                writer.replace("price_points", resolved.prices, time_column="effective_at")
        if run >= WARMUP:
            for name, watch in (("total", total), ("reads", reads), ("resolve", resolve),
                                ("write", write)):  # fmt: skip
                timings[name].append(watch.seconds * 1000)
            timings["resolution"].append((reads.seconds + resolve.seconds) * 1000)
    sources = resolved.prices["source"].value_counts().to_dict()
    progress(f"resolved {len(resolved.prices)} points: {sources}")
    if len(keys) != KEYS or sources.get("api", 0) != KEYS:
        raise RuntimeError(f"expected {KEYS} keys priced from the book, got {sources}")
    return timings


def seed_backfill_book(store: CostStore, start: datetime) -> int:
    """List prices for every AWS catalog type, and hourly spot points in every zone for the
    day (and the hour before it) for the simulated cluster's spot instance types."""
    rows = []
    for t in AWS_TYPES:
        rows.append({"zone": "", "instance_type": t, "capacity_type": "on-demand",
                     "effective_at": start - timedelta(days=30), "price_per_gpu_hour": 3.0})  # fmt: skip
    for t in ("p4de.24xlarge", "g4dn.xlarge"):
        for z in ("us-east-1a", "us-east-1b", "us-east-1c"):
            for hour in range(-1, 24):
                rows.append({"zone": z, "instance_type": t, "capacity_type": "spot",
                             "effective_at": start + timedelta(hours=hour),
                             "price_per_gpu_hour": 1.0 + (hour % 7) / 10})  # fmt: skip
    book = pd.DataFrame(rows).assign(
        provider="aws", region="us-east-1", price_per_instance_hour=None, gpu_count=None,
        feed="bench", sku="", term="",
        gpu_model=lambda f: [INSTANCE_TYPES[t].gpu_model for t in f["instance_type"]],
    )[BOOK_COLUMNS]  # fmt: skip
    end = start + timedelta(days=1)
    with store.connection() as conn:
        price_book.write_fetch(
            conn, BookFetch("aws", book, feeds=["bench"], regions=["us-east-1"]), end, end
        )
    return len(book)


def backfill_share(data_dir) -> tuple[float, float, dict[str, int]]:
    from bench._pipeline import configure, minute_partitions, prepare_store, run_job

    day = (datetime.now(UTC) - timedelta(days=1)).date()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    os.environ["GPU_COST_PARTITION_START"] = first_of_previous_month(start)
    configure(data_dir, BACKFILL_PODS)
    prepare_store()
    from gpu_cost_pipeline.settings import load_settings

    points = seed_backfill_book(CostStore.from_settings(load_settings()), start)
    progress(f"book of {points} points (spot hourly); day-range run for {BACKFILL_PODS} pods")
    partitions = minute_partitions()
    first = partitions.get_partition_key_for_timestamp(start.timestamp())
    last = partitions.get_partition_key_for_timestamp((start + timedelta(hours=23, minutes=59))
                                                      .timestamp())  # fmt: skip
    run = run_job(key_range=(first, last))
    prices = run.steps["gpu_prices"].compute_s
    sources = (
        CostStore.from_settings(load_settings())
        .read_frame("SELECT price_source, count(*) AS n FROM gpu_cost GROUP BY 1")
        .set_index("price_source")["n"]
        .to_dict()
    )
    return prices, run.seconds, sources


def main() -> None:
    clean_environment()
    with embedded_postgres_dir() as data_dir:
        store = CostStore(data_dir=str(data_dir))
        progress("one-minute resolution from a 100,000-point book")
        timings = one_minute(store)
        median = {name: statistics.median(values) for name, values in timings.items()}
        report(
            "price_resolution_minute_ms",
            median["resolution"],
            "ms",
            [
                f"{KEYS} keys, {BOOK_POINTS} book points, median of {RUNS}",
                f"reads {median['reads']:.1f} ms + resolve {median['resolve']:.1f} ms",
                f"max {max(timings['resolution']):.1f} ms",
            ],
            target=MINUTE_TARGET,
        )
        report(
            "price_resolution_minute_with_write_ms",
            median["total"],
            "ms",
            [
                "the whole gpu_prices window: connection, resolution, write of the points "
                f"(delete + COPY + commit {median['write']:.1f} ms)"
            ],
        )
        for name in ("reads", "resolve", "write"):
            report(f"price_resolution_minute_{name}_ms", median[name], "ms")
    with embedded_postgres_dir() as data_dir:
        prices_s, run_s, sources = backfill_share(data_dir)
    report(
        "price_resolution_backfill_share",
        100 * prices_s / run_s,
        "%",
        [
            f"gpu_prices step {prices_s:.2f} s of a {run_s:.1f} s day-range run",
            f"{BACKFILL_PODS} pods, spot points hourly",
            "cost rows by price source: "
            + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())),
        ],
    )
    report("price_resolution_backfill_prices_s", prices_s, "s")


if __name__ == "__main__":
    main()
