"""Azure prices: the Retail Prices API (no auth), or RateCard through azure-mgmt-commerce when a
subscription and offer are configured (the offer's own rates; DefaultAzureCredential).

Retail rows are told apart as DOMAIN.md says: Spot and Low Priority by the name's suffix,
Windows by the product name (skipped: GPU nodes run Linux), DevTest skipped, reservations priced
for their whole term (divided by the term's hours here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dagster as dg
from pydantic import Field

from gpu_cost_pipeline.core.price_book import (
    HOURS_PER_YEAR,
    BookFetch,
    PriceRows,
    finish_fetch,
    gpus_of,
    parse_price,
    parse_time,
)
from gpu_cost_pipeline.core.pricing import CAPACITY_COMMITTED, CAPACITY_ON_DEMAND, CAPACITY_SPOT
from gpu_cost_pipeline.integrations.http import JsonClient, PriceApiError

FEED_RETAIL, FEED_RATECARD = "azure-retail", "azure-ratecard"
API_VERSION = "2023-01-01-preview"
PAGE_SIZE = 1000  # the Retail Prices API's page size
MAX_PAGES = 200
SKUS_PER_QUERY = 15
_TERM_YEARS = {"1 Year": 1, "3 Years": 3, "3 Year": 3}
# RateCard names regions by display name; the book keys them by ARM name.
RATECARD_REGIONS = {
    "US East": "eastus",
    "US East 2": "eastus2",
    "US West": "westus",
    "US West 2": "westus2",
    "US West 3": "westus3",
    "US Central": "centralus",
    "US North Central": "northcentralus",
    "US South Central": "southcentralus",
    "US West Central": "westcentralus",
    "EU West": "westeurope",
    "EU North": "northeurope",
    "UK South": "uksouth",
    "UK West": "ukwest",
    "FR Central": "francecentral",
    "DE West Central": "germanywestcentral",
    "SE Central": "swedencentral",
    "CH North": "switzerlandnorth",
    "NO East": "norwayeast",
    "AP East": "eastasia",
    "AP Southeast": "southeastasia",
    "JA East": "japaneast",
    "JA West": "japanwest",
    "KR Central": "koreacentral",
    "AU East": "australiaeast",
    "AU Southeast": "australiasoutheast",
    "IN Central": "centralindia",
    "IN South": "southindia",
    "CA Central": "canadacentral",
    "CA East": "canadaeast",
    "BR South": "brazilsouth",
}


def retail_filter(region: str, skus: Iterable[str]) -> str:
    """OData filter (values are case-sensitive) for some VM sizes in one region."""
    names = " or ".join(f"armSkuName eq '{sku}'" for sku in sorted(skus))
    return f"serviceName eq 'Virtual Machines' and armRegionName eq '{region}' and ({names})"


def _add(
    rows: PriceRows,
    sku: str,
    region: str,
    instance_type: str,
    capacity: str,
    price: float,
    effective: object,
    fallback: datetime,
    price_field: str,
    term: str = "",
) -> None:
    gpu_model, gpu_count = gpus_of(instance_type)
    rows.add(
        sku=sku,
        region=region,
        instance_type=instance_type,
        gpu_model=gpu_model,
        capacity_type=capacity,
        price_per_gpu_hour=price / (gpu_count or 1),
        price_per_instance_hour=price,
        gpu_count=gpu_count,
        effective_at=parse_time(effective, fallback) or fallback,
        term=term,
        price_field=price_field,
    )


def parse_retail_item(item: object, region: str, rows: PriceRows, fetched_at: datetime) -> None:
    """One Retail Prices item -> a book row (on-demand, spot or a reservation term)."""
    rows.skus_read += 1
    if not isinstance(item, Mapping):
        rows.reject("(not an object)", "Items[]", "not a JSON object")
        return
    sku = str(item.get("skuId") or item.get("meterId") or "")
    name = f"{item.get('skuName', '')} {item.get('meterName', '')}"
    kind = item.get("type")
    if kind == "DevTestConsumption" or str(item.get("productName", "")).endswith("Windows"):
        return  # dev/test subscriptions and Windows licences: not what GPU nodes pay
    if "Low Priority" in name:
        return  # Batch low-priority VMs: AKS node pools use Spot
    if item.get("armRegionName") != region:
        rows.reject(sku, "armRegionName", f"{item.get('armRegionName')!r}, not {region}")
        return
    if item.get("currencyCode", "USD") != "USD":
        rows.reject(sku, "currencyCode", f"{item.get('currencyCode')!r}, not USD")
        return
    instance_type = str(item.get("armSkuName") or "")
    if not gpus_of(instance_type)[1]:
        rows.reject(sku, "armSkuName", f"{instance_type!r} is not in the instance catalog")
        return
    price = parse_price(item.get("retailPrice"))
    if price is None or price <= 0:
        rows.reject(sku, "retailPrice", f"{item.get('retailPrice')!r} is not a real price")
        return
    term = ""
    if kind == "Reservation":
        years = _TERM_YEARS.get(str(item.get("reservationTerm")))
        if years is None:
            rows.reject(sku, "reservationTerm", f"{item.get('reservationTerm')!r} is not known")
            return
        capacity, term = CAPACITY_COMMITTED[years], f"{years}yr reservation"
        price = price / (HOURS_PER_YEAR * years)  # the whole term's price
    elif kind == "Consumption":
        if item.get("unitOfMeasure") != "1 Hour":
            rows.reject(sku, "unitOfMeasure", f"{item.get('unitOfMeasure')!r}, not '1 Hour'")
            return
        capacity = CAPACITY_SPOT if name.rstrip().endswith("Spot") else CAPACITY_ON_DEMAND
    else:
        rows.reject(sku, "type", f"{kind!r} is not a known price type")
        return
    _add(rows, sku, region, instance_type, capacity, price, item.get("effectiveStartDate"),
         fetched_at, "retailPrice", term)  # fmt: skip


def parse_ratecard_meter(
    meter: Mapping, regions: Sequence[str], rows: PriceRows, fetched_at: datetime
) -> None:
    """One RateCard meter (MeterCategory 'Virtual Machines') -> a book row."""
    rows.skus_read += 1
    if meter.get("MeterCategory") != "Virtual Machines":
        return
    sku = str(meter.get("MeterId") or "")
    region = RATECARD_REGIONS.get(str(meter.get("MeterRegion") or ""), "")
    if region not in regions:
        return
    sub_category, name = str(meter.get("MeterSubCategory") or ""), str(meter.get("MeterName") or "")
    if sub_category.endswith("Windows") or "Low Priority" in name:
        return
    spot = name.endswith(" Spot")
    instance_type = "Standard_" + name.removesuffix(" Spot").strip().replace(" ", "_")
    if not gpus_of(instance_type)[1]:
        return  # not a GPU size: RateCard lists every VM meter
    if meter.get("Unit") != "1 Hour":
        rows.reject(sku, "Unit", f"{meter.get('Unit')!r}, not '1 Hour'")
        return
    rates = meter.get("MeterRates") if isinstance(meter.get("MeterRates"), Mapping) else {}
    price = parse_price(rates.get("0"))
    if price is None or price <= 0:
        rows.reject(sku, "MeterRates['0']", f"{rates.get('0')!r} is not a real price")
        return
    capacity = CAPACITY_SPOT if spot else CAPACITY_ON_DEMAND
    _add(rows, sku, region, instance_type, capacity, price, meter.get("EffectiveDate"),
         fetched_at, "MeterRates['0']")  # fmt: skip


def _with_skip(url: str, skip: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "$skip"] + [("$skip", str(skip))]
    return urlunsplit(parts._replace(query=urlencode(query)))


class AzurePrices(dg.ConfigurableResource):
    """Azure Retail Prices (REST), or RateCard when a subscription and offer are set."""

    retail_url: str = Field(default="https://prices.azure.com/api/retail/prices")
    subscription_id: str | None = None
    offer_id: str | None = Field(default=None, description="RateCard offer, e.g. MS-AZR-0003P.")
    management_url: str | None = Field(default=None, description="ARM endpoint (tests, clouds).")
    max_attempts: int = Field(default=5, ge=1)
    backoff_seconds: float = Field(default=1.0, ge=0)

    def retail(
        self,
        instance_types: Mapping[str, set[str]],
        rows: PriceRows,
        now: datetime,
        log: Callable[[str], None],
    ) -> None:
        import requests

        client = JsonClient(requests.Session(), self.max_attempts, self.backoff_seconds, log=log)
        for region, types in sorted(instance_types.items()):
            ordered = sorted(types)
            for first in range(0, len(ordered), SKUS_PER_QUERY):
                chunk = ordered[first : first + SKUS_PER_QUERY]
                query = {"api-version": API_VERSION, "$filter": retail_filter(region, chunk)}
                url = f"{self.retail_url}?{urlencode(query)}"
                self._pages(client, url, region, rows, now)

    def _pages(
        self, client: JsonClient, url: str, region: str, rows: PriceRows, now: datetime
    ) -> None:
        seen = 0
        for page_number in range(1, MAX_PAGES + 1):
            page = client.get(url, None, "Azure Retail Prices")
            if not isinstance(page, Mapping):
                raise PriceApiError("Azure Retail Prices: an answer that is not a JSON object")
            items = page.get("Items") or []
            if not isinstance(items, list):
                raise PriceApiError("Azure Retail Prices: Items is not a list")
            for item in items:
                parse_retail_item(item, region, rows, now)
            seen += len(items)
            next_link = str(page.get("NextPageLink") or "")
            if rows.page_read(page_number, "Items", not items and bool(next_link)):
                return
            if not next_link and len(items) >= PAGE_SIZE:
                next_link = _with_skip(url, seen)  # a full page and no link: page with $skip
            if not next_link:
                return
            url = next_link

    def ratecard(self, regions: Sequence[str], rows: PriceRows, now: datetime) -> None:
        from azure.core.exceptions import AzureError
        from azure.identity import DefaultAzureCredential
        from azure.mgmt.commerce import UsageManagementClient

        client = UsageManagementClient(
            DefaultAzureCredential(),
            self.subscription_id or "",
            **({"base_url": self.management_url} if self.management_url else {}),
        )
        filter_text = (
            f"OfferDurableId eq '{self.offer_id}' and Currency eq 'USD' "
            "and Locale eq 'en-US' and RegionInfo eq 'US'"
        )
        try:
            card = client.rate_card.get(filter=filter_text)
        except AzureError as error:
            raise PriceApiError(
                f"Azure RateCard: {type(error).__name__}: {error.message}"
            ) from None
        for meter in card.meters or []:
            parse_ratecard_meter(meter.serialize(keep_readonly=True), regions, rows, now)

    def fetch(
        self,
        instance_types: Mapping[str, set[str]],
        now: datetime,
        log: Callable[[str], None] = lambda message: None,
    ) -> BookFetch:
        if self.subscription_id and self.offer_id:
            rows = PriceRows("azure", FEED_RATECARD)
            self.ratecard(sorted(instance_types), rows, now)
        else:
            rows = PriceRows("azure", FEED_RETAIL)
            self.retail(instance_types, rows, now, log)
        return finish_fetch("azure", [rows], list(instance_types))
