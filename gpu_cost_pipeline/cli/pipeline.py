"""``gpu-autoscaler materialize`` and ``gpu-autoscaler db``: run the pipeline without the UI."""

from __future__ import annotations

import argparse
import time
import warnings
from datetime import timedelta

from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from gpu_cost_pipeline.settings import load_settings
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline.store.embedded import embedded_server_running, stop_embedded_server


def recent_partition_ranges(minutes: int, per_run: int) -> list[tuple[str, str]]:
    """The ``minutes`` minute partitions that closed most recently, as (first, last) key ranges
    of at most ``per_run`` partitions each: one run per range, as the backfill policy does."""
    from gpu_cost_pipeline.defs.partitions import minute_partitions

    last_key = minute_partitions.get_last_partition_key()
    first_key = minute_partitions.get_first_partition_key()
    if last_key is None or first_key is None:
        raise ValueError("no minute partition has closed yet (check GPU_COST_PARTITION_START)")
    last_start = minute_partitions.time_window_for_partition_key(last_key).start
    earliest = minute_partitions.time_window_for_partition_key(first_key).start
    first_start = max(last_start - timedelta(minutes=minutes - 1), earliest)
    ranges = []
    range_start = first_start
    while range_start <= last_start:
        range_end = min(range_start + timedelta(minutes=per_run - 1), last_start)
        ranges.append(
            (
                minute_partitions.get_partition_key_for_timestamp(range_start.timestamp()),
                minute_partitions.get_partition_key_for_timestamp(range_end.timestamp()),
            )
        )
        range_start = range_end + timedelta(minutes=1)
    return ranges


def run_materialize(args: argparse.Namespace) -> int:
    """In-process runs of gpu_cost_job over the most recent minutes, one per day of minutes at
    most (as a backfill would), recorded in $DAGSTER_HOME when set (so `make dev` shows them),
    else in a throwaway instance."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    from gpu_cost_pipeline.definitions import defs
    from gpu_cost_pipeline.defs.partitions import minute_backfill_policy

    minutes = max(1, int(args.last.total_seconds() // 60))
    per_run = minute_backfill_policy.max_partitions_per_run or minutes
    ranges = recent_partition_ranges(minutes, per_run)
    instance = (
        dg.DagsterInstance.get() if load_settings().dagster_home else dg.DagsterInstance.ephemeral()
    )
    job = defs.resolve_job_def("gpu_cost_job")
    runs = "one run" if len(ranges) == 1 else f"{len(ranges)} runs of at most {per_run} minutes"
    print(f"Materializing gpu_cost_job for {ranges[0][0]} … {ranges[-1][1]} (UTC) as {runs}")
    settings = load_settings()
    with instance:
        for first, last in ranges:
            _run_range(job, instance, first, last)
        if settings.specs_dir or settings.source == "kubernetes":
            # Budgets and attributions follow the costs, as the sensor does under the daemon.
            for status_job in ("budget_status_job", "cost_attributions_job"):
                _run_status(defs.resolve_job_def(status_job), instance)
    return 0


STATUS_FIGURES = ("budgets", "attributions", "exceeded", "warning", "invalid_specs")


def _run_status(job, instance) -> None:
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )
    if not result.success:
        raise RuntimeError(f"run {result.run_id} of {job.name} failed: {_failure(result)}")
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        figures = {
            key: value.value
            for key, value in materialization.metadata.items()
            if key in STATUS_FIGURES
        }
        print(f"  {materialization.asset_key.to_user_string()}: {figures}")
    print(f"Run {result.run_id} ({job.name}) succeeded in {time.perf_counter() - started:.1f} s")


def _run_range(job, instance, first: str, last: str) -> None:
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        # Warnings (bad input, estimated prices) on the console; the full event log stays in
        # the instance for the UI.
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        raise_on_error=False,
    )
    elapsed = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"run {result.run_id} for {first} … {last} failed: {_failure(result)}")
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
            if key in ("rows", "price_keys", "estimated_keys", "total_cost_usd", "gpu_hours")
        }
        print(f"  {name}: {figures}")
    print(f"Run {result.run_id} ({first} … {last}) succeeded in {elapsed:.1f} s")


def _failure(result) -> str:
    """The cause of the first failed step, not only that it failed."""
    for event in result.all_events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            cause = error.cause or error
            return f"step {event.step_key}: {cause.message.strip()}"
    failures = [e.message for e in result.all_events if e.is_failure]
    return failures[-1] if failures else "see the run's logs"


def run_db(args: argparse.Namespace) -> int:
    store = CostStore.from_settings(load_settings())
    embedded = not store.database_url
    if args.action == "running":
        return 0 if embedded and embedded_server_running(store.data_dir) else 1
    if args.action in ("start", "stop") and not embedded:
        print(f"Using an external database ({store.describe()}); nothing to {args.action}.")
        return 0
    if args.action == "stop":
        stopped = stop_embedded_server(store.data_dir)
        print(
            "Stopped the embedded PostgreSQL."
            if stopped
            else "The embedded PostgreSQL was not running."
        )
        return 0
    # start (embedded: starts it) and status: connect, migrate, say what the store is.
    with store.connection() as conn:
        version = conn.execute("SHOW server_version").fetchone()
    where = f"running in {store.data_dir}" if embedded else f"at {store.describe()}"
    kind = "Embedded PostgreSQL" if embedded else "PostgreSQL"
    print(f"{kind} {version[0] if version else '?'} {where} (store mode {store.mode()})")
    note = store.mode_note()
    if note:
        print(note)
    return 0
