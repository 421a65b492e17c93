"""gpu_cost_history: any UTC day since the start of history, as one partition.

It writes the same tables as the minute assets (usage, prices, costs, hourly rollup) for its
whole day, through the same functions, each step one transaction that replaces the day: so a
day written here and minutes written by the schedule never add up twice. One partition per day
keeps the UI fast over months (the minute partitions reach back only
``GPU_COST_MINUTE_PARTITION_DAYS``) and records a day as one materialization instead of 5,760
(four minute assets × 1,440 minutes), most of a long backfill's Dagster bookkeeping.
"""

import dagster as dg

from gpu_cost_pipeline.defs.costs.assets import write_costs
from gpu_cost_pipeline.defs.partitions import daily_partitions
from gpu_cost_pipeline.defs.pricing.assets import price_metadata, write_prices
from gpu_cost_pipeline.defs.pricing.resources import PriceCatalog
from gpu_cost_pipeline.defs.reporting import COST_CHECKS, log_issues
from gpu_cost_pipeline.defs.usage.assets import write_usage
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline.store.queries import StoredUsage

DAY_FORMAT = "%Y-%m-%d"


@dg.asset(
    partitions_def=daily_partitions,
    # One run per day: days run in parallel where the run queue allows (locks are per window).
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    group_name="history",
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="gpu_cost_history", description=text)
        for name, text in COST_CHECKS.items()
    ],
    description="A whole UTC day of usage, prices and costs (the tables of gpu_node_usage, "
    "gpu_pod_usage, gpu_prices and gpu_cost, and the hourly rollup), for history older than "
    "the minute partitions and for large backfills.",
)
def gpu_cost_history(
    context: dg.AssetExecutionContext,
    store: CostStore,
    usage_source: UsageSource,
    prices: PriceCatalog,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    # The day's usage minutes stay in memory for costing (~230 MB for 1,000 pods) rather than
    # being read back: each chunk is freed as it is costed.
    stored_usage: StoredUsage = {}
    usage = write_usage(store, usage_source, window.start, window.end, stored_usage)
    log_issues(context.log, usage.issues)
    resolved = write_prices(store, usage_source, prices, window.start, window.end, context.log)
    costs, rollup_rows = write_costs(
        store,
        usage_source.cluster,
        usage_source.chunk_minutes,
        window.start,
        window.end,
        stored_usage,
    )
    day = window.start.strftime(DAY_FORMAT)
    pods = usage.pod_partitions([day], DAY_FORMAT)[day]
    nodes = usage.node_partitions([day], DAY_FORMAT)[day]
    figures = costs.partitions([day], DAY_FORMAT)[day]
    return dg.MaterializeResult(
        metadata={
            **figures,
            "pod_minutes": pods["rows"],
            "node_minutes": nodes["rows"],
            "pods": len(usage.pods),
            "nodes": len(usage.nodes),
            "gpu_hours_capacity": nodes["gpu_hours_capacity"],
            "utilization_measured_share": pods["utilization_measured_share"],
            "mean_utilization": pods["mean_utilization"],
            "hourly_rollup_rows": rollup_rows,
            **price_metadata(resolved),
            **usage.problem_counts()["gpu_node_usage"],
            **usage.problem_counts()["gpu_pod_usage"],
        },
        check_results=costs.check_results(),
    )


gpu_cost_history_job = dg.define_asset_job(
    "gpu_cost_history_job",
    selection=[gpu_cost_history],
    partitions_def=daily_partitions,
    description="Usage, prices and costs of whole UTC days (gpu_cost_history).",
)
