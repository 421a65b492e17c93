"""The partitions of the cost assets: minutes for the recent days, days for older history.

The UI lists every partition key of an asset on its Partitions tab and in its launch dialog
and walks every stretch of materialized partitions (bench/ui_partitions.py: 19–35 s for the
85,000 minutes since the 1st of the previous month, 2.4 s for 7 days, 1.1 s for 3 days), so
minute partitions reach back only ``GPU_COST_MINUTE_PARTITION_DAYS`` (3); any day since the
start of history is a partition of ``gpu_cost_history``, which writes the same tables for the
whole day in one run.
"""

from __future__ import annotations

import warnings

import dagster as dg

from gpu_cost_pipeline.settings import PARTITION_FORMAT, Settings, load_settings


def partition_start(settings: Settings | None = None) -> str:
    """GPU_COST_PARTITION_START, else the first day of the previous month (UTC): enough history
    for a monthly budget."""
    settings = settings or load_settings()
    if settings.partition_start is None and settings.source != "simulated":
        # Processes started in different months would disagree on the partition set.
        warnings.warn(
            "GPU_COST_PARTITION_START is not set: the first day partition moves to the 1st "
            "of the previous month whenever a process starts; set it for a deployment",
            stacklevel=2,
        )
    return settings.first_partition()


minute_partitions = dg.TimeWindowPartitionsDefinition(
    start=load_settings().first_minute_partition(),
    fmt=PARTITION_FORMAT,
    cron_schedule="* * * * *",
    timezone="UTC",
)

# One run per day of minutes: a 30-day backfill is 30 runs, each one vectorized pass.
minute_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=1440)

# UTC days from the day history starts: gpu_cost_history and roi_report.
daily_partitions = dg.DailyPartitionsDefinition(start_date=partition_start()[:10], timezone="UTC")
