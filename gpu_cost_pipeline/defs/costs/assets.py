"""gpu_cost: one cost row per pod per minute and one idle row per node-minute, plus the hourly
rollup, with data-quality checks on every window."""

from datetime import datetime

import dagster as dg

from gpu_cost_pipeline.core.costing import attach_attributes, cost_rows
from gpu_cost_pipeline.core.windows import window_chunks
from gpu_cost_pipeline.defs.partitions import minute_backfill_policy, minute_partitions
from gpu_cost_pipeline.defs.reporting import COST_CHECKS, CostTotals, add_partition_metadata
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.settings import PARTITION_FORMAT
from gpu_cost_pipeline.store import queries
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline.store.queries import StoredUsage


@dg.asset(
    deps=["gpu_pod_usage", "gpu_node_usage", "gpu_prices"],
    partitions_def=minute_partitions,
    backfill_policy=minute_backfill_policy,
    group_name="costs",
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="gpu_cost", description=text)
        for name, text in COST_CHECKS.items()
    ],
    description="cost_usd = price_per_gpu_hour × gpu_share × seconds / 3600 per pod-minute, "
    "with on-demand and exclusive baselines; idle GPUs as idle rows; hourly rollup.",
)
def gpu_cost(
    context: dg.AssetExecutionContext, store: CostStore, usage_source: UsageSource
) -> dg.MaterializeResult:
    window = context.partition_time_window
    totals, rollup_rows = write_costs(
        store, usage_source.cluster, usage_source.chunk_minutes, window.start, window.end
    )
    add_partition_metadata(
        context, "gpu_cost", totals.partitions(context.partition_keys, PARTITION_FORMAT)
    )
    context.log.info(f"hourly rollup: {rollup_rows} rows rewritten")
    return dg.MaterializeResult(check_results=totals.check_results())


def write_costs(
    store: CostStore,
    cluster: str,
    chunk_minutes: int,
    window_start: datetime,
    window_end: datetime,
    stored_usage: StoredUsage | None = None,
) -> tuple[CostTotals, int]:
    """Cost the window's stored usage at its stored prices and replace its cost rows, the hourly
    rollup of the hours it touches and the pods' hourly sums, in one transaction. Returns the
    window's totals and check findings, and the rollup rows rewritten. ``stored_usage``: the
    usage minutes write_usage just stored in this run (same chunks), used instead of reading
    them back; attribution is still read from the store (it follows the latest sighting)."""
    totals = CostTotals()
    with store.write_window(cluster, window_start, window_end) as writer:
        conn = writer.conn
        for start, end in window_chunks(window_start, window_end, chunk_minutes):
            if stored_usage is None:
                nodes = queries.node_minutes(conn, cluster, start, end)
                pod_minutes = queries.pod_minutes(conn, cluster, start, end)
            else:
                nodes, pod_minutes = stored_usage.pop(start)  # frees each chunk once costed
            pods = attach_attributes(
                pod_minutes, queries.pods_seen(conn, cluster, start, end), nodes
            )
            prices = queries.price_points(conn, cluster, start, end)
            costs = cost_rows(pods, nodes, prices)
            writer.replace("gpu_cost", costs)
            # The window is locked, cleared and written in this transaction and its chunks are
            # minute-disjoint, so the stored window is exactly these frames: check them here.
            totals.add(costs, nodes, prices)
        rollup_rows = writer.refresh_hourly_rollup()
    return totals, rollup_rows
