"""backfill_day: one day (1,440 minute partitions) of a 1,000-pod simulated cluster as ONE range
run, what the multi_run(1440) backfill policy launches per run, against a fresh embedded
PostgreSQL. The server start and migrations happen before the timer; the run is timed whole.
Then the day before is written as one gpu_cost_history partition, the way whole days are
backfilled (same rows, one materialization instead of 5,760).

The day defaults to yesterday (UTC); ``--day YYYY-MM-DD`` picks another past day.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, date, datetime, timedelta

from bench._common import (
    BENCH_CLUSTER,
    Target,
    clean_environment,
    embedded_postgres_dir,
    peak_rss_mb,
    progress,
    report,
)
from bench._pipeline import (
    RunFigures,
    configure,
    minute_partitions,
    prepare_store,
    report_breakdown,
    run_job,
)
from gpu_cost_pipeline.settings import first_of_previous_month

PODS = 1000
WALL_TARGET = Target("<=", 60, "s")
RSS_TARGET = Target("<=", 1536, "MB")


def parse_day(argv: list[str] | None) -> date:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--day", type=date.fromisoformat, help="a past UTC day, YYYY-MM-DD")
    day = parser.parse_args(argv).day or (datetime.now(UTC) - timedelta(days=1)).date()
    if day >= datetime.now(UTC).date():
        parser.error(f"{day} is not entirely in the past (UTC)")
    return day


def count_cost_rows(start: datetime, end: datetime) -> int:
    from gpu_cost_pipeline.settings import load_settings
    from gpu_cost_pipeline.store.cost_store import CostStore

    counted = CostStore.from_settings(load_settings()).read_frame(
        "SELECT count(*) AS n FROM gpu_cost WHERE cluster = %s AND minute >= %s AND minute < %s",
        (BENCH_CLUSTER, start, end),
    )
    return int(counted["n"].iloc[0])


def measure(day: date) -> tuple[float, RunFigures, float, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    progress("starting the embedded PostgreSQL and migrating (not timed)")
    setup_s = prepare_store()
    partitions = minute_partitions()
    first = partitions.get_partition_key_for_timestamp(start.timestamp())
    last = partitions.get_partition_key_for_timestamp((end - timedelta(minutes=1)).timestamp())
    progress(f"range run {first} … {last} for {PODS} pods")
    run = run_job(key_range=(first, last))
    rss = peak_rss_mb()
    return setup_s, run, rss, count_cost_rows(start, end)


def measure_history(day: date) -> tuple[RunFigures, int]:
    """``day`` as one gpu_cost_history partition: how whole days are backfilled."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    progress(f"gpu_cost_history {day} for {PODS} pods")
    run = run_job(f"{day:%Y-%m-%d}", job_name="gpu_cost_history_job")
    return run, count_cost_rows(start, start + timedelta(days=1))


def main(argv: list[str] | None = None) -> None:
    clean_environment()
    day = parse_day(argv)
    os.environ["GPU_COST_PARTITION_START"] = first_of_previous_month(
        datetime(day.year, day.month, day.day, tzinfo=UTC)
    )
    with embedded_postgres_dir() as data_dir:
        configure(data_dir, PODS)
        setup_s, run, rss, cost_rows = measure(day)
        history, history_rows = measure_history(day - timedelta(days=1))
    report(
        "backfill_day_wall_s",
        run.seconds,
        "s",
        [f"{day}, 1440 minute partitions as one range run, {PODS} pods"],
        target=WALL_TARGET,
    )
    report(
        "backfill_day_cost_rows",
        cost_rows,
        "rows",
        [f"stored for the day; run metadata says {run.rows.get('gpu_cost', 0)}"],
    )
    report(
        "backfill_day_rows_per_s",
        cost_rows / run.seconds,
        "rows/s",
        [f"pod usage rows: {run.rows.get('gpu_pod_usage', 0)}"],
    )
    report(
        "backfill_day_peak_rss_mb", rss, "MB", ["this process, not PostgreSQL"], target=RSS_TARGET
    )
    report_breakdown("backfill_day", run)
    report("backfill_day_setup_s", setup_s, "s", ["server start + migrations, before the timer"])
    report("backfill_day_checks_failed", len(run.failed_checks), "checks", run.failed_checks)
    report(
        "backfill_day_history_wall_s",
        history.seconds,
        "s",
        [
            f"{day - timedelta(days=1)} as one gpu_cost_history partition, {history_rows} cost"
            f" rows, {sum(s.materializations for s in history.steps.values())} materialization",
        ],
        target=WALL_TARGET,
    )
    report("backfill_day_history_peak_rss_mb", peak_rss_mb(), "MB", ["both runs"], RSS_TARGET)


if __name__ == "__main__":
    main()
