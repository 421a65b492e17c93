"""gpu_prices: a price per GPU-hour for every price key seen in the window, from what is stored
(overrides, the price books, estimates). No cloud API is called on the minute path."""

import logging
from datetime import datetime

import dagster as dg

from gpu_cost_pipeline.core.pricing import (
    PRICE_KEY,
    SOURCE_API,
    SOURCE_CACHE,
    SOURCE_ESTIMATE,
    SOURCE_OVERRIDE,
    ResolvedPrices,
)
from gpu_cost_pipeline.defs.partitions import minute_backfill_policy, minute_partitions
from gpu_cost_pipeline.defs.pricing.resources import PriceCatalog
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store import price_book, queries
from gpu_cost_pipeline.store.cost_store import CostStore


@dg.asset(
    deps=["gpu_node_usage"],
    partitions_def=minute_partitions,
    backfill_policy=minute_backfill_policy,
    group_name="pricing",
    kinds={"postgres"},
    description="Price points (price per GPU-hour, on-demand baseline, source, effective time) "
    "for every provider/region/zone/instance type/GPU model/capacity type in the window: "
    "override, else the price book's point in effect (api, or cache once stale), else estimate.",
)
def gpu_prices(
    context: dg.AssetExecutionContext,
    store: CostStore,
    usage_source: UsageSource,
    prices: PriceCatalog,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    resolved = write_prices(store, usage_source, prices, window.start, window.end, context.log)
    return dg.MaterializeResult(metadata=price_metadata(resolved))


def write_prices(
    store: CostStore,
    usage_source: UsageSource,
    prices: PriceCatalog,
    window_start: datetime,
    window_end: datetime,
    log: logging.Logger | logging.LoggerAdapter,
) -> ResolvedPrices:
    """Resolve and replace the window's price points (one transaction); warnings to ``log``."""
    cluster = usage_source.cluster
    with store.write_window(cluster, window_start, window_end) as writer:
        conn = writer.conn
        problem = prices.sync_overrides_file(conn)
        keys = queries.price_keys(conn, cluster, window_start, window_end)
        resolved = prices.resolve(
            keys,
            window_start,
            window_end,
            price_book.window_book(conn, keys, window_start, window_end),
            price_book.window_overrides(conn, keys, window_end),
        )
        writer.replace("price_points", resolved.prices, time_column="effective_at")
    for warning in [problem, *resolved.warnings]:
        if warning:
            log.warning(warning)
    return resolved


def price_metadata(resolved: ResolvedPrices) -> dict[str, float | int]:
    """How the window was priced: keys per source, the oldest cached price, the mean price."""
    points = resolved.prices
    keys_by_source = points.drop_duplicates([*PRICE_KEY, "source"])["source"].value_counts()
    age = resolved.cache_age_max
    return {
        "price_keys": len(points.drop_duplicates(PRICE_KEY)),
        "price_points": len(points),
        "estimated_keys": int(keys_by_source.get(SOURCE_ESTIMATE, 0)),
        "api_keys": int(keys_by_source.get(SOURCE_API, 0)),
        "cached_keys": int(keys_by_source.get(SOURCE_CACHE, 0)),
        "override_keys": int(keys_by_source.get(SOURCE_OVERRIDE, 0)),
        "cache_age_max_minutes": round(age.total_seconds() / 60, 1) if age else 0.0,
        "mean_price_per_gpu_hour": float(points["price_per_gpu_hour"].mean())
        if not points.empty
        else 0.0,
    }
