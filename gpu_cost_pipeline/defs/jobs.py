"""The cost job (usage → prices → costs for a window) and its every-minute schedule."""

from __future__ import annotations

import dagster as dg

from gpu_cost_pipeline.defs.partitions import minute_partitions

COST_ASSETS = dg.AssetSelection.groups("usage", "pricing", "costs")

gpu_cost_job = dg.define_asset_job(
    "gpu_cost_job",
    selection=COST_ASSETS,
    partitions_def=minute_partitions,
    # The steps run one after another anyway; one process saves a Python start-up per step,
    # which matters when a run must finish well inside its minute.
    executor_def=dg.in_process_executor,
    description="Usage, prices and costs for a window of minutes.",
)

# Each tick materializes the minute that just closed.
gpu_cost_every_minute = dg.build_schedule_from_partitioned_job(
    gpu_cost_job,
    name="gpu_cost_every_minute",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
