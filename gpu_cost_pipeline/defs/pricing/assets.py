"""gpu_prices: a price per GPU-hour for every price key seen in the window."""

import dagster as dg
import pandas as pd

from gpu_cost_pipeline.core.pricing import (
    SOURCE_API,
    SOURCE_CACHE,
    SOURCE_ESTIMATE,
    SOURCE_OVERRIDE,
)
from gpu_cost_pipeline.defs.partitions import minute_backfill_policy, minute_partitions
from gpu_cost_pipeline.defs.pricing.resources import PriceCatalog
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store import queries
from gpu_cost_pipeline.store.cost_store import CostStore


@dg.asset(
    deps=["gpu_node_usage"],
    partitions_def=minute_partitions,
    backfill_policy=minute_backfill_policy,
    group_name="pricing",
    kinds={"postgres"},
    description="Price points (price per GPU-hour, on-demand baseline, source, effective time) "
    "for every provider/region/zone/instance type/GPU model/capacity type in the window.",
)
def gpu_prices(
    context: dg.AssetExecutionContext,
    store: CostStore,
    usage_source: UsageSource,
    prices: PriceCatalog,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    cluster = usage_source.cluster
    warnings: list[str] = []
    with store.write_window(cluster, window.start, window.end) as writer:
        conn = writer.conn
        keys = queries.price_keys(conn, cluster, window.start, window.end)
        parts = []
        # One resolution at the window start, and one where an override starts inside it.
        for at in [window.start, *queries.override_starts(conn, cluster, window.start, window.end)]:
            if keys.empty:
                break
            stored = queries.price_reuse_candidates(
                conn, cluster, window.start, window.end, at, prices.cache_ttl()
            )
            resolved = prices.resolve(keys, at, stored)
            parts.append(resolved.prices)
            warnings.extend(resolved.warnings)
        points = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        writer.replace("price_points", points, time_column="effective_at")
    for warning in dict.fromkeys(warnings):
        context.log.warning(warning)
    by_source = points["source"].value_counts() if not points.empty else pd.Series(dtype=int)
    return dg.MaterializeResult(
        metadata={
            "price_keys": len(points),
            "estimated_keys": int(by_source.get(SOURCE_ESTIMATE, 0)),
            "api_keys": int(by_source.get(SOURCE_API, 0)),
            "cached_keys": int(by_source.get(SOURCE_CACHE, 0)),
            "override_keys": int(by_source.get(SOURCE_OVERRIDE, 0)),
            "mean_price_per_gpu_hour": float(points["price_per_gpu_hour"].mean())
            if not points.empty
            else 0.0,
        }
    )
