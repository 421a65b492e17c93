"""GCP prices: the Cloud Billing Catalog (Compute Engine SKUs), or the account's own prices from
a BigQuery ``cloud_pricing_export`` table when ``GPU_COST_GCP_BILLING_EXPORT`` names one.

GPUs are priced per GPU (one SKU per model, usage type and region group). Accelerator-optimized
machine types (A2, A3, A4, G2, G4) come with their GPUs and also bill the machine's cores and
RAM; AWS and Azure prices are whole-instance, so for the same meaning the book also stores, per
such machine type, GPU price + (vCPUs × core price + GiB × RAM price) / GPUs. N1 machines with
attached T4/V100/P100/P4 keep the GPU price alone (their host is an ordinary VM).

Auth: an API key (``GPU_COST_GCP_API_KEY``, sent as a header so it never appears in a URL), else
Google application default credentials.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg
from pydantic import Field

from gpu_cost_pipeline.core.gpus import INSTANCE_TYPES, model_from_product
from gpu_cost_pipeline.core.price_book import (
    BookFetch,
    PriceRows,
    finish_fetch,
    parse_price,
    parse_time,
)
from gpu_cost_pipeline.core.pricing import CAPACITY_COMMITTED, CAPACITY_ON_DEMAND, CAPACITY_SPOT
from gpu_cost_pipeline.integrations.http import JsonClient, PriceApiError

COMPUTE_ENGINE = "6F81-5844-456A"
FEED_CATALOG, FEED_EXPORT = "gcp-catalog", "gcp-pricing-export"
MAX_PAGES = 200
_USAGE_TYPES = {
    "OnDemand": CAPACITY_ON_DEMAND,
    "Preemptible": CAPACITY_SPOT,
    "Commit1Yr": CAPACITY_COMMITTED[1],
    "Commit3Yr": CAPACITY_COMMITTED[3],
}
_GPU = re.compile(r"Nvidia (.+?) GPU", re.IGNORECASE)
_HOST = re.compile(r"\b(A2|A3|A4X|A4|G2|G4)\b.*\b(Core|Cpu|Ram)\b", re.IGNORECASE)
_HOURLY_UNITS = {"h", "hour", "HOUR"}
_GIB_HOURLY_UNITS = {"GiBy.h", "gibibyte hour", "GIBIBYTE_HOUR"}


@dataclass(frozen=True)
class GcpSku:
    """What the book needs of one SKU, from either the Catalog or the pricing export."""

    sku_id: str
    description: str
    capacity_type: str
    regions: tuple[str, ...]
    unit: str
    price: float
    effective_at: datetime | None


def capacity_of(description: str, usage_type: str | None = None) -> str | None:
    """Usage type from the Catalog's category, else from the description (the pricing export
    has no category): 'Spot Preemptible …', 'Commitment v1: … for 1 Year'."""
    if usage_type:
        return _USAGE_TYPES.get(usage_type)
    lowered = description.lower()
    if lowered.startswith("commitment"):
        if "3 year" in lowered:
            return CAPACITY_COMMITTED[3]
        return CAPACITY_COMMITTED[1] if "1 year" in lowered else None
    if "preemptible" in lowered or lowered.startswith("spot"):
        return CAPACITY_SPOT
    return CAPACITY_ON_DEMAND


def gpu_model_of(description: str) -> str | None:
    """'Nvidia Tesla A100 GPU running in Americas' -> 'A100-40GB' (GPU Feature Discovery's
    naming rules, applied to the words between 'Nvidia' and 'GPU')."""
    if "virtual workstation" in description.lower():
        return None  # GRID-licensed workstation GPUs: not what Kubernetes nodes run
    found = _GPU.search(description)
    return model_from_product("-".join(found[1].split())) if found else None


def sku_from_catalog(raw: Mapping, rows: PriceRows) -> GcpSku | None:
    """One Catalog SKU object -> GcpSku, or a rejection naming the SKU and field."""
    sku_id = str(raw.get("skuId") or raw.get("name") or "")
    description = str(raw.get("description") or "")
    category = raw.get("category") if isinstance(raw.get("category"), Mapping) else {}
    capacity = capacity_of(description, category.get("usageType"))
    if capacity is None:
        return None  # reservations and other usage types: not priced per hour of use
    infos = raw.get("pricingInfo")
    if not isinstance(infos, list) or not infos or not isinstance(infos[-1], Mapping):
        rows.reject(sku_id, "pricingInfo", "missing")
        return None
    expression = infos[-1].get("pricingExpression") or {}
    tiers = expression.get("tieredRates") if isinstance(expression, Mapping) else None
    if not isinstance(tiers, list) or not tiers or not isinstance(tiers[0], Mapping):
        rows.reject(sku_id, "pricingInfo[].pricingExpression.tieredRates", "missing")
        return None
    unit_price = tiers[0].get("unitPrice") or {}
    if unit_price.get("currencyCode", "USD") != "USD":
        rows.reject(sku_id, "tieredRates[0].unitPrice.currencyCode", "not USD")
        return None
    units, nanos = (
        parse_price(unit_price.get("units", "0")),
        parse_price(unit_price.get("nanos", 0)),
    )
    if units is None or nanos is None:
        field = "units" if units is None else "nanos"
        rows.reject(
            sku_id,
            f"pricingInfo[].pricingExpression.tieredRates[0].unitPrice.{field}",
            f"{unit_price.get(field)!r} is not a number",
        )
        return None
    regions = raw.get("serviceRegions")
    return GcpSku(
        sku_id=sku_id,
        description=description,
        capacity_type=capacity,
        regions=tuple(regions) if isinstance(regions, list) else (),
        unit=str(expression.get("usageUnit") or ""),
        price=units + nanos / 1e9,
        effective_at=parse_time(infos[-1].get("effectiveTime"), None),
    )


def sku_from_export(row: Mapping, rows: PriceRows) -> GcpSku | None:
    """One ``cloud_pricing_export`` row (as selected by ``EXPORT_QUERY``) -> GcpSku. The
    account's own price (billing_account_price) wins over the list price."""
    sku_id, description = str(row.get("sku_id") or ""), str(row.get("description") or "")
    capacity = capacity_of(description)
    if capacity is None:
        return None
    for column in ("account_rates", "list_rates"):
        rates = row.get(column)
        if rates:
            break
    else:
        rows.reject(sku_id, "billing_account_price.tiered_rates", "missing")
        return None
    first = rates[0] if isinstance(rates[0], Mapping) else {}
    amount = parse_price(first.get("usd_amount"))
    quantity = parse_price(first.get("pricing_unit_quantity")) or 1.0
    if amount is None:
        rows.reject(sku_id, f"{column}[0].usd_amount", f"{first.get('usd_amount')!r} not a number")
        return None
    return GcpSku(
        sku_id=sku_id,
        description=description,
        capacity_type=capacity,
        regions=tuple(row.get("regions") or ()),
        unit=str(row.get("pricing_unit_description") or row.get("pricing_unit") or ""),
        price=amount / quantity,
        effective_at=row.get("export_time"),
    )


def add_prices(
    skus: Iterable[GcpSku], regions: Sequence[str], rows: PriceRows, fetched_at: datetime
) -> None:
    """Per wanted region: a price per GPU for every GPU SKU, and per accelerator-optimized
    machine type of the catalog its GPUs plus its share of host cores and RAM."""
    gpu: dict[tuple[str, str, str], GcpSku] = {}  # (region, model, capacity)
    host: dict[tuple[str, str, str, str], GcpSku] = {}  # (region, family, part, capacity)
    for sku in skus:
        in_regions = [r for r in regions if r in sku.regions]
        if not in_regions:
            continue  # a SKU of other regions: the catalog lists every region
        model = gpu_model_of(sku.description)
        family = _HOST.search(sku.description)
        if model is None and family is None:
            continue
        hourly_units = _HOURLY_UNITS if model or family[2].lower() != "ram" else _GIB_HOURLY_UNITS
        if sku.unit not in hourly_units:
            rows.reject(sku.sku_id, "pricingExpression.usageUnit", f"{sku.unit!r} is not hourly")
            continue
        if sku.price <= 0:
            rows.reject(sku.sku_id, "tieredRates[0].unitPrice", f"{sku.price!r} is not a price > 0")
            continue
        for region in in_regions:
            if model:
                gpu[(region, model, sku.capacity_type)] = sku
            else:
                part = "ram" if family[2].lower() == "ram" else "core"
                host[(region, family[1].lower(), part, sku.capacity_type)] = sku
    for (region, model, capacity), sku in sorted(gpu.items()):
        rows.add(
            sku=sku.sku_id,
            region=region,
            gpu_model=model,
            capacity_type=capacity,
            price_per_gpu_hour=sku.price,
            gpu_count=1,
            effective_at=sku.effective_at or fetched_at,
        )
    for machine in (i for i in INSTANCE_TYPES.values() if i.provider == "gcp"):
        family = machine.name.split("-")[0]
        for (region, model, capacity), gpu_sku in sorted(gpu.items()):
            core = host.get((region, family, "core", capacity))
            ram = host.get((region, family, "ram", capacity))
            if model != machine.gpu_model or core is None or ram is None:
                continue
            per_instance = (
                gpu_sku.price * machine.gpu_count
                + core.price * machine.vcpus
                + ram.price * machine.memory_gib
            )
            times = [s.effective_at for s in (gpu_sku, core, ram) if s.effective_at]
            rows.add(
                sku=f"{gpu_sku.sku_id}+{core.sku_id}+{ram.sku_id}",
                region=region,
                instance_type=machine.name,
                gpu_model=model,
                capacity_type=capacity,
                price_per_gpu_hour=per_instance / machine.gpu_count,
                price_per_instance_hour=per_instance,
                gpu_count=machine.gpu_count,
                effective_at=max(times) if times else fetched_at,
            )


# The pricing export's schema (cloud_pricing_export): one row per SKU per export_time.
EXPORT_QUERY = """
SELECT sku.id AS sku_id, sku.description AS description, geo_taxonomy.regions AS regions,
       pricing_unit, pricing_unit_description, billing_account_price.tiered_rates AS account_rates,
       list_price.tiered_rates AS list_rates, export_time
FROM `{table}`
WHERE service.id = @service
  AND export_time = (SELECT MAX(export_time) FROM `{table}` WHERE service.id = @service)
  AND REGEXP_CONTAINS(sku.description, r'(?i)(GPU|Instance (Core|Ram)|(A2|A3|A4X?|G2|G4) (Cpu|Ram))')
"""
_TABLE = re.compile(r"^[A-Za-z0-9_.:-]+\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")


class GcpPrices(dg.ConfigurableResource):
    """GCP Cloud Billing Catalog (REST) or the BigQuery pricing export."""

    catalog_url: str = Field(default="https://cloudbilling.googleapis.com")
    api_key: str | None = Field(default=None, description="Catalog API key; else ADC.")
    billing_export_table: str | None = Field(
        default=None, description="project.dataset.cloud_pricing_export: the account's prices."
    )
    max_attempts: int = Field(default=5, ge=1)
    backoff_seconds: float = Field(default=1.0, ge=0)

    def _session(self):
        import requests

        if self.api_key:
            session = requests.Session()
            session.headers["X-goog-api-key"] = self.api_key
            return session
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-billing.readonly"]
        )
        return AuthorizedSession(credentials)

    def catalog_skus(self, rows: PriceRows, log: Callable[[str], None]) -> list[GcpSku]:
        client = JsonClient(self._session(), self.max_attempts, self.backoff_seconds, log=log)
        url = f"{self.catalog_url.rstrip('/')}/v1/services/{COMPUTE_ENGINE}/skus"
        params = {"currencyCode": "USD", "pageSize": 5000}
        skus: list[GcpSku] = []
        token = ""
        for page_number in range(1, MAX_PAGES + 1):
            page = client.get(
                url, {**params, **({"pageToken": token} if token else {})}, "GCP Cloud Billing"
            )
            if not isinstance(page, Mapping):
                raise PriceApiError("GCP Cloud Billing: an answer that is not a JSON object")
            entries = page.get("skus") or []
            token = str(page.get("nextPageToken") or "")
            if rows.page_read(page_number, "skus", not entries and bool(token)):
                break
            rows.skus_read += len(entries)
            for raw in entries:
                if not isinstance(raw, Mapping):
                    rows.reject("(not an object)", "skus[]", "not a JSON object")
                    continue
                sku = sku_from_catalog(raw, rows)
                if sku is not None:
                    skus.append(sku)
            if not token:
                break
        return skus

    def export_skus(self, rows: PriceRows) -> list[GcpSku]:
        from google.cloud import bigquery

        table = self.billing_export_table or ""
        if not _TABLE.match(table):
            raise PriceApiError(
                f"GPU_COST_GCP_BILLING_EXPORT={table!r} is not project.dataset.table"
            )
        client = bigquery.Client()
        job = client.query(
            EXPORT_QUERY.format(table=table),
            job_config=bigquery.QueryJobConfig(
                query_parameters=[
                    bigquery.ScalarQueryParameter("service", "STRING", COMPUTE_ENGINE)
                ]
            ),
        )
        skus = []
        for row in job.result():
            rows.skus_read += 1
            sku = sku_from_export(dict(row.items()), rows)
            if sku is not None:
                skus.append(sku)
        return skus

    def fetch(
        self,
        regions: Sequence[str],
        now: datetime,
        log: Callable[[str], None] = lambda message: None,
    ) -> BookFetch:
        if self.billing_export_table:
            rows = PriceRows("gcp", FEED_EXPORT)
            skus = self.export_skus(rows)
        else:
            rows = PriceRows("gcp", FEED_CATALOG)
            skus = self.catalog_skus(rows, log)
        add_prices(skus, regions, rows, now)
        return finish_fetch("gcp", [rows], list(regions))
