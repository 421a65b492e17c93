"""backfill_month (``make bench-long``): a month of a 1,000-pod simulated cluster backfilled
through Dagster's PostgreSQL instance storage (dagster-postgres), as a deployment records it.

The last ``--days`` closed UTC days are split into ``--workers`` contiguous stretches, each a
separate process (as parallel backfill runs are: one process per run) that runs one run per day
against the same embedded PostgreSQL (cost store) and the same Dagster instance (run and event
storage in another database of that server). ``--path`` picks what a day is:

- ``history`` (default): one gpu_cost_history partition: one materialization per day;
- ``minutes``: one gpu_cost_job range run of 1,440 minute partitions, four minute assets: one
  materialization per asset per minute (what a UI backfill of the minute assets launches).

Figures: wall time for the whole backfill (target ≤ 10 min for 30 days), events written to the
instance, time inside the asset functions (pipeline work) vs the rest (Dagster: run creation,
events, process start), peak RSS of the largest worker (target ≤ 1.5 GB), minutes per second.
``DAGSTER_EVENT_BATCH_SIZE`` in the environment is passed to the workers (a lever to measure).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench._common import (
    BENCH_CLUSTER,
    Stopwatch,
    Target,
    clean_environment,
    embedded_postgres_dir,
    progress,
    report,
)

WALL_TARGET_30_DAYS_S = 600
RSS_TARGET = Target("<=", 1536, "MB")
DAGSTER_DB = "dagster_bench"
WORKER = [sys.executable, "-m", "bench.backfill_month"]
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def worker(path: str, days: list[str]) -> None:
    """One process: a run per day, in the instance of $DAGSTER_HOME; prints JSON figures."""
    import dagster as dg
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from bench._pipeline import _step_timings
    from gpu_cost_pipeline.definitions import defs

    job = defs.resolve_job_def("gpu_cost_history_job" if path == "history" else "gpu_cost_job")
    compute_s = 0.0
    with dg.DagsterInstance.get() as instance:
        for day in days:
            if path == "history":
                partition = {"partition_key": day}
            else:
                first = f"{day}-00:00"
                last = f"{day}-23:59"
                partition = {
                    "tags": {
                        ASSET_PARTITION_RANGE_START_TAG: first,
                        ASSET_PARTITION_RANGE_END_TAG: last,
                    }
                }
            result = job.execute_in_process(
                instance=instance, run_config=RUN_CONFIG, raise_on_error=True, **partition
            )
            steps = _step_timings(instance.all_logs(result.run_id))
            compute_s += sum(step.compute_s for step in steps.values())
            print(f"day {day} done", file=sys.stderr, flush=True)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"compute_s": compute_s, "rss_mb": rss_mb}))


def dagster_url(server_url: str) -> str:
    """The same server, the Dagster database (a URL: dagster-postgres parses it as one)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{DAGSTER_DB}"))


def instance_home(folder: Path, server_url: str) -> Path:
    """A DAGSTER_HOME whose runs, events and schedules live in PostgreSQL."""
    import psycopg
    import yaml

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DAGSTER_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DAGSTER_DB}"')
    url = dagster_url(server_url)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"storage": {"postgres": {"postgres_url": url}}}
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    # Create the instance's tables once, before the workers: as in a deployment, where the
    # webserver and daemon have done so; workers starting on an empty database race to create
    # them (dagster-postgres retries, and a worker can still fail).
    import dagster as dg

    with dg.DagsterInstance.from_config(str(folder)):
        pass
    return folder


def count_events(server_url: str) -> int:
    import psycopg

    with psycopg.connect(dagster_url(server_url)) as conn:
        row = conn.execute("SELECT count(*) FROM event_logs").fetchone()
    return int(row[0]) if row else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--path", choices=("history", "minutes"), default="history")
    parser.add_argument("--worker-days", help=argparse.SUPPRESS)  # internal: run as a worker
    args = parser.parse_args(argv)
    if args.worker_days:
        worker(args.path, args.worker_days.split(","))
        return
    batch = os.environ.get("DAGSTER_EVENT_BATCH_SIZE")
    clean_environment()
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [(end - timedelta(days=d)).strftime("%Y-%m-%d") for d in range(args.days, 0, -1)]
    with embedded_postgres_dir() as data_dir:
        from gpu_cost_pipeline.settings import load_settings
        from gpu_cost_pipeline.store.cost_store import CostStore

        env = {
            "GPU_COST_DATA_DIR": str(data_dir),
            "GPU_COST_SIMULATED_PODS": str(args.pods),
            "GPU_COST_CLUSTER": BENCH_CLUSTER,
            "GPU_COST_PARTITION_START": f"{days[0]}-00:00",
            "GPU_COST_MINUTE_PARTITION_DAYS": str(args.days + 1),
        }
        os.environ.update(env)
        progress("starting the embedded PostgreSQL and migrating (not timed)")
        store = CostStore.from_settings(load_settings())
        store.mode()
        server_url = store.resolved_url()
        home = instance_home(Path(tempfile.mkdtemp(prefix="gpu-cost-month-")), server_url)
        env["DAGSTER_HOME"] = str(home)
        if batch:
            env["DAGSTER_EVENT_BATCH_SIZE"] = batch
        workers = min(args.workers, len(days))
        stretches = [days[i::workers] for i in range(workers)]
        progress(f"{len(days)} days × {args.pods} pods, path {args.path}, {workers} workers")
        with Stopwatch() as wall:
            children = [
                subprocess.Popen(
                    [*WORKER, "--path", args.path, "--worker-days", ",".join(stretch)],
                    env={**os.environ, **env},
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for stretch in stretches
            ]
            outputs = [child.communicate()[0] for child in children]
        if any(child.returncode for child in children):
            raise RuntimeError("a worker failed (its traceback is above)")
        figures = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
        events = count_events(server_url)
        rows = store.read_frame(
            "SELECT (SELECT count(*) FROM gpu_cost WHERE cluster = %s) AS cost,"
            " (SELECT count(*) FROM gpu_pod_usage WHERE cluster = %s) AS pod,"
            " (SELECT count(*) FROM gpu_node_usage WHERE cluster = %s) AS node",
            (BENCH_CLUSTER, BENCH_CLUSTER, BENCH_CLUSTER),
        ).iloc[0]
    compute = sum(f["compute_s"] for f in figures)
    rss = max(f["rss_mb"] for f in figures)
    label = f"{args.days} days × {args.pods} pods, {args.path}, {workers} workers"
    label += f", DAGSTER_EVENT_BATCH_SIZE={batch or 'unset'}"
    prefix = f"backfill_month_{args.path}"
    target = Target("<=", WALL_TARGET_30_DAYS_S * args.days / 30, "s")
    report(f"{prefix}_wall_s", wall.seconds, "s", [label, "target scaled to the days"], target)
    report(f"{prefix}_minutes_per_s", len(days) * 1440 / wall.seconds, "minutes/s", [label])
    report(f"{prefix}_events", events, "events", ["rows of event_logs in dagster-postgres"])
    report(
        f"{prefix}_pipeline_s",
        compute,
        "s",
        [f"inside the asset functions, summed over {workers} workers"],
    )
    report(
        f"{prefix}_bookkeeping_s",
        max(0.0, wall.seconds * workers - compute),
        "s",
        ["worker-seconds outside the asset functions: Dagster, process start"],
    )
    report(f"{prefix}_peak_rss_mb", rss, "MB", ["largest worker process"], RSS_TARGET)
    pod_minutes = int(rows["pod"])
    report(
        f"{prefix}_rows_per_pod_minute",
        (int(rows["cost"]) + pod_minutes + int(rows["node"])) / max(pod_minutes, 1),
        "rows",
        [f"cost {int(rows['cost'])}, pod usage {pod_minutes}, node usage {int(rows['node'])}"],
    )


if __name__ == "__main__":
    main()
