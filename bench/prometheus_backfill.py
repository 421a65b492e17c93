"""prometheus_backfill: 7 days of a 200-pod cluster backfilled from a real Prometheus.

The history (kube-state-metrics and DCGM exporter series of the simulated cluster, scraped every
60 s) is written as OpenMetrics, imported with promtool and served by Debian's Prometheus on
127.0.0.1, all before the timer. Then the days are backfilled with GPU_COST_SOURCE=prometheus
as `gpu-autoscaler materialize --from --to` and a UI backfill of days launch them: one
gpu_cost_history run per day, in process, against a fresh embedded PostgreSQL. ``--days`` and
``--pods`` change the size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench._common import (
    Stopwatch,
    clean_environment,
    embedded_postgres_dir,
    peak_rss_mb,
    progress,
    report,
)
from bench._pipeline import configure, prepare_store, run_job
from gpu_cost_pipeline.core.simulation import SimulatedCluster
from gpu_cost_pipeline.settings import first_of_previous_month
from gpu_cost_pipeline_tests.prometheus_server import (
    OpenMetricsWriter,
    PrometheusServer,
    import_openmetrics,
    write_cluster_history,
)

SCRAPE_S = 60


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--pods", type=int, default=200)
    args = parser.parse_args(argv)
    clean_environment()
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    os.environ["GPU_COST_PARTITION_START"] = first_of_previous_month(start)
    folder = Path(tempfile.mkdtemp(prefix="gpu-cost-prom-bench-"))
    progress(f"writing {args.days} days of history for {args.pods} pods (not timed)")
    with Stopwatch() as written:
        writer = OpenMetricsWriter(folder / "openmetrics")
        cluster = SimulatedCluster(gpu_pods=args.pods)
        write_cluster_history(writer, cluster, start, end, scrape_s=SCRAPE_S)
    size_mb = sum(path.stat().st_size for path in writer.files) / 1e6
    progress(f"importing {size_mb:.0f} MB of OpenMetrics with promtool (not timed)")
    with Stopwatch() as imported:
        import_openmetrics(writer.files, folder / "tsdb")
    with (
        PrometheusServer(folder / "tsdb") as prometheus,
        embedded_postgres_dir() as data_dir,
    ):
        configure(data_dir, args.pods)
        os.environ["GPU_COST_SOURCE"] = "prometheus"
        os.environ["GPU_COST_PROMETHEUS_URL"] = prometheus.url
        prepare_store()
        runs = []
        with Stopwatch() as backfill:
            for day in range(args.days):
                first = start + timedelta(days=day)
                runs.append(run_job(f"{first:%Y-%m-%d}", job_name="gpu_cost_history_job"))
                progress(f"day {day + 1}/{args.days}: {runs[-1].seconds:.1f} s")
    minutes = args.days * 1440
    cost_rows = sum(run.rows.get("gpu_cost_history", 0) for run in runs)
    shape = f"{args.days} days × {args.pods} pods, scraped every {SCRAPE_S} s"
    report(
        "prometheus_backfill_minutes_per_s",
        minutes / backfill.seconds,
        "minutes/s",
        [shape, f"{backfill.seconds:.0f} s for {minutes} minute partitions"],
    )
    report("prometheus_backfill_wall_s", backfill.seconds, "s", [f"{len(runs)} day-runs"])
    compute = sum(step.compute_s for run in runs for step in run.steps.values())
    report(
        "prometheus_backfill_compute_s",
        compute,
        "s",
        ["inside the asset: Prometheus queries, usage, prices, costs, rollups; all days"],
    )
    report("prometheus_backfill_cost_rows", cost_rows, "rows")
    report("prometheus_backfill_peak_rss_mb", peak_rss_mb(), "MB", ["this process"])
    report("prometheus_backfill_history_mb", size_mb, "MB", [f"written in {written.seconds:.0f} s"])
    report("prometheus_backfill_import_s", imported.seconds, "s", ["promtool, not timed"])
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
