"""AWS prices through boto3 against a local endpoint in the real wire formats (Price List JSON
1.1 with PriceList entries as JSON strings; EC2 query protocol with XML answers), reached the
standard way: AWS_ENDPOINT_URL_PRICING / AWS_ENDPOINT_URL_EC2 and signed requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gpu_cost_pipeline.integrations.aws import AwsPrices, pricing_endpoint_region
from gpu_cost_pipeline.integrations.http import PriceApiError
from gpu_cost_pipeline_tests.price_api_servers import PriceApis, aws_price_item, spot_point

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYs3cretKEY"


@pytest.fixture
def apis(monkeypatch: pytest.MonkeyPatch) -> Iterator[PriceApis]:
    with PriceApis(page_size=2) as apis:
        monkeypatch.setenv("AWS_ENDPOINT_URL_PRICING", apis.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", apis.url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        yield apis


def p5_book(apis: PriceApis) -> None:
    apis.aws_products[("us-east-1", "p5.48xlarge")] = [
        aws_price_item(
            "p5.48xlarge",
            "55.0400000000",
            reserved={
                "1yr standard No Upfront": ("0", "34.1600000000"),
                "1yr standard All Upfront": ("280000", "0.0000000000"),
                "3yr standard Partial Upfront": ("300000", "11.0000000000"),
                "1yr convertible No Upfront": ("0", "40.0000000000"),
            },
        ),
        # What GetProducts returns without marketoption=OnDemand: a Capacity Block at 0.0.
        aws_price_item("p5.48xlarge", "0.0000000000", marketoption="CapacityBlock"),
        aws_price_item("p5.48xlarge", "0.0000000000", sku="ZEROPRICESKU0001"),
        aws_price_item("p5.48xlarge", "NA", sku="NAPRICESKU000001"),
        "{'this is': not JSON",
    ]
    apis.aws_products[("us-east-1", "g6.xlarge")] = [
        aws_price_item("g6.xlarge", "0.8048000000", gpus="1"),
        aws_price_item(
            "g6.xlarge", "0.8048000000", gpus="1", region="us-west-2", sku="WRONGREGION00001"
        ),
    ]
    apis.spot_history = [
        spot_point("p5.48xlarge", zone, f"{price:.6f}", NOW - timedelta(hours=hours))
        for zone, base in (("us-east-1a", 20.0), ("us-east-1b", 24.0))
        for hours in range(0, 30)
        for price in [base + hours % 3]
    ] + [spot_point("g6.xlarge", "us-east-1c", "0.000000", NOW - timedelta(hours=1))]


def fetch(hours_of_spot: int = 5, attempts: int = 2):
    return AwsPrices(max_attempts=attempts).fetch(
        {"us-east-1": {"p5.48xlarge", "g6.xlarge"}},
        {"us-east-1": NOW - timedelta(hours=hours_of_spot)},
        NOW,
    )


def one(frame, **match):
    rows = frame
    for column, value in match.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_on_demand_reserved_and_spot_prices_from_the_apis(apis: PriceApis):
    p5_book(apis)
    fetched = fetch()
    points = fetched.points
    on_demand = one(points, instance_type="p5.48xlarge", capacity_type="on-demand")
    assert on_demand["price_per_gpu_hour"] == pytest.approx(55.04 / 8)
    assert on_demand["gpu_model"] == "H100-80GB" and on_demand["zone"] == ""
    assert on_demand["effective_at"] == datetime(2026, 7, 1, tzinfo=UTC)
    # Standard class; No Upfront preferred; upfront amortized over the term's hours.
    one_year = one(points, instance_type="p5.48xlarge", capacity_type="committed-1yr")
    assert one_year["price_per_instance_hour"] == pytest.approx(34.16)
    assert one_year["term"] == "1yr standard No Upfront"
    three_year = one(points, instance_type="p5.48xlarge", capacity_type="committed-3yr")
    assert three_year["price_per_instance_hour"] == pytest.approx(300000 / (8760 * 3) + 11)
    assert one(points, instance_type="g6.xlarge", capacity_type="on-demand")[
        "price_per_gpu_hour"
    ] == pytest.approx(0.8048)

    spot = points[points["capacity_type"] == "spot"].sort_values(["zone", "effective_at"])
    # The gap since the last fetch (5 h), plus the price in effect at its start, per zone.
    assert len(spot) == 2 * 7 and fetched.spot_points == 14
    first_a = spot[spot["zone"] == "us-east-1a"].iloc[0]
    assert first_a["effective_at"] == NOW - timedelta(hours=6)
    assert first_a["price_per_gpu_hour"] == pytest.approx((20.0 + 6 % 3) / 8)

    problems = {(r.sku, r.field.split(".")[-1]): r.problem for r in fetched.rejections}
    assert any("CapacityBlock" in p for p in problems.values())
    assert ("ZEROPRICESKU0001", "USD") in problems and ("NAPRICESKU000001", "USD") in problems
    assert problems[("(undecodable)", "PriceList[]")] == "not a JSON document"
    assert problems[("WRONGREGION00001", "regionCode")] == "'us-west-2', not us-east-1"
    assert any(r.field == "SpotPrice" and "0.000000" in r.problem for r in fetched.rejections)
    assert (points["price_per_gpu_hour"] > 0).all()


def test_requests_are_signed_paged_and_filtered_as_documented(apis: PriceApis):
    p5_book(apis)
    fetch()
    pricing = [r for r in apis.calls("pricing") if "p5.48xlarge" in r[3]]
    assert len(pricing) == 3  # five entries, two per page
    first = json.loads(pricing[0][3])
    filters = {f["Field"]: (f["Type"], f["Value"]) for f in first["Filters"]}
    assert filters["marketoption"] == ("TERM_MATCH", "OnDemand")
    assert filters["regionCode"] == ("TERM_MATCH", "us-east-1")
    assert filters["capacitystatus"][1] == "Used" and filters["tenancy"][1] == "Shared"
    assert "NextToken" in json.loads(pricing[1][3])
    headers = pricing[0][2]
    assert headers["X-Amz-Target"] == "AWSPriceListService.GetProducts"
    assert "Credential=AKIAIOSFODNN7EXAMPLE/" in headers["Authorization"]
    ec2 = apis.calls("ec2")
    assert "Action=DescribeSpotPriceHistory" in ec2[0][3]
    assert "ProductDescription.1=Linux%2FUNIX" in ec2[0][3]
    assert all(SECRET not in body and SECRET not in str(h) for _, _, h, body in apis.requests)


def test_a_failing_api_fails_the_fetch_with_a_clear_message(apis: PriceApis):
    p5_book(apis)
    apis.script("pricing", [(500, {}, "")] * 2)
    with pytest.raises(PriceApiError) as raised:
        fetch(attempts=2)
    message = str(raised.value)
    assert message.startswith("AWS Price List GetProducts for us-east-1:")
    assert "500" in message and SECRET not in message


def test_pricing_endpoint_regions():
    assert pricing_endpoint_region("eu-west-1") == "eu-central-1"
    assert pricing_endpoint_region("ap-northeast-1") == "ap-south-1"
    assert pricing_endpoint_region("us-west-2") == "us-east-1"
