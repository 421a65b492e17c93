"""Price per GPU-hour for every price key, from live sources, the cache or estimates.

A *price key* is what a price depends on: provider, region, zone (spot prices differ per zone),
instance type, GPU model and capacity type. A whole node's price is attributed to its GPUs
(a GPU node exists for its GPUs), so price per GPU-hour = instance price / GPUs on the instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Protocol

import pandas as pd

from gpu_cost_pipeline.core.gpus import INSTANCE_TYPES

PRICE_KEY = ["provider", "region", "zone", "instance_type", "gpu_model", "capacity_type"]
PRICE_COLUMNS = [
    *PRICE_KEY,
    "price_per_gpu_hour",
    "on_demand_price_per_gpu_hour",
    "source",
    "effective_at",
]

SOURCE_API, SOURCE_CACHE, SOURCE_ESTIMATE, SOURCE_OVERRIDE = "api", "cache", "estimate", "override"
CACHE_TTL = timedelta(hours=1)

# Per-GPU list prices sold per GPU rather than per instance (GCP N1 + T4/V100, us-central1).
_PER_GPU_PRICES = {("gcp", "T4"): 0.35, ("gcp", "V100"): 2.48}


def _catalog_per_gpu_prices() -> dict[tuple[str, str], float]:
    """Cheapest catalog price per GPU-hour for each (provider, GPU model)."""
    prices: dict[tuple[str, str], float] = dict(_PER_GPU_PRICES)
    for instance in INSTANCE_TYPES.values():
        key = (instance.provider, instance.gpu_model)
        per_gpu = instance.on_demand_price_per_hour / instance.gpu_count
        prices[key] = min(prices.get(key, per_gpu), per_gpu)
    return prices


_PROVIDER_MODEL_PRICES = _catalog_per_gpu_prices()
_MODEL_PRICES = {
    model: median(price for (_, m), price in _PROVIDER_MODEL_PRICES.items() if m == model)
    for model in {m for _, m in _PROVIDER_MODEL_PRICES}
}


@dataclass(frozen=True)
class EstimateSettings:
    """How estimates are made where no price API answers. Ratios are of the on-demand price,
    from typical discounts (DOMAIN.md): AWS spot up to 90 % off, GCP 50–70 %, Azure 75–88 %.
    ``reserved`` capacity (Karpenter's capacity reservations and capacity blocks, not RIs)
    bills at the on-demand rate."""

    unknown_gpu_price_per_hour: float = 2.50
    spot_price_ratio: dict[str, float] = field(
        default_factory=lambda: {"aws": 0.40, "gcp": 0.35, "azure": 0.20}
    )
    default_spot_price_ratio: float = 0.40
    reserved_price_ratio: float = 1.0


def estimate_on_demand_per_gpu(
    provider: str, instance_type: str, gpu_model: str, settings: EstimateSettings
) -> float:
    instance = INSTANCE_TYPES.get(instance_type)
    if instance and instance.provider == provider and instance.gpu_model == gpu_model:
        return instance.on_demand_price_per_hour / instance.gpu_count
    if (provider, gpu_model) in _PROVIDER_MODEL_PRICES:
        return _PROVIDER_MODEL_PRICES[(provider, gpu_model)]
    return _MODEL_PRICES.get(gpu_model, settings.unknown_gpu_price_per_hour)


def capacity_price_ratio(provider: str, capacity_type: str, settings: EstimateSettings) -> float:
    if capacity_type == "spot":
        return settings.spot_price_ratio.get(provider, settings.default_spot_price_ratio)
    if capacity_type == "reserved":
        return settings.reserved_price_ratio
    return 1.0


def estimate_prices(keys: pd.DataFrame, at: datetime, settings: EstimateSettings) -> pd.DataFrame:
    """Estimated prices for each key (one Python step per distinct key: keys are few)."""
    rows = []
    for key in keys[PRICE_KEY].drop_duplicates().itertuples(index=False):
        on_demand = estimate_on_demand_per_gpu(
            key.provider, key.instance_type, key.gpu_model, settings
        )
        ratio = capacity_price_ratio(key.provider, key.capacity_type, settings)
        rows.append(
            {
                **key._asdict(),
                "price_per_gpu_hour": on_demand * ratio,
                "on_demand_price_per_gpu_hour": on_demand,
                "source": SOURCE_ESTIMATE,
                "effective_at": at,
            }
        )
    return pd.DataFrame(rows, columns=PRICE_COLUMNS)


class PriceSource(Protocol):
    """A live price API (AWS, GCP, Azure). ``quote`` returns rows for the keys it could price,
    with the PRICE_KEY columns, ``price_per_gpu_hour`` and, when it knows it,
    ``on_demand_price_per_gpu_hour``; keys it cannot price are simply absent."""

    name: str

    def quote(self, keys: pd.DataFrame, at: datetime) -> pd.DataFrame: ...


@dataclass
class ResolvedPrices:
    prices: pd.DataFrame  # PRICE_COLUMNS, one row per key
    warnings: list[str]


def _missing(keys: pd.DataFrame, priced: pd.DataFrame) -> pd.DataFrame:
    if priced.empty:
        return keys
    merged = keys.merge(
        priced[PRICE_KEY].drop_duplicates(), on=PRICE_KEY, how="left", indicator=True
    )
    return merged.loc[merged["_merge"] == "left_only", PRICE_KEY].reset_index(drop=True)


def resolve_prices(
    keys: pd.DataFrame,
    at: datetime,
    stored: pd.DataFrame,
    live_sources: Sequence[PriceSource],
    settings: EstimateSettings,
    ttl: timedelta = CACHE_TTL,
) -> ResolvedPrices:
    """One price per key in effect at ``at``: an override, else an API price fetched within
    ``ttl`` (source ``cache``), else a live API, else an estimate.

    ``stored`` holds what may be reused (PRICE_COLUMNS): overrides in effect and API prices
    fetched before ``at``.
    """
    keys = keys[PRICE_KEY].drop_duplicates().reset_index(drop=True)
    at_ts = pd.Timestamp(at)
    parts: list[pd.DataFrame] = []
    warnings: list[str] = []

    def unpriced() -> pd.DataFrame:
        return _missing(keys, pd.concat(parts)) if parts else keys

    if not stored.empty:
        effective = pd.to_datetime(stored["effective_at"], utc=True)
        in_effect = stored[effective <= at_ts]
        fresh = effective[effective <= at_ts] > at_ts - pd.Timedelta(ttl)
        # Only prices fetched from an API count as cache: a stored "cache" row is a reuse of
        # one, and counting it would renew the entry forever.
        for candidates in (
            in_effect[in_effect["source"] == SOURCE_OVERRIDE],
            in_effect[fresh & (in_effect["source"] == SOURCE_API)].assign(source=SOURCE_CACHE),
        ):
            latest = candidates.sort_values("effective_at").drop_duplicates(PRICE_KEY, keep="last")
            parts.append(
                unpriced().merge(latest[PRICE_COLUMNS[:-1]], on=PRICE_KEY).assign(effective_at=at)
            )

    for source in live_sources:
        wanted = unpriced()
        if wanted.empty:
            break
        try:
            quoted = source.quote(wanted, at)
        except Exception as error:  # a failing API must not stop costing: estimates stand in
            warnings.append(f"price source {source.name} failed ({error}); using estimates")
            continue
        if quoted.empty:
            continue
        quoted = wanted.merge(quoted, on=PRICE_KEY).drop_duplicates(PRICE_KEY)
        if "on_demand_price_per_gpu_hour" not in quoted:
            quoted["on_demand_price_per_gpu_hour"] = float("nan")
        parts.append(quoted.assign(source=SOURCE_API, effective_at=at))

    remaining = unpriced()
    if not remaining.empty:
        parts.append(estimate_prices(remaining, at, settings))

    prices = pd.concat([p[PRICE_COLUMNS] for p in parts if not p.empty], ignore_index=True)
    # A source that gave no on-demand price: fill from the estimate, so baselines always exist.
    missing_on_demand = prices["on_demand_price_per_gpu_hour"].isna()
    if missing_on_demand.any():
        estimates = estimate_prices(prices[missing_on_demand], at, settings)
        filled = prices[missing_on_demand].drop(columns="on_demand_price_per_gpu_hour")
        filled = filled.merge(
            estimates[[*PRICE_KEY, "on_demand_price_per_gpu_hour"]], on=PRICE_KEY, how="left"
        )
        prices = pd.concat([prices[~missing_on_demand], filled[PRICE_COLUMNS]], ignore_index=True)
    return ResolvedPrices(prices=prices.reset_index(drop=True), warnings=warnings)
