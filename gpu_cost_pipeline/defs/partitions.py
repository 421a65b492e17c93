"""Minute partitions shared by every minute asset, and the backfill policy that keeps a backfill
run to one day of minutes."""

from __future__ import annotations

import os
import warnings
from datetime import UTC, datetime

import dagster as dg

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


def partition_start(now: datetime | None = None) -> str:
    """GPU_COST_PARTITION_START, else the first day of the previous month (UTC): enough history
    for a monthly budget while staying under ~100k partitions, Dagster's comfortable limit."""
    configured = os.environ.get("GPU_COST_PARTITION_START")
    if configured:
        return configured
    if os.environ.get("GPU_COST_SOURCE", "simulated") != "simulated":
        # Processes started in different months would disagree on the partition set.
        warnings.warn(
            "GPU_COST_PARTITION_START is not set: the first minute partition moves to the 1st "
            "of the previous month whenever a process starts; set it for a deployment",
            stacklevel=2,
        )
    now = now or datetime.now(UTC)
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}-01-00:00"


minute_partitions = dg.TimeWindowPartitionsDefinition(
    start=partition_start(),
    fmt=PARTITION_FORMAT,
    cron_schedule="* * * * *",
    timezone="UTC",
)

# One run per day of minutes: a 30-day backfill is 30 runs, each one vectorized pass.
minute_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=1440)
