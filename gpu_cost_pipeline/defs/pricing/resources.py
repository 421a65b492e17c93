"""Price resolution settings, the negotiated-prices file, and the price API resources built
from the settings (secrets as EnvVar)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
from pydantic import Field

from gpu_cost_pipeline.core.overrides import OverrideError, parse_overrides_file
from gpu_cost_pipeline.core.pricing import (
    CACHE_TTL,
    EstimateSettings,
    ResolvedPrices,
    resolve_window,
)
from gpu_cost_pipeline.integrations.aws import AwsPrices
from gpu_cost_pipeline.integrations.azure import AzurePrices
from gpu_cost_pipeline.integrations.gcp import GcpPrices
from gpu_cost_pipeline.settings import Settings, variable_of
from gpu_cost_pipeline.store.price_book import replace_file_overrides
from gpu_cost_pipeline.store.schema import record_setting, recorded_settings

OVERRIDES_ORIGIN = "file"


class PriceCatalog(dg.ConfigurableResource):
    """Resolves prices from what is stored: override, then the price book's point in effect
    (``api`` while confirmed within the TTL, ``cache`` after), then the estimate table.
    Estimates are marked ``estimate`` wherever they are stored or shown."""

    unknown_gpu_price_per_hour: float = Field(
        default=EstimateSettings().unknown_gpu_price_per_hour,
        ge=0,
        description="Estimate for GPU models missing from the catalog.",
    )
    cache_ttl_minutes: int = Field(default=int(CACHE_TTL.total_seconds() // 60), ge=1)
    overrides_file: str | None = Field(
        default=None, description="YAML file of negotiated prices (GPU_COST_PRICE_OVERRIDES)."
    )

    def cache_ttl(self) -> timedelta:
        return timedelta(minutes=self.cache_ttl_minutes)

    def resolve(
        self,
        keys: pd.DataFrame,
        start: datetime,
        end: datetime,
        book: pd.DataFrame,
        overrides: pd.DataFrame,
    ) -> ResolvedPrices:
        return resolve_window(
            keys,
            start,
            end,
            book,
            overrides,
            EstimateSettings(unknown_gpu_price_per_hour=self.unknown_gpu_price_per_hour),
            ttl=self.cache_ttl(),
        )

    def sync_overrides_file(self, conn: psycopg.Connection) -> str | None:
        """Load the overrides file into price_overrides when its content changed. Returns a
        problem to report (the file is missing or invalid); the overrides stored from its last
        good version then stay as they were."""
        if not self.overrides_file:
            return None
        path = Path(self.overrides_file)
        try:
            text = path.read_text()
        except OSError as error:
            return f"GPU_COST_PRICE_OVERRIDES: cannot read {path}: {error.strerror}"
        digest = hashlib.sha256(f"{path.resolve()}\n{text}".encode()).hexdigest()
        marker = "price_overrides_file"
        if recorded_settings(conn).get(marker) == digest:
            return None
        try:
            overrides = parse_overrides_file(text, str(path))
        except OverrideError as error:
            return f"{error}; keeping the overrides loaded from its last valid version"
        replace_file_overrides(conn, OVERRIDES_ORIGIN, overrides)
        record_setting(conn, marker, digest)
        return None


def price_resources(settings: Settings) -> dict[str, Any]:
    """The pricing resources of the code location."""
    api_key: Any = settings.gcp_api_key
    if api_key:
        api_key = dg.EnvVar(variable_of("gcp_api_key"))
    return {
        "prices": PriceCatalog(
            unknown_gpu_price_per_hour=settings.unknown_gpu_price,
            cache_ttl_minutes=settings.price_ttl_minutes,
            overrides_file=settings.price_overrides_file,
        ),
        "aws_prices": AwsPrices(),
        "gcp_prices": GcpPrices(
            catalog_url=settings.gcp_catalog_url,
            api_key=api_key,
            billing_export_table=settings.gcp_billing_export,
        ),
        "azure_prices": AzurePrices(
            retail_url=settings.azure_retail_url,
            subscription_id=settings.azure_subscription_id,
            offer_id=settings.azure_offer_id,
        ),
    }
