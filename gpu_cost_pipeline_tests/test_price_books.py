"""The price books end to end: a window priced during an outage (estimates), the book arrives,
the window is backfilled and re-priced from it with nothing double-counted; and the price-book
assets loaded as Dagster loads them, fetching from the local price APIs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from gpu_cost_pipeline.defs.costs.assets import gpu_cost
from gpu_cost_pipeline.defs.partitions import minute_partitions
from gpu_cost_pipeline.defs.pricing.assets import gpu_prices
from gpu_cost_pipeline.defs.pricing.books import PRICE_BOOK_SCHEDULES, aws_price_book
from gpu_cost_pipeline.defs.pricing.resources import PriceCatalog
from gpu_cost_pipeline.defs.usage.assets import gpu_usage
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.integrations.aws import AwsPrices
from gpu_cost_pipeline.integrations.gcp import GcpPrices
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.price_api_servers import (
    PriceApis,
    aws_price_item,
    gcp_sku,
    spot_point,
)
from gpu_cost_pipeline_tests.test_code_location import MODULE, dagster
from gpu_cost_pipeline_tests.test_pipeline import range_tags

COST_ASSETS = [gpu_usage, gpu_prices, gpu_cost]
# Whole-instance list prices the book will serve (deliberately not the estimate table's).
BOOK = {
    "p5.48xlarge": ("52.0000000000", "8"),
    "p4de.24xlarge": ("26.0000000000", "8"),
    "p4d.24xlarge": ("20.0000000000", "8"),
    "g6.xlarge": ("0.7800000000", "1"),
    "g4dn.xlarge": ("0.5000000000", "1"),
}
SPOT = {"p4de.24xlarge": 10.0, "g4dn.xlarge": 0.20}  # instance prices; +10 % each hour


def serve_aws_book(apis: PriceApis, now: datetime) -> None:
    for instance_type, (price, gpus) in BOOK.items():
        apis.aws_products[("us-east-1", instance_type)] = [
            aws_price_item(instance_type, price, gpus=gpus),
            aws_price_item(instance_type, "0.0000000000", gpus=gpus, marketoption="CapacityBlock"),
        ]
    hour = now.replace(minute=0, second=0, microsecond=0)
    apis.spot_history = [
        spot_point(instance_type, f"us-east-1{zone}", f"{base * (1 + 0.1 * (h % 5)):.6f}",
                   hour - timedelta(hours=h))
        for instance_type, base in SPOT.items()
        for zone in "abc"
        for h in range(0, 30)
    ]  # fmt: skip


@pytest.fixture
def aws_apis(monkeypatch: pytest.MonkeyPatch) -> Iterator[PriceApis]:
    with PriceApis(page_size=1) as apis:
        for name in ("AWS_ENDPOINT_URL_PRICING", "AWS_ENDPOINT_URL_EC2"):
            monkeypatch.setenv(name, apis.url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-access-key")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield apis


def resources(database_url: str) -> dict:
    return {
        "store": CostStore(database_url=database_url),
        "usage_source": UsageSource(cluster="test", simulated_gpu_pods=40),
        "prices": PriceCatalog(),
        "aws_prices": AwsPrices(max_attempts=2),
    }


def window_totals(store: CostStore, start: datetime, end: datetime) -> dict:
    frame = store.read_frame(
        "SELECT count(*) AS rows, sum(cost_usd) AS cost,"
        " sum(cost_usd) FILTER (WHERE price_source = 'estimate') AS estimated,"
        " count(DISTINCT (pod_uid, minute)) AS distinct_rows FROM gpu_cost"
        " WHERE cluster = 'test' AND minute >= %s AND minute < %s",
        (start, end),
    )
    return frame.iloc[0].to_dict()


def test_an_outage_window_is_repriced_from_the_book_by_a_backfill(
    store: CostStore, database_url: str, aws_apis: PriceApis
):
    now = datetime.now(UTC)
    start = (now - timedelta(hours=3)).replace(minute=50, second=0, microsecond=0)
    end = start + timedelta(minutes=20)  # crosses the hour: a spot point inside it
    first, last = (
        minute_partitions.get_partition_key_for_timestamp(t.timestamp())
        for t in (start, end - timedelta(minutes=1))
    )
    run = resources(database_url)
    # 1. The price API is down: the window is priced by estimate.
    assert dg.materialize(COST_ASSETS, tags=range_tags(first, last), resources=run).success
    outage = window_totals(store, start, end)
    assert outage["estimated"] == pytest.approx(outage["cost"])

    # 2. The book arrives (one fetch: list prices, and spot history since a day ago).
    serve_aws_book(aws_apis, now)
    fetched = dg.materialize([aws_price_book], resources=run)
    assert fetched.success
    book = {
        k: v.value
        for k, v in fetched.asset_materializations_for_node("aws_price_book")[0].metadata.items()
    }
    assert book["gpu_prices_stored"] > len(BOOK) and book["spot_series_points"] > 6 * 24
    assert book["rejected_items"] >= len(BOOK)  # the Capacity Block listings
    [coverage] = fetched.get_asset_check_evaluations()
    # A warning, not a failure: the RTX PRO node's g7e.2xlarge is not in this book.
    assert not coverage.passed and coverage.severity == dg.AssetCheckSeverity.WARN
    assert coverage.metadata["uncovered_keys"].value == 1
    assert "g7e.2xlarge" in coverage.metadata["examples"].value

    # 3. Backfill the window: re-priced from the book, rows replaced, checks still hold.
    result = dg.materialize(COST_ASSETS, tags=range_tags(first, last), resources=run)
    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    repriced = window_totals(store, start, end)
    assert repriced["rows"] == outage["rows"] == repriced["distinct_rows"]
    assert repriced["cost"] != pytest.approx(outage["cost"])
    # Only the RTX PRO node (g7e, not in this book) is still an estimate.
    remaining = store.read_frame(
        "SELECT DISTINCT instance_type FROM gpu_cost WHERE price_source = 'estimate'"
    )
    assert remaining["instance_type"].tolist() == ["g7e.2xlarge"]
    assert repriced["estimated"] < 0.2 * repriced["cost"]
    spot = store.read_frame(
        "SELECT node, count(DISTINCT price_per_gpu_hour) AS prices,"
        " string_agg(DISTINCT price_source, ',') AS sources FROM gpu_cost"
        " WHERE instance_type = 'p4de.24xlarge' AND minute >= %s AND minute < %s GROUP BY node",
        (start, end),
    )
    assert not spot.empty and set(spot["sources"]) == {"api"}
    assert set(spot["prices"]) == {2}  # the hourly spot point took effect at its own minute
    points = store.read_frame(
        "SELECT count(*) AS n, count(DISTINCT (provider, region, zone, instance_type, gpu_model,"
        " capacity_type, effective_at)) AS d FROM price_points WHERE cluster = 'test'"
    )
    assert points.loc[0, "n"] == points.loc[0, "d"]  # replaced, not added


def test_the_price_book_asset_loads_and_runs_as_dagster_runs_it(
    database_url: str, tmp_path: Path, aws_apis: PriceApis
):
    serve_aws_book(aws_apis, datetime.now(UTC))
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "GPU_COST_DATABASE_URL": database_url,
        "GPU_COST_CLUSTER": "prod",
        "DAGSTER_HOME": str(home),
        "AWS_ENDPOINT_URL_PRICING": aws_apis.url,
        "AWS_ENDPOINT_URL_EC2": aws_apis.url,
    }
    done = dagster(["asset", "materialize", "-m", MODULE, "--select", "aws_price_book"], env)
    assert done.returncode == 0, done.stderr[-2000:]
    store = CostStore(database_url=database_url)
    series = store.read_frame(
        "SELECT count(*) FILTER (WHERE capacity_type = 'spot') AS spot,"
        " count(*) FILTER (WHERE capacity_type = 'on-demand') AS on_demand FROM price_book_series"
    )
    assert series.loc[0, "spot"] == 6 and series.loc[0, "on_demand"] == len(BOOK)
    assert "Capacity" in done.stderr  # the rejected Capacity Block listings, named, as warnings

    aws_apis.script("pricing", [(503, {}, "")] * 50)
    failed = dagster(["asset", "materialize", "-m", MODULE, "--select", "aws_price_book"], env)
    assert failed.returncode != 0
    assert "aws price book fetch failed: AWS Price List GetProducts for us-east-1" in failed.stderr
    fetches = store.read_frame("SELECT status FROM price_book_fetches ORDER BY fetch_id")
    assert fetches["status"].tolist() == ["ok", "failed"]
    assert len(store.read_frame("SELECT * FROM price_book_series")) == 6 + len(BOOK)  # kept


def test_the_gcp_key_never_reaches_logs_metadata_or_the_database(
    database_url: str, tmp_path: Path, server_url: str
):
    key = "AIzaSy-never-print-this-s3cret"
    with PriceApis() as apis:
        apis.gcp_skus = [
            gcp_sku("0009-6F35-3126", "Nvidia Tesla T4 GPU running in Americas", nanos=350000000),
            gcp_sku("BAD0-0000-0001", "Nvidia L4 GPU running in Americas", units="x"),
        ]
        apis.script("gcp", [(429, {"Retry-After": "0"}, "")])
        home = tmp_path / "home"
        home.mkdir()
        env = {
            "GPU_COST_DATABASE_URL": database_url,
            "DAGSTER_HOME": str(home),
            "GPU_COST_CLOUD_PROVIDER": "gcp",
            "GPU_COST_REGION": "us-central1",
            "GPU_COST_GCP_API_KEY": key,
            "GPU_COST_GCP_CATALOG_URL": apis.url,
        }
        done = dagster(["asset", "materialize", "-m", MODULE, "--select", "gcp_price_book"], env)
        sent = [headers for _, _, headers, _ in apis.calls("gcp")]
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(key in headers.values() for headers in sent)  # it was used...
    assert key not in done.stdout + done.stderr  # ...and never shown
    assert "BAD0-0000-0001" in done.stderr  # the rejected SKU is named
    for path in home.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    dump = CostStore(database_url=database_url).read_frame(
        "SELECT (SELECT string_agg(t::text, '') FROM price_book_points t)"
        " || (SELECT string_agg(f::text, '') FROM price_book_fetches f) AS everything"
    )
    assert key not in str(dump.loc[0, "everything"])


def test_the_schedule_skips_providers_the_cluster_does_not_use(database_url: str):
    run = {
        "store": CostStore(database_url=database_url),
        "usage_source": UsageSource(cluster="test", default_provider="gcp"),
    }
    schedules = {s.name: s for s in PRICE_BOOK_SCHEDULES}
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, resources=run) as context,
    ):
        aws = schedules["aws_price_book_schedule"].evaluate_tick(context)
        gcp = schedules["gcp_price_book_schedule"].evaluate_tick(context)
    assert not aws.run_requests and "no aws GPU nodes" in (aws.skip_message or "")
    assert len(gcp.run_requests or []) == 1  # the configured provider is fetched


def test_gcp_prices_resource_is_built_from_settings():
    from gpu_cost_pipeline.defs.resources import build_resources
    from gpu_cost_pipeline.settings import load_settings

    built = build_resources(load_settings({"GPU_COST_GCP_CATALOG_URL": "http://127.0.0.1:9"}))
    assert isinstance(built["gcp_prices"], GcpPrices)
    assert built["gcp_prices"].catalog_url == "http://127.0.0.1:9"
