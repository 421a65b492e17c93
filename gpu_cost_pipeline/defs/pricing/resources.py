"""Price resolution settings and the live price sources (AWS/GCP/Azure clients plug in here)."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import pandas as pd
from pydantic import Field

from gpu_cost_pipeline.core.pricing import (
    CACHE_TTL,
    EstimateSettings,
    PriceSource,
    ResolvedPrices,
    resolve_prices,
)


class PriceCatalog(dg.ConfigurableResource):
    """Resolves prices: override, then a cached API price (1 hour), then live APIs, then the
    estimate table. Estimates are marked ``estimate`` wherever they are stored or shown."""

    unknown_gpu_price_per_hour: float = Field(
        default=EstimateSettings().unknown_gpu_price_per_hour,
        ge=0,
        description="Estimate for GPU models missing from the catalog.",
    )
    cache_ttl_minutes: int = Field(default=int(CACHE_TTL.total_seconds() // 60), ge=0)

    def cache_ttl(self) -> timedelta:
        return timedelta(minutes=self.cache_ttl_minutes)

    def live_sources(self) -> list[PriceSource]:
        return []  # the cloud price API clients register here

    def resolve(self, keys: pd.DataFrame, at: datetime, stored: pd.DataFrame) -> ResolvedPrices:
        return resolve_prices(
            keys,
            at,
            stored,
            self.live_sources(),
            EstimateSettings(unknown_gpu_price_per_hour=self.unknown_gpu_price_per_hour),
            ttl=self.cache_ttl(),
        )
