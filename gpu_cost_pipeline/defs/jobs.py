"""The cost job (usage → prices → costs for a window) and its every-minute schedule."""

from __future__ import annotations

import dagster as dg

from gpu_cost_pipeline.defs.partitions import minute_partitions

COST_ASSETS = dg.AssetSelection.groups("usage", "pricing", "costs")

# On Kubernetes (dagster-k8s K8sRunLauncher) each run is a Job: the minute runs get small
# requests and go away soon after they finish (1,440 a day); see deploy/README.md. Other run
# launchers ignore this tag.
MINUTE_RUN_K8S_CONFIG = {
    "container_config": {
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    },
    "job_spec_config": {"ttl_seconds_after_finished": 300},
}

gpu_cost_job = dg.define_asset_job(
    "gpu_cost_job",
    selection=COST_ASSETS,
    partitions_def=minute_partitions,
    description="Usage, prices and costs for a window of minutes.",
    tags={"dagster-k8s/config": MINUTE_RUN_K8S_CONFIG},
)

# Each tick materializes the minute that just closed.
gpu_cost_every_minute = dg.build_schedule_from_partitioned_job(
    gpu_cost_job,
    name="gpu_cost_every_minute",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
