"""roi: the daily roi_report asset, and `cost --roi` / `optimize` over 30 days of 1,000 pods.

One simulated day (2026-11-20, 1,000 pods, seed 42) is derived in process, given a DCGM-like GPU
utilization per pod (so every recommendation path runs), and written through the store's write
path (usage, pods, costs, hourly rollup), not timed. Then:

1. ``roi_report`` for that day through Dagster (``materialize``, one partition): timed;
2. that day's stored facts and pods are copied to the 29 days before it, each day's pods with
   their own uids (the worst case: no pod spans two days), not timed;
3. ``gpu-autoscaler cost --roi --format json`` over the 30 days, in process: timed;
4. ``gpu-autoscaler optimize --format json`` over the same 30 days: timed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from datetime import timedelta

import numpy as np
import pandas as pd

from bench._common import (
    BENCH_CLUSTER,
    SIMULATED_DAY,
    Stopwatch,
    Target,
    clean_environment,
    embedded_postgres_dir,
    peak_rss_mb,
    progress,
    report,
)
from bench.derive import PODS, USAGE_SETTINGS, estimated_prices, observe

DAYS = 30


def with_utilization(pods: pd.DataFrame) -> pd.DataFrame:
    """A mean utilization per pod (uniform 0–1) and ±0.05 noise per minute, deterministic."""
    rng = np.random.default_rng(42)
    codes, uniques = pd.factorize(pods["pod_uid"])
    base = rng.random(len(uniques))[codes]
    noise = rng.normal(0, 0.05, len(pods))
    return pods.assign(gpu_utilization=np.clip(base + noise, 0.0, 1.0))


def write_simulated_day() -> int:
    """The day's usage, pods and costs through CostStore; returns cost rows written."""
    from gpu_cost_pipeline.core.costing import cost_rows
    from gpu_cost_pipeline.core.window_usage import derive_window_usage, pod_attributes
    from gpu_cost_pipeline.settings import load_settings
    from gpu_cost_pipeline.store.cost_store import CostStore

    start, end = SIMULATED_DAY, SIMULATED_DAY + timedelta(days=1)
    seen = observe(PODS, start, end)
    usage = derive_window_usage(
        seen.nodes, seen.pods, seen.pod_start_s, seen.pod_end_s, start, end, USAGE_SETTINGS
    )
    pods = with_utilization(usage.pods)
    prices = estimated_prices(usage.nodes, start, end)
    costs = cost_rows(pods, usage.nodes, prices.prices)
    store = CostStore.from_settings(load_settings())
    with store.write_window(BENCH_CLUSTER, start, end) as writer:
        writer.replace("gpu_node_usage", usage.nodes)
        writer.replace("gpu_pod_usage", pods)
        writer.upsert_pods(pod_attributes(pods))
        writer.replace("gpu_cost", costs)
        writer.refresh_hourly_rollup()
    return len(costs)


def copy_day_back(days: int) -> int:
    """The stored day's facts, report and pods as the ``days`` − 1 days before it; returns the
    usage fact rows stored in all."""
    from gpu_cost_pipeline.core.roi import POD_COLUMNS, POD_DETAILS, SUMMARY_COLUMNS
    from gpu_cost_pipeline.settings import load_settings
    from gpu_cost_pipeline.store.cost_store import CostStore

    day = SIMULATED_DAY.date()
    usage_columns = ["cluster", *POD_COLUMNS, *POD_DETAILS, "spans_days"]
    columns = ", ".join(usage_columns)
    shifted = ", ".join(
        "CASE WHEN is_idle THEN pod_uid ELSE pod_uid || '~' || k END" if c == "pod_uid" else c
        for c in usage_columns
    )
    summary = ", ".join(["cluster", *SUMMARY_COLUMNS])
    with CostStore.from_settings(load_settings()).connection() as conn, conn.transaction():
        series = "CROSS JOIN generate_series(1, %(back)s) AS k"
        params = {"day": day, "back": days - 1, "cluster": BENCH_CLUSTER}
        conn.execute(
            f"INSERT INTO roi_usage_daily (day, {columns}) SELECT day - k, {shifted}"
            f" FROM roi_usage_daily {series} WHERE cluster = %(cluster)s AND day = %(day)s",
            params,
        )
        conn.execute(
            f"INSERT INTO roi_summary_daily (day, {summary}) SELECT day - k, {summary}"
            f" FROM roi_summary_daily {series} WHERE cluster = %(cluster)s AND day = %(day)s",
            params,
        )
        conn.execute(
            "INSERT INTO roi_capacity_daily SELECT day - k, cluster, gpu_model, capacity_type,"
            " peak_gpus, min_gpus, peak_nodes, gpu_hours, minutes"
            f" FROM roi_capacity_daily {series} WHERE cluster = %(cluster)s AND day = %(day)s",
            params,
        )
        conn.execute(
            "INSERT INTO roi_reports (day, cluster, covered_minutes, baseline_cost_usd,"
            " actual_cost_usd, total_savings_usd, savings_percent, report)"
            " SELECT day - k, cluster, covered_minutes, baseline_cost_usd, actual_cost_usd,"
            " total_savings_usd, savings_percent, report"
            f" FROM roi_reports {series} WHERE cluster = %(cluster)s AND day = %(day)s",
            params,
        )
        conn.execute(
            "INSERT INTO gpu_pods (cluster, pod_uid, namespace, pod, team, project, experiment_id,"
            " cost_center, gpu_resource, gpu_requested, sharing_mode, labels, cost_limit_usd,"
            " first_seen, last_seen) SELECT cluster, pod_uid || '~' || k, namespace, pod, team,"
            " project, experiment_id, cost_center, gpu_resource, gpu_requested, sharing_mode,"
            " labels, cost_limit_usd, first_seen, last_seen"
            f" FROM gpu_pods {series} WHERE cluster = %(cluster)s",
            params,
        )
        row = conn.execute(
            "SELECT count(*) FROM roi_usage_daily WHERE cluster = %(cluster)s", params
        ).fetchone()
    return int(row[0]) if row else 0


def timed_cli(args: list[str]) -> tuple[float, str]:
    from gpu_cost_pipeline.cli.main import main

    out = io.StringIO()
    with Stopwatch() as watch, contextlib.redirect_stdout(out):
        code = main(args)
    if code != 0:
        raise RuntimeError(f"gpu-autoscaler {' '.join(args)} exited {code}")
    return watch.seconds, out.getvalue()


def main() -> None:
    clean_environment()
    with embedded_postgres_dir() as data_dir:
        os.environ["GPU_COST_DATA_DIR"] = str(data_dir)
        os.environ["GPU_COST_CLUSTER"] = BENCH_CLUSTER
        os.environ["GPU_COST_PARTITION_START"] = "2026-10-01-00:00"
        os.environ["GPU_COST_WASTE_BASELINE_SHARE"] = "0.4"
        progress(f"deriving and writing one day of {PODS} simulated pods (not timed)")
        with Stopwatch() as setup:
            cost_rows = write_simulated_day()
        progress(f"{cost_rows} cost rows written in {setup.seconds:.1f} s")

        import dagster as dg

        from gpu_cost_pipeline.defs.resources import build_resources
        from gpu_cost_pipeline.defs.roi.assets import roi_report

        resources = build_resources()
        day = SIMULATED_DAY.strftime("%Y-%m-%d")
        with Stopwatch() as asset_watch:
            result = dg.materialize([roi_report], partition_key=day, resources=resources)
        if not result.success:
            raise RuntimeError("roi_report failed")
        report(
            "roi_report_day_s",
            asset_watch.seconds,
            "s",
            [f"one day, {cost_rows} cost rows, through Dagster"],
        )

        facts = copy_day_back(DAYS)
        progress(f"{DAYS} stored days, {facts} usage fact rows")
        period = [
            "--from",
            (SIMULATED_DAY - timedelta(days=DAYS - 1)).strftime("%Y-%m-%d"),
            "--to",
            (SIMULATED_DAY + timedelta(days=1)).strftime("%Y-%m-%d"),
            "--format",
            "json",
        ]
        first_s, _ = timed_cli(["cost", "--roi", *period])  # pays the CLI's imports
        roi_s, out = timed_cli(["cost", "--roi", *period])
        report(
            "roi_report_30d_s",
            roi_s,
            "s",
            [
                f"cost --roi over {DAYS} stored days, {facts} fact rows, {len(out)} bytes of JSON",
                f"first call {first_s:.2f} s with imports",
            ],
            Target("<=", 5, "s"),
        )
        optimize_s, out = timed_cli(["optimize", *period, "--limit", "0"])
        report(
            "optimize_30d_s",
            optimize_s,
            "s",
            [f"optimize over {DAYS} stored days, {len(json.loads(out)['gpus'])} GPUs listed"],
            Target("<=", 5, "s"),
        )
        report("roi_peak_rss_mb", peak_rss_mb(), "MB")


if __name__ == "__main__":
    main()
