"""gpu_cost: one cost row per pod per minute and one idle row per node-minute, plus the hourly
rollup, with data-quality checks read back from what was stored."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from gpu_cost_pipeline.core.costing import (
    attach_attributes,
    cost_problems,
    cost_rows,
    node_balance_error,
)
from gpu_cost_pipeline.core.windows import window_chunks
from gpu_cost_pipeline.defs.partitions import minute_backfill_policy, minute_partitions
from gpu_cost_pipeline.defs.reporting import cost_metadata
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store import queries
from gpu_cost_pipeline.store.cost_store import CostStore

BALANCE_TOLERANCE = 1e-9  # relative: pods + idle must equal the node's GPU cost
# How far back a price point may have taken effect and still price this window: gpu_prices
# writes one point per key at the start of each of its windows, which are at most a day long.
PRICE_LOOKBACK = timedelta(days=2)
CHECKS = {
    "no_negative_cost": "No cost, on-demand or exclusive amount below zero.",
    "pods_plus_idle_equals_node_cost": "Per node-minute, pod rows + idle row = the node's GPU "
    f"cost (relative tolerance {BALANCE_TOLERANCE:g}).",
    "no_duplicate_pod_minute": "At most one row per (pod uid, minute) in the window.",
}


@dg.asset(
    deps=["gpu_pod_usage", "gpu_node_usage", "gpu_prices"],
    partitions_def=minute_partitions,
    backfill_policy=minute_backfill_policy,
    group_name="costs",
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="gpu_cost", description=text) for name, text in CHECKS.items()
    ],
    description="cost_usd = price_per_gpu_hour × gpu_share × seconds / 3600 per pod-minute, "
    "with on-demand and exclusive baselines; idle GPUs as idle rows; hourly rollup.",
)
def gpu_cost(
    context: dg.AssetExecutionContext, store: CostStore, usage_source: UsageSource
) -> dg.MaterializeResult:
    window = context.partition_time_window
    cluster = usage_source.cluster
    sums: list[pd.Series] = []
    rows = idle_rows = 0
    balance_error = 0.0
    problems = {"negative_cost_rows": 0, "duplicate_pod_minutes": 0}
    with store.write_window(cluster, window.start, window.end) as writer:
        conn = writer.conn
        for start, end in window_chunks(window.start, window.end, usage_source.chunk_minutes):
            nodes = queries.node_minutes(conn, cluster, start, end)
            pods = attach_attributes(
                queries.pod_minutes(conn, cluster, start, end),
                queries.pods_seen(conn, cluster, start, end),
                nodes,
            )
            prices = queries.price_points(conn, cluster, start, end, PRICE_LOOKBACK)
            costs = cost_rows(pods, nodes, prices)
            writer.replace("gpu_cost", costs)
            balance_error = max(balance_error, node_balance_error(costs, nodes, prices))
            # Chunks are minute-disjoint and the window is locked, cleared and written in this
            # transaction, so the stored window is exactly these frames: check them here.
            for name, found in cost_problems(costs).items():
                problems[name] += found
            rows += len(costs)
            idle_rows += int(costs["is_idle"].sum())
            sums.append(_totals(costs))
        rollup_rows = writer.refresh_hourly_rollup()
    totals = pd.concat(sums, axis=1).sum(axis=1) if sums else pd.Series(dtype=float)
    return dg.MaterializeResult(
        metadata={**cost_metadata(totals, rows, idle_rows), "hourly_rollup_rows": rollup_rows},
        check_results=[
            dg.AssetCheckResult(
                check_name="no_negative_cost",
                passed=problems["negative_cost_rows"] == 0,
                metadata={"negative_rows": problems["negative_cost_rows"]},
            ),
            dg.AssetCheckResult(
                check_name="pods_plus_idle_equals_node_cost",
                passed=balance_error <= BALANCE_TOLERANCE,
                metadata={"max_relative_error": balance_error},
            ),
            dg.AssetCheckResult(
                check_name="no_duplicate_pod_minute",
                passed=problems["duplicate_pod_minutes"] == 0,
                metadata={"duplicate_rows": problems["duplicate_pod_minutes"]},
            ),
        ],
    )


def _totals(costs: pd.DataFrame) -> pd.Series:
    idle = costs["is_idle"]
    return pd.Series(
        {
            "cost_usd": costs["cost_usd"].sum(),
            "on_demand_cost_usd": costs["on_demand_cost_usd"].sum(),
            "exclusive_cost_usd": costs["exclusive_cost_usd"].sum(),
            "gpu_hours": (costs["gpu_share"] * costs["seconds"]).sum() / 3600,
            "idle_cost_usd": costs.loc[idle, "cost_usd"].sum(),
            "estimated_cost_usd": costs.loc[costs["price_source"] == "estimate", "cost_usd"].sum(),
        }
    )
