"""Azure prices: the Retail Prices API over real HTTP (OData filter, NextPageLink paging, the
row kinds told apart, 429/500/garbage answers), and RateCard meters as azure-mgmt-commerce
deserializes them from the API's JSON (its client boundary: no Azure login here)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.mgmt.commerce.models import ResourceRateCardInfo

from gpu_cost_pipeline.core.price_book import PriceRows, finish_fetch
from gpu_cost_pipeline.integrations.azure import AzurePrices, parse_ratecard_meter
from gpu_cost_pipeline.integrations.http import PriceApiError
from gpu_cost_pipeline_tests.price_api_servers import PriceApis, azure_item

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
A100 = "Standard_NC24ads_A100_v4"
ND_H100 = "Standard_ND96isr_H100_v5"


def items() -> list[dict]:
    wrong_region = azure_item(A100, 3.1, region="westus")
    wrong_region["_serve_in"] = "eastus"  # an answer outside the filter it was asked
    return [
        azure_item(A100, 3.673),
        azure_item(A100, 0.7346, suffix=" Spot"),
        azure_item(A100, 0.5, suffix=" Low Priority"),
        azure_item(A100, 5.2, product_suffix=" Windows"),
        azure_item(A100, 2.9, kind="DevTestConsumption"),
        azure_item(A100, 19000.0, kind="Reservation", term="1 Year"),
        azure_item(A100, 40000.0, kind="Reservation", term="3 Years"),
        azure_item(ND_H100, 98.32),
        azure_item(ND_H100, "NA", suffix=" Spot"),
        azure_item(ND_H100, 0, kind="Reservation", term="1 Year"),
        wrong_region,
    ]


def fetch(apis: PriceApis, attempts: int = 4):
    client = AzurePrices(retail_url=f"{apis.url}/api/retail/prices", max_attempts=attempts,
                         backoff_seconds=0.05)  # fmt: skip
    return client.fetch({"eastus": {A100, ND_H100}}, NOW)


def price(points, **match) -> float:
    frame = points
    for column, value in match.items():
        frame = frame[frame[column] == value]
    assert len(frame) == 1, frame
    return float(frame.iloc[0]["price_per_gpu_hour"])


def test_retail_prices_told_apart_and_paged():
    with PriceApis(page_size=3) as apis:
        apis.azure_items = items()
        fetched = fetch(apis)
        calls = apis.calls("azure")
    points = fetched.points
    assert price(points, instance_type=A100, capacity_type="on-demand") == pytest.approx(3.673)
    assert price(points, instance_type=A100, capacity_type="spot") == pytest.approx(0.7346)
    assert price(points, instance_type=A100, capacity_type="committed-1yr") == pytest.approx(
        19000 / 8760
    )
    assert price(points, instance_type=A100, capacity_type="committed-3yr") == pytest.approx(
        40000 / (8760 * 3)
    )
    assert price(points, instance_type=ND_H100, capacity_type="on-demand") == pytest.approx(
        98.32 / 8
    )
    assert len(points) == 5  # Low Priority, Windows and DevTest rows are not GPU-node prices
    assert (points["gpu_model"].isin(["A100-80GB", "H100-80GB"])).all()
    rejected = {(r.field, r.problem.split(",")[0]) for r in fetched.rejections}
    assert rejected == {
        ("retailPrice", "'NA' is not a real price"),
        ("retailPrice", "0 is not a real price"),
        ("armRegionName", "'westus'"),
    }
    assert fetched.skus_read == len(items())
    # Four pages of three; the filter as documented (case-sensitive values), then NextPageLink.
    assert len(calls) == 4
    first = parse_qs(urlsplit(calls[0][1]).query)
    assert first["api-version"] == ["2023-01-01-preview"]
    assert first["$filter"] == [
        "serviceName eq 'Virtual Machines' and armRegionName eq 'eastus' and "
        f"(armSkuName eq '{A100}' or armSkuName eq '{ND_H100}')"
    ]
    assert parse_qs(urlsplit(calls[1][1]).query)["$skip"] == ["3"]


def test_throttling_and_garbage_are_retried_then_a_persistent_failure_fails():
    with PriceApis(page_size=50) as apis:
        apis.azure_items = items()
        apis.script(
            "azure",
            [(429, {"Retry-After": "0"}, ""), (500, {}, ""), (200, {}, "{truncated")],
        )
        assert len(fetch(apis).points) == 5
        apis.script("azure", [(500, {}, "")] * 2)
        with pytest.raises(PriceApiError, match=r"HTTP 500 from 127\.0\.0\.1:\d+/api/retail"):
            fetch(apis, attempts=2)


def test_a_full_page_without_a_link_pages_on_with_skip():
    with PriceApis(page_size=1000) as apis:
        many = [azure_item(A100, 3.673, effective=f"2026-01-01T00:{m:02d}:00Z") for m in range(60)]
        apis.azure_items = many * 17  # 1,020 items: one full page, and then the rest
        apis.azure_next_links = False  # the server leaves NextPageLink empty
        fetched = fetch(apis)
        calls = apis.calls("azure")
    assert len(calls) == 2
    assert parse_qs(urlsplit(calls[1][1]).query)["$skip"] == ["1000"]
    assert fetched.skus_read == 1020


RATECARD = {
    "OfferTerms": [],
    "Meters": [
        {
            "EffectiveDate": "2026-05-01T00:00:00Z",
            "IncludedQuantity": 0.0,
            "MeterCategory": "Virtual Machines",
            "MeterId": "6d3a5b7e-0000-4a4b-9f2e-000000000001",
            "MeterName": "NC24ads A100 v4",
            "MeterRates": {"0": 3.4},
            "MeterRegion": "US East",
            "MeterStatus": "Active",
            "MeterSubCategory": "NCadsA100v4 Series",
            "MeterTags": [],
            "Unit": "1 Hour",
        },
        {
            "EffectiveDate": "2026-05-01T00:00:00Z",
            "MeterCategory": "Virtual Machines",
            "MeterId": "6d3a5b7e-0000-4a4b-9f2e-000000000002",
            "MeterName": "NC24ads A100 v4 Spot",
            "MeterRates": {"0": 0.68},
            "MeterRegion": "US East",
            "MeterSubCategory": "NCadsA100v4 Series",
            "Unit": "1 Hour",
        },
        {
            "MeterCategory": "Virtual Machines",
            "MeterId": "6d3a5b7e-0000-4a4b-9f2e-000000000003",
            "MeterName": "NC24ads A100 v4",
            "MeterRates": {"0": 5.0},
            "MeterRegion": "US East",
            "MeterSubCategory": "NCadsA100v4 Series Windows",
            "Unit": "1 Hour",
        },
        {
            "MeterCategory": "Virtual Machines",
            "MeterId": "6d3a5b7e-0000-4a4b-9f2e-000000000004",
            "MeterName": "ND96isr H100 v5",
            "MeterRates": {"0": 0.0},
            "MeterRegion": "US East",
            "MeterSubCategory": "NDisrH100v5 Series",
            "Unit": "1 Hour",
        },
        {
            "MeterCategory": "Storage",
            "MeterId": "6d3a5b7e-0000-4a4b-9f2e-000000000005",
            "MeterName": "LRS Data Stored",
            "MeterRates": {"0": 0.02},
            "MeterRegion": "US East",
            "Unit": "1 GB/Month",
        },
    ],
    "Currency": "USD",
    "Locale": "en-US",
    "IsTaxIncluded": False,
}


def test_ratecard_meters_as_the_sdk_deserializes_them():
    card = ResourceRateCardInfo.deserialize(RATECARD)
    rows = PriceRows("azure", "azure-ratecard")
    for meter in card.meters:
        parse_ratecard_meter(meter.serialize(keep_readonly=True), ["eastus"], rows, NOW)
    points = finish_fetch("azure", [rows], ["eastus"]).points
    assert price(points, capacity_type="on-demand") == pytest.approx(3.4)
    assert price(points, capacity_type="spot") == pytest.approx(0.68)
    assert set(points["instance_type"]) == {A100}
    assert [r.field for r in rows.rejections] == ["MeterRates['0']"]
