"""``gpu-autoscaler materialize`` and ``gpu-autoscaler db``: run the pipeline without the UI."""

from __future__ import annotations

import argparse
import os
import time
import warnings
from datetime import timedelta

from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from gpu_cost_pipeline.defs.resources import store_from_env
from gpu_cost_pipeline.store.embedded import embedded_server_running, stop_embedded_server


def recent_partition_range(minutes: int) -> tuple[str, str]:
    """First and last partition key of the ``minutes`` minutes that closed most recently."""
    from gpu_cost_pipeline.defs.partitions import minute_partitions

    last_key = minute_partitions.get_last_partition_key()
    if last_key is None:
        raise ValueError("no minute partition has closed yet (check GPU_COST_PARTITION_START)")
    last_start = minute_partitions.time_window_for_partition_key(last_key).start
    first_start = max(
        last_start - timedelta(minutes=minutes - 1),
        minute_partitions.time_window_for_partition_key(
            minute_partitions.get_first_partition_key()
        ).start,
    )
    return minute_partitions.get_partition_key_for_timestamp(first_start.timestamp()), last_key


def run_materialize(args: argparse.Namespace) -> int:
    """One in-process run of gpu_cost_job over the range, recorded in $DAGSTER_HOME when set
    (so `make dev` shows it), else in a throwaway instance."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    from gpu_cost_pipeline.definitions import defs

    minutes = int(args.last.total_seconds() // 60)
    first, last = recent_partition_range(max(1, minutes))
    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    job = defs.resolve_job_def("gpu_cost_job")
    print(f"Materializing gpu_cost_job for {first} … {last} (UTC) as one run")
    started = time.perf_counter()
    with instance:
        result = job.execute_in_process(
            instance=instance,
            # Warnings (bad input, estimated prices) on the console; the full event log stays
            # in the instance for the UI.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
            raise_on_error=False,
        )
    elapsed = time.perf_counter() - started
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise RuntimeError(
            f"run {result.run_id} failed: {failures[-1] if failures else 'see logs'}"
        )
    reported: set[str] = set()
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        name = materialization.asset_key.to_user_string()
        if name in reported:  # a range run repeats the same metadata for every partition
            continue
        reported.add(name)
        figures = {
            key: value.value
            for key, value in materialization.metadata.items()
            if key
            in ("rows", "price_keys", "estimated_keys", "total_cost_usd", "gpu_hours", "idle_share")
        }
        print(f"  {name}: {figures}")
    print(f"Run {result.run_id} succeeded in {elapsed:.1f} s")
    return 0


def run_db(args: argparse.Namespace) -> int:
    store = store_from_env()
    if store.database_url:
        print(f"Using an external database ({store.describe()}); nothing to {args.action}.")
        return 0
    if args.action == "running":
        return 0 if embedded_server_running(store.data_dir) else 1
    if args.action == "stop":
        stopped = stop_embedded_server(store.data_dir)
        print(
            "Stopped the embedded PostgreSQL."
            if stopped
            else "The embedded PostgreSQL was not running."
        )
        return 0
    with store.connection() as conn:
        version = conn.execute("SHOW server_version").fetchone()
    print(
        f"Embedded PostgreSQL {version[0] if version else '?'} running in {store.data_dir} (mode {store.mode()})"
    )
    return 0
