"""The cost job (usage → prices → costs for a window) and its every-minute schedule."""

from __future__ import annotations

import dagster as dg

from gpu_cost_pipeline.defs.partitions import minute_partitions

COST_ASSETS = dg.AssetSelection.groups("usage", "pricing", "costs")

gpu_cost_job = dg.define_asset_job(
    "gpu_cost_job",
    selection=COST_ASSETS,
    partitions_def=minute_partitions,
    description="Usage, prices and costs for a window of minutes.",
)

# Each tick materializes the minute that just closed.
gpu_cost_every_minute = dg.build_schedule_from_partitioned_job(
    gpu_cost_job,
    name="gpu_cost_every_minute",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
