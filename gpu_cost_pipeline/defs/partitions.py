"""Minute partitions shared by every minute asset, and the backfill policy that keeps a backfill
run to one day of minutes."""

from __future__ import annotations

import warnings

import dagster as dg

from gpu_cost_pipeline.settings import PARTITION_FORMAT, Settings, load_settings


def partition_start(settings: Settings | None = None) -> str:
    """GPU_COST_PARTITION_START, else the first day of the previous month (UTC): enough history
    for a monthly budget while staying under ~100k partitions, Dagster's comfortable limit."""
    settings = settings or load_settings()
    if settings.partition_start is None and settings.source != "simulated":
        # Processes started in different months would disagree on the partition set.
        warnings.warn(
            "GPU_COST_PARTITION_START is not set: the first minute partition moves to the 1st "
            "of the previous month whenever a process starts; set it for a deployment",
            stacklevel=2,
        )
    return settings.first_partition()


minute_partitions = dg.TimeWindowPartitionsDefinition(
    start=partition_start(),
    fmt=PARTITION_FORMAT,
    cron_schedule="* * * * *",
    timezone="UTC",
)

# One run per day of minutes: a 30-day backfill is 30 runs, each one vectorized pass.
minute_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=1440)
