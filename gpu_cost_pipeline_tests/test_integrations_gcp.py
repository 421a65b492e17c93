"""GCP prices: the Cloud Billing Catalog over real HTTP (multi-page, an API key in a header,
429/500/garbage answers), and the BigQuery pricing export at its client boundary: the real
``google.cloud.bigquery`` Row objects of a query result, from a client that is not Google's."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from google.cloud.bigquery.table import Row

from gpu_cost_pipeline.core.price_book import PriceRows
from gpu_cost_pipeline.integrations import gcp
from gpu_cost_pipeline.integrations.gcp import GcpPrices, gpu_model_of
from gpu_cost_pipeline.integrations.http import PriceApiError
from gpu_cost_pipeline_tests.price_api_servers import PriceApis, gcp_sku

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
KEY = "AIzaSyD-test-s3cret-key"
AMERICAS = ("us-central1", "us-east1", "us-east4")


def catalog() -> list[dict]:
    return [
        gcp_sku("0009-6F35-3126", "Nvidia Tesla T4 GPU running in Americas", nanos=350000000),
        gcp_sku(
            "1A2B-T4SP-0001",
            "Spot Preemptible Nvidia Tesla T4 GPU running in Americas",
            usage_type="Preemptible",
            nanos=140000000,
        ),
        gcp_sku(
            "C0MM-A100-1YR",
            "Commitment v1: Nvidia Tesla A100 GPU in Americas for 1 Year",
            usage_type="Commit1Yr",
            units="1",
            nanos=850000000,
        ),
        gcp_sku("L4L4-0000-0001", "Nvidia L4 GPU running in Americas", nanos=560000000),
        gcp_sku(
            "G2CO-RE00-0001",
            "G2 Instance Core running in Americas",
            group="CPU",
            nanos=24000000,
        ),
        gcp_sku(
            "G2RA-M000-0001",
            "G2 Instance Ram running in Americas",
            group="RAM",
            unit="GiBy.h",
            nanos=2800000,
        ),
        gcp_sku(
            "H100-VIRG-0001",
            "Nvidia H100 80GB GPU running in Virginia",
            regions=["us-east4"],
            units="11",
            nanos=60000000,
        ),
        gcp_sku("BAD0-UNIT-0001", "Nvidia L4 GPU running in EMEA", regions=["europe-west4"]),
        gcp_sku("BAD0-NUMB-0001", "Nvidia Tesla V100 GPU running in Americas", units="abc"),
        gcp_sku("ZERO-PRIC-0001", "Nvidia Tesla P100 GPU running in Americas"),
        gcp_sku(
            "VWS0-T400-0001",
            "Nvidia Tesla T4 Virtual Workstation GPU running in Americas",
            nanos=550000000,
        ),
    ]


def client(apis: PriceApis, **fields) -> GcpPrices:
    return GcpPrices(
        catalog_url=apis.url, api_key=KEY, max_attempts=4, backoff_seconds=0.05, **fields
    )


def rows_by(points, **match) -> dict:
    frame = points
    for column, value in match.items():
        frame = frame[frame[column] == value]
    assert len(frame) == 1, frame
    return frame.iloc[0].to_dict()


def test_catalog_prices_per_gpu_and_per_machine_type():
    with PriceApis(page_size=3) as apis:
        apis.gcp_skus = catalog()
        fetched = client(apis).fetch(["us-central1", "us-east4"], NOW)
    points = fetched.points
    assert fetched.skus_read == len(catalog())
    t4 = rows_by(
        points, region="us-central1", gpu_model="T4", instance_type="", capacity_type="on-demand"
    )
    assert t4["price_per_gpu_hour"] == pytest.approx(0.35)
    assert t4["effective_at"] == datetime(2026, 6, 1, tzinfo=UTC)
    spot = rows_by(points, region="us-central1", gpu_model="T4", capacity_type="spot")
    assert spot["price_per_gpu_hour"] == pytest.approx(0.14)
    commit = rows_by(points, region="us-central1", gpu_model="A100-40GB", instance_type="")
    assert commit["capacity_type"] == "committed-1yr"
    assert commit["price_per_gpu_hour"] == pytest.approx(1.85)
    # G2 machine types bill their cores and RAM too: added, divided by the GPUs.
    g2 = rows_by(points, region="us-central1", instance_type="g2-standard-24")
    assert g2["price_per_instance_hour"] == pytest.approx(2 * 0.56 + 24 * 0.024 + 96 * 0.0028)
    assert g2["price_per_gpu_hour"] == pytest.approx(g2["price_per_instance_hour"] / 2)
    # A regional SKU prices only its region; no A3 host SKUs here, so no a3 rows.
    assert rows_by(points, region="us-east4", gpu_model="H100-80GB")["price_per_gpu_hour"] == (
        pytest.approx(11.06)
    )
    assert points[points["region"] == "us-central1"]["gpu_model"].ne("H100-80GB").all()
    assert not points["instance_type"].str.startswith("a3").any()
    assert "europe-west4" not in set(points["region"])
    assert not (points["sku"] == "VWS0-T400-0001").any()
    problems = {(r.sku, r.field.rsplit(".", 1)[-1]) for r in fetched.rejections}
    assert ("BAD0-NUMB-0001", "units") in problems
    assert ("ZERO-PRIC-0001", "unitPrice") in problems
    assert (points["price_per_gpu_hour"] > 0).all()


def test_paging_key_header_and_failures_with_retry_after():
    with PriceApis(page_size=4) as apis:
        apis.gcp_skus = catalog()
        apis.script(
            "gcp",
            [
                (429, {"Retry-After": "1"}, '{"error": {"code": 429}}'),
                (500, {}, "<html>backend error</html>"),
                (200, {"Content-Type": "application/json"}, "<html>not json</html>"),
            ],
        )
        started = time.monotonic()
        fetched = client(apis).fetch(["us-central1"], NOW)
        waited = time.monotonic() - started
        calls = apis.calls("gcp")
    assert waited >= 1.0  # the 429's Retry-After was honoured
    assert len(calls) == 3 + 3  # three failed tries, then three pages of four
    assert all(
        {k.lower(): v for k, v in call[2].items()}["x-goog-api-key"] == KEY for call in calls
    )
    assert all(KEY not in path for _, path, _, _ in calls)
    assert "pageToken=4" in calls[4][1] and "currencyCode=USD" in calls[3][1]
    assert len(fetched.points) > 0


def test_a_catalog_that_keeps_failing_fails_visibly_without_the_key():
    with PriceApis() as apis:
        apis.script("gcp", [(503, {}, "unavailable")] * 4)
        with pytest.raises(PriceApiError) as raised:
            client(apis).fetch(["us-central1"], NOW)
    message = str(raised.value)
    assert "HTTP 503" in message and "after 4 attempts" in message
    assert KEY not in message and "key=" not in message


def test_an_empty_page_with_a_next_token_is_counted_not_looped_on():
    with PriceApis() as apis:
        apis.script(
            "gcp",
            [(200, {}, '{"skus": [], "nextPageToken": "0"}')] * 3,
        )
        fetched = client(apis).fetch(["us-central1"], NOW)
    assert [r.field for r in fetched.rejections] == ["skus"] * 3
    assert fetched.points.empty


@pytest.mark.parametrize(
    ("description", "model"),
    [
        ("Nvidia Tesla T4 GPU running in Americas", "T4"),
        ("Nvidia Tesla A100 GPU running in Americas", "A100-40GB"),
        ("Nvidia A100 80GB GPU running in Americas", "A100-80GB"),
        ("Spot Preemptible Nvidia H100 80GB Mega GPU running in Virginia", "H100-80GB"),
        ("Nvidia H200 141GB GPU running in Iowa", "H200-141GB"),
        ("Nvidia B200 GPU running in Americas", "B200"),
        ("Nvidia RTX PRO 6000 GPU running in Americas", "RTX-PRO-6000"),
        ("Nvidia Tesla P4 Virtual Workstation GPU running in Americas", None),
    ],
)
def test_gpu_models_from_sku_descriptions(description: str, model: str | None):
    assert gpu_model_of(description) == model


def export_rows() -> list[Row]:
    """Rows as google-cloud-bigquery yields them for EXPORT_QUERY (a Row over a tuple)."""
    fields = {
        name: i
        for i, name in enumerate(
            [
                "sku_id",
                "description",
                "regions",
                "pricing_unit",
                "pricing_unit_description",
                "account_rates",
                "list_rates",
                "export_time",
            ]
        )
    }
    exported = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)

    def rate(amount: float) -> list[dict]:
        return [
            {
                "pricing_unit_quantity": 1.0,
                "start_usage_amount": 0.0,
                "usd_amount": amount,
                "account_currency_amount": amount,
            }
        ]

    values = [
        ("0009-6F35-3126", "Nvidia Tesla T4 GPU running in Americas", list(AMERICAS), "HOUR",
         "hour", rate(0.28), rate(0.35), exported),
        ("L4L4-0000-0001", "Nvidia L4 GPU running in Americas", list(AMERICAS), "HOUR", "hour",
         [], rate(0.56), exported),
        ("NA00-0000-0001", "Nvidia Tesla V100 GPU running in Americas", list(AMERICAS), "HOUR",
         "hour", [{"pricing_unit_quantity": 1.0, "usd_amount": "NA"}], [], exported),
    ]  # fmt: skip
    return [Row(value, fields) for value in values]


def test_the_bigquery_pricing_export_gives_the_accounts_own_prices(monkeypatch):
    asked: list[str] = []

    class Result:
        def result(self):
            return iter(export_rows())

    class Client:  # google.cloud.bigquery.Client at its boundary: query() -> job.result()
        def query(self, query, job_config=None):
            asked.append(query)
            assert job_config.query_parameters[0].value == gcp.COMPUTE_ENGINE
            return Result()

    monkeypatch.setattr("google.cloud.bigquery.Client", Client)
    table = "billing-prj.pricing.cloud_pricing_export"
    fetched = GcpPrices(billing_export_table=table).fetch(["us-central1"], NOW)
    points = fetched.points
    assert fetched.feeds == ["gcp-pricing-export"]
    assert f"`{table}`" in asked[0]
    # The contract price wins over the list price; the list price stands in when it is absent.
    assert rows_by(points, gpu_model="T4")["price_per_gpu_hour"] == pytest.approx(0.28)
    assert rows_by(points, gpu_model="L4", instance_type="")["price_per_gpu_hour"] == 0.56
    assert [r.sku for r in fetched.rejections] == ["NA00-0000-0001"]


def test_a_malformed_export_table_name_is_refused():
    with pytest.raises(PriceApiError, match=r"project\.dataset\.table"):
        GcpPrices(billing_export_table="pricing; DROP TABLE x").export_skus(PriceRows("gcp", "x"))
