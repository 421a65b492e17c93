"""AWS prices: the Price List Query API (on-demand and reserved terms) and EC2 spot price history.

Credentials come from boto3's default chain (environment, shared files, SSO, instance or pod
role); endpoints can be redirected the standard way (``AWS_ENDPOINT_URL_PRICING``,
``AWS_ENDPOINT_URL_EC2``). Parsing is plain functions over the API's documented shapes, so it is
tested without a network; ``AwsPrices.fetch`` is the only code that calls AWS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

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
from gpu_cost_pipeline.integrations.http import PriceApiError

FEED_PRICE_LIST, FEED_SPOT = "aws-price-list", "aws-spot-history"
# One on-demand Linux price per instance type (DOMAIN.md); marketoption keeps Capacity Block
# listings (price 0.0) out, and any that still come back are rejected.
_FILTERS = {
    "operatingSystem": "Linux",
    "preInstalledSw": "NA",
    "tenancy": "Shared",
    "capacitystatus": "Used",
    "marketoption": "OnDemand",
    "productFamily": "Compute Instance",
}
SPOT_PRODUCTS = ["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]
# Reserved terms: the standard offering class, and of its purchase options the first offered in
# this order (the amortized figure differs little between them; No Upfront needs no capital).
PURCHASE_OPTIONS = ("No Upfront", "Partial Upfront", "All Upfront")
_LEASE_YEARS = {"1yr": 1, "3yr": 3}


def pricing_endpoint_region(region: str) -> str:
    """The Price List API answers only in a few regions (DOMAIN.md)."""
    if region.startswith("ap-"):
        return "ap-south-1"
    if region.startswith("eu-"):
        return "eu-central-1"
    if region.startswith("cn-"):
        return "cn-northwest-1"
    return "us-east-1"


def _effective(term: Mapping, fallback: datetime) -> datetime:
    return parse_time(term.get("effectiveDate"), fallback) or fallback


def _dimensions(term: Mapping) -> list[tuple[str, Mapping]]:
    dimensions = term.get("priceDimensions")
    return list(dimensions.items()) if isinstance(dimensions, Mapping) else []


def parse_price_list_item(raw: object, region: str, rows: PriceRows, fetched_at: datetime) -> None:
    """One GetProducts PriceList entry (a JSON string) -> on-demand and reserved book rows."""
    rows.skus_read += 1
    if isinstance(raw, str):
        try:
            item = json.loads(raw)
        except ValueError:
            rows.reject("(undecodable)", "PriceList[]", "not a JSON document")
            return
    else:
        item = raw
    if not isinstance(item, Mapping):
        rows.reject("(undecodable)", "PriceList[]", "not a JSON object")
        return
    product = item.get("product") if isinstance(item.get("product"), Mapping) else {}
    sku = str(product.get("sku") or "")
    attributes = product.get("attributes") if isinstance(product.get("attributes"), Mapping) else {}
    instance_type = str(attributes.get("instanceType") or "")
    if not instance_type:
        rows.reject(sku, "product.attributes.instanceType", "missing")
        return
    if attributes.get("regionCode") != region:
        rows.reject(
            sku, "product.attributes.regionCode", f"{attributes.get('regionCode')!r}, not {region}"
        )
        return
    if attributes.get("marketoption", "OnDemand") != "OnDemand":
        rows.reject(
            sku,
            "product.attributes.marketoption",
            f"{attributes.get('marketoption')!r} listing, not an on-demand price",
        )
        return
    gpu_model, gpu_count = gpus_of(instance_type, attributes.get("gpu"))
    if not gpu_count:
        rows.reject(
            sku, "product.attributes.gpu", f"no GPU count for {instance_type} (not in catalog)"
        )
        return
    terms = item.get("terms") if isinstance(item.get("terms"), Mapping) else {}
    common = {
        "sku": sku,
        "region": region,
        "instance_type": instance_type,
        "gpu_model": gpu_model,
        "gpu_count": gpu_count,
    }
    on_demand = terms.get("OnDemand") if isinstance(terms.get("OnDemand"), Mapping) else {}
    for code, term in on_demand.items():
        if not isinstance(term, Mapping):
            continue
        for rate, dimension in _dimensions(term):
            if not isinstance(dimension, Mapping) or dimension.get("unit") != "Hrs":
                continue
            field = f"terms.OnDemand.{code}.priceDimensions.{rate}.pricePerUnit.USD"
            price = parse_price((dimension.get("pricePerUnit") or {}).get("USD"))
            if price is None or price <= 0:
                shown = (dimension.get("pricePerUnit") or {}).get("USD")
                rows.reject(sku, field, f"{shown!r} is not a real price")
                continue
            rows.add(
                **common,
                capacity_type=CAPACITY_ON_DEMAND,
                price_per_gpu_hour=price / gpu_count,
                price_per_instance_hour=price,
                effective_at=_effective(term, fetched_at),
                price_field=field,
            )
    reserved = terms.get("Reserved") if isinstance(terms.get("Reserved"), Mapping) else {}
    _add_reserved(reserved, common, rows, fetched_at)


def _add_reserved(reserved: Mapping, common: dict, rows: PriceRows, fetched_at: datetime) -> None:
    """Standard-class reserved terms, amortized: upfront / (8760 × years) + hourly."""
    best: dict[int, tuple[int, str, Mapping]] = {}
    for code, term in reserved.items():
        if not isinstance(term, Mapping):
            continue
        attributes = term.get("termAttributes") or {}
        years = _LEASE_YEARS.get(str(attributes.get("LeaseContractLength", "")).replace(" ", ""))
        option = attributes.get("PurchaseOption")
        if years is None or attributes.get("OfferingClass") != "standard":
            continue
        if option not in PURCHASE_OPTIONS:
            continue
        rank = PURCHASE_OPTIONS.index(option)
        if years not in best or rank < best[years][0]:
            best[years] = (rank, code, term)
    for years, (_, code, term) in sorted(best.items()):
        upfront = hourly = 0.0
        broken = False
        for rate, dimension in _dimensions(term):
            if not isinstance(dimension, Mapping):
                continue
            price = parse_price((dimension.get("pricePerUnit") or {}).get("USD"))
            if price is None:
                rows.reject(
                    common["sku"],
                    f"terms.Reserved.{code}.priceDimensions.{rate}.pricePerUnit.USD",
                    "not a number",
                )
                broken = True
                break
            if dimension.get("unit") == "Quantity":
                upfront += price
            elif dimension.get("unit") == "Hrs":
                hourly += price
        if broken:
            continue
        per_instance = upfront / (HOURS_PER_YEAR * years) + hourly
        option = term["termAttributes"]["PurchaseOption"]
        rows.add(
            **common,
            capacity_type=CAPACITY_COMMITTED[years],
            price_per_gpu_hour=per_instance / common["gpu_count"],
            price_per_instance_hour=per_instance,
            effective_at=_effective(term, fetched_at),
            term=f"{years}yr standard {option}",
            price_field=f"terms.Reserved.{code}",
        )


def parse_spot_history(items: Iterable[Mapping], region: str, rows: PriceRows) -> None:
    """DescribeSpotPriceHistory entries -> one spot point per (instance type, zone, time)."""
    for entry in items:
        rows.skus_read += 1
        instance_type = str(entry.get("InstanceType") or "")
        zone = str(entry.get("AvailabilityZone") or "")
        moment = entry.get("Timestamp")
        sku = f"{instance_type}/{zone}@{moment}"
        if not zone.startswith(region):
            rows.reject(sku, "AvailabilityZone", f"{zone!r} is not in {region}")
            continue
        if not isinstance(moment, datetime):
            rows.reject(sku, "Timestamp", "missing")
            continue
        gpu_model, gpu_count = gpus_of(instance_type)
        if not gpu_count:
            rows.reject(sku, "InstanceType", f"{instance_type!r} is not in the instance catalog")
            continue
        price = parse_price(entry.get("SpotPrice"))
        if price is None or price <= 0:
            rows.reject(sku, "SpotPrice", f"{entry.get('SpotPrice')!r} is not a real price")
            continue
        rows.add(
            sku=sku,
            region=region,
            zone=zone,
            instance_type=instance_type,
            gpu_model=gpu_model,
            capacity_type=CAPACITY_SPOT,
            price_per_gpu_hour=price / gpu_count,
            price_per_instance_hour=price,
            gpu_count=gpu_count,
            effective_at=moment,
            price_field="SpotPrice",
        )


class AwsPrices(dg.ConfigurableResource):
    """AWS Price List (on-demand, reserved) and EC2 spot price history, through boto3."""

    max_attempts: int = Field(
        default=5, ge=1, description="Attempts per call (botocore standard retry mode)."
    )
    timeout_seconds: int = Field(default=60, ge=1)

    def _client(self, service: str, region: str):
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=min(10, self.timeout_seconds),
            read_timeout=self.timeout_seconds,
        )
        return boto3.session.Session().client(service, region_name=region, config=config)

    def fetch(
        self,
        instance_types: Mapping[str, set[str]],
        spot_since: Mapping[str, datetime],
        now: datetime,
        log: Callable[[str], None] = lambda message: None,
    ) -> BookFetch:
        """On-demand and reserved prices of ``instance_types`` per region, and spot history
        from ``spot_since[region]`` to ``now``. Raises PriceApiError if AWS does not answer."""
        from botocore.exceptions import BotoCoreError, ClientError

        listed, spot = PriceRows("aws", FEED_PRICE_LIST), PriceRows("aws", FEED_SPOT)
        for region, types in sorted(instance_types.items()):
            step = f"AWS Price List GetProducts for {region}"
            try:
                pricing = self._client("pricing", pricing_endpoint_region(region))
                pages = pricing.get_paginator("get_products")
                for instance_type in sorted(types):
                    filters = [
                        {"Type": "TERM_MATCH", "Field": name, "Value": value}
                        for name, value in {
                            **_FILTERS,
                            "regionCode": region,
                            "instanceType": instance_type,
                        }.items()
                    ]
                    for page in pages.paginate(ServiceCode="AmazonEC2", Filters=filters):
                        entries = page.get("PriceList") or []
                        if not entries and page.get("NextToken"):
                            listed.reject(instance_type, "PriceList", "empty page with NextToken")
                        for raw in entries:
                            parse_price_list_item(raw, region, listed, now)
                step = f"EC2 DescribeSpotPriceHistory for {region}"
                ec2 = self._client("ec2", region)
                history = ec2.get_paginator("describe_spot_price_history").paginate(
                    InstanceTypes=sorted(types),
                    ProductDescriptions=SPOT_PRODUCTS,
                    StartTime=spot_since[region],
                    EndTime=now,
                )
                for page in history:
                    parse_spot_history(page.get("SpotPriceHistory") or [], region, spot)
            except (BotoCoreError, ClientError) as error:
                raise PriceApiError(f"{step}: {error}") from None
            log(f"AWS {region}: {len(listed.rows)} list prices, {len(spot.rows)} spot points")
        return finish_fetch("aws", [listed, spot], list(instance_types))
