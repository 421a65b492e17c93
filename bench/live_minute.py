"""live_minute: the minute that just closed, for a 10,000-GPU-pod simulated cluster, end to end.

gpu_cost_job (usage multi-asset, gpu_prices, gpu_cost) through Dagster's execute_in_process
against a fresh embedded PostgreSQL, as the every-minute schedule would run it. A warm-up run on
another minute pays the server start, the migrations and the simulated cluster's construction
first; then the last closed minute is timed. Beside it: the same minute derived in process
(simulation + derive + prices + cost rows, no Dagster, no database).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bench._common import (
    Stopwatch,
    Target,
    clean_environment,
    embedded_postgres_dir,
    peak_rss_mb,
    progress,
    report,
)
from bench._pipeline import RunFigures, configure, minute_partitions, report_breakdown, run_job
from bench.derive import derive_costs
from gpu_cost_pipeline.core.simulation import SimulatedCluster

PODS = 10_000
TARGET = Target("<=", 5, "s")


def in_process_seconds(start: datetime, end: datetime) -> float:
    """Observe + derive + price + cost the minute without Dagster or a database."""
    cluster = SimulatedCluster(gpu_pods=PODS, seed=42)  # built once per process, as in the run
    with Stopwatch() as watch:
        derive_costs(cluster.observe(start, end), start, end)
    return watch.seconds


def measure() -> tuple[str, RunFigures, RunFigures, float]:
    partitions = minute_partitions()
    warmup_at = datetime.now(UTC) - timedelta(minutes=5)
    warmup_key = partitions.get_partition_key_for_timestamp(warmup_at.timestamp())
    progress(f"warm-up run on {warmup_key} (server start, migrations, cluster build)")
    warmup = run_job(partition_key=warmup_key)
    key = partitions.get_last_partition_key()
    if key is None or key == warmup_key:
        raise RuntimeError(f"no closed minute other than the warm-up's ({warmup_key})")
    progress(f"measured run on {key}, the last closed minute")
    measured = run_job(partition_key=key)
    window = partitions.time_window_for_partition_key(key)
    return key, warmup, measured, in_process_seconds(window.start, window.end)


def main() -> None:
    clean_environment()
    with embedded_postgres_dir() as data_dir:
        configure(data_dir, PODS)
        key, warmup, run, reference_s = measure()
    pod_rows = run.rows.get("gpu_pod_usage", 0)
    node_rows = run.rows.get("gpu_node_usage", 0)
    cost_rows = run.rows.get("gpu_cost", 0)
    report(
        "live_minute_s",
        run.seconds,
        "s",
        [
            f"partition {key}",
            f"in process without Dagster or DB: {reference_s:.2f} s",
        ],
        target=TARGET,
    )
    report("live_minute_pod_rows", pod_rows, "rows", [f"{PODS}-pod cluster, {node_rows} node rows"])
    report("live_minute_cost_rows", cost_rows, "rows", ["pod rows + idle rows"])
    report(
        "live_minute_rows_per_s",
        cost_rows / run.seconds,
        "rows/s",
        [
            "gpu_cost rows per second of run",
            f"usage + cost rows: {(pod_rows + node_rows + cost_rows) / run.seconds:.0f} rows/s",
        ],
    )
    report_breakdown("live_minute", run)
    report(
        "live_minute_warmup_s",
        warmup.seconds,
        "s",
        ["first run: server start, migrations, simulated cluster build"],
    )
    report("live_minute_checks_failed", len(run.failed_checks), "checks", run.failed_checks)
    report("live_minute_peak_rss_mb", peak_rss_mb(), "MB")


if __name__ == "__main__":
    main()
