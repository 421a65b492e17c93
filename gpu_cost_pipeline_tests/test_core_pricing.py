"""Price estimates and resolve_prices precedence: override > fresh cache > live API > estimate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from gpu_cost_pipeline.core.pricing import (
    PRICE_COLUMNS,
    PRICE_KEY,
    EstimateSettings,
    estimate_on_demand_per_gpu,
    estimate_prices,
    resolve_prices,
)
from gpu_cost_pipeline_tests.test_core_costing import P5

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SETTINGS = EstimateSettings()

T4_GCP = {
    "provider": "gcp",
    "region": "us-central1",
    "zone": "us-central1-a",
    "instance_type": "n1-standard-8",
    "gpu_model": "T4",
    "capacity_type": "on-demand",
}


def keys(*dicts: dict) -> pd.DataFrame:
    return pd.DataFrame(list(dicts), columns=PRICE_KEY)


def with_capacity(key: dict, capacity_type: str) -> dict:
    return {**key, "capacity_type": capacity_type}


def one(frame: pd.DataFrame, key: dict) -> dict:
    mask = pd.Series(True, index=frame.index)
    for column in PRICE_KEY:
        mask &= frame[column] == key[column]
    rows = frame[mask].to_dict("records")
    assert len(rows) == 1, rows
    return rows[0]


def point(key: dict, price: float, source: str, at: datetime, on_demand: float = 9.0) -> dict:
    return {
        **key,
        "price_per_gpu_hour": price,
        "on_demand_price_per_gpu_hour": on_demand,
        "source": source,
        "effective_at": pd.Timestamp(at),
    }


def stored(*points: dict) -> pd.DataFrame:
    return pd.DataFrame(list(points), columns=PRICE_COLUMNS)


NOTHING_STORED = stored()


class FakeSource:
    """A live price API: fixed prices per key; records what it was asked."""

    def __init__(
        self,
        prices: dict[tuple, float],
        on_demand: dict[tuple, float] | None = None,
        name: str = "fake",
        fail: bool = False,
        with_on_demand_column: bool = True,
    ) -> None:
        self.name = name
        self.prices = prices
        self.on_demand = on_demand or {}
        self.fail = fail
        self.with_on_demand_column = with_on_demand_column
        self.asked: list[pd.DataFrame] = []

    def quote(self, wanted: pd.DataFrame, at: datetime) -> pd.DataFrame:
        self.asked.append(wanted.copy())
        if self.fail:
            raise ConnectionError("pricing endpoint timed out")
        rows = []
        for key in wanted[PRICE_KEY].itertuples(index=False):
            if tuple(key) in self.prices:
                row = {**key._asdict(), "price_per_gpu_hour": self.prices[tuple(key)]}
                if self.with_on_demand_column:
                    row["on_demand_price_per_gpu_hour"] = self.on_demand.get(
                        tuple(key), float("nan")
                    )
                rows.append(row)
        columns = [*PRICE_KEY, "price_per_gpu_hour"]
        if self.with_on_demand_column:
            columns.append("on_demand_price_per_gpu_hour")
        return pd.DataFrame(rows, columns=columns)


def k(key: dict) -> tuple:
    return tuple(key[c] for c in PRICE_KEY)


# --- estimates ------------------------------------------------------------------------------


def test_estimate_p5_on_demand_is_instance_price_per_gpu() -> None:
    prices = estimate_prices(keys(P5), AT, SETTINGS)
    assert list(prices.columns) == PRICE_COLUMNS
    row = one(prices, P5)
    assert row["price_per_gpu_hour"] == pytest.approx(6.88)  # 55.04 / 8
    assert row["on_demand_price_per_gpu_hour"] == pytest.approx(6.88)
    assert row["source"] == "estimate"
    assert row["effective_at"] == AT


@pytest.mark.parametrize(
    ("capacity_type", "price"),
    [("spot", 0.40 * 6.88), ("reserved", 6.88), ("on-demand", 6.88)],
)
def test_estimate_capacity_types_aws(capacity_type: str, price: float) -> None:
    key = with_capacity(P5, capacity_type)
    row = one(estimate_prices(keys(key), AT, SETTINGS), key)
    assert row["price_per_gpu_hour"] == pytest.approx(price)
    assert row["on_demand_price_per_gpu_hour"] == pytest.approx(6.88)


def test_estimate_spot_ratios_per_provider() -> None:
    gcp_spot = with_capacity(T4_GCP, "spot")
    azure_spot = {
        "provider": "azure",
        "region": "eastus",
        "zone": "",
        "instance_type": "Standard_NC24ads_A100_v4",
        "gpu_model": "A100-80GB",
        "capacity_type": "spot",
    }
    other_spot = {**azure_spot, "provider": "oracle", "instance_type": "BM.GPU.A100"}
    prices = estimate_prices(keys(gcp_spot, azure_spot, other_spot), AT, SETTINGS)
    assert one(prices, gcp_spot)["price_per_gpu_hour"] == pytest.approx(0.35 * 0.35)
    assert one(prices, azure_spot)["price_per_gpu_hour"] == pytest.approx(0.20 * 3.673)
    # unknown provider: model median over providers (aws 27.45/8, gcp 5.069, azure 3.673) × 0.40
    assert one(prices, other_spot)["on_demand_price_per_gpu_hour"] == pytest.approx(3.673)
    assert one(prices, other_spot)["price_per_gpu_hour"] == pytest.approx(0.40 * 3.673)


def test_estimate_gcp_t4_is_sold_per_gpu() -> None:
    row = one(estimate_prices(keys(T4_GCP), AT, SETTINGS), T4_GCP)
    assert row["price_per_gpu_hour"] == pytest.approx(0.35)


def test_estimate_unknown_model_uses_the_setting() -> None:
    key = {**P5, "instance_type": "g7e.2xlarge", "gpu_model": "unknown"}
    settings = EstimateSettings(unknown_gpu_price_per_hour=3.21)
    row = one(estimate_prices(keys(key), AT, settings), key)
    assert row["price_per_gpu_hour"] == pytest.approx(3.21)
    assert row["on_demand_price_per_gpu_hour"] == pytest.approx(3.21)
    spot = with_capacity(key, "spot")
    assert one(estimate_prices(keys(spot), AT, settings), spot)[
        "price_per_gpu_hour"
    ] == pytest.approx(0.40 * 3.21)


def test_estimate_on_demand_fallbacks() -> None:
    # instance of another provider: the provider's cheapest catalog price for the model
    assert estimate_on_demand_per_gpu("gcp", "p5.48xlarge", "H100-80GB", SETTINGS) == (
        pytest.approx(87.8 / 8)
    )
    # instance with another model than the catalog's: the provider/model price
    assert estimate_on_demand_per_gpu("aws", "p5.48xlarge", "T4", SETTINGS) == pytest.approx(0.526)
    # cheapest of the provider's instances: Azure A100-80GB NC24ads (3.673) < ND96amsr/8 (4.09625)
    assert estimate_on_demand_per_gpu("azure", "", "A100-80GB", SETTINGS) == pytest.approx(3.673)
    # provider without the model: median over providers (aws 0.8048, gcp 0.76)
    assert estimate_on_demand_per_gpu("oracle", "", "L4", SETTINGS) == pytest.approx(0.7824)


def test_estimate_one_row_per_distinct_key() -> None:
    prices = estimate_prices(keys(P5, P5, T4_GCP), AT, SETTINGS)
    assert len(prices) == 2


# --- resolve_prices -------------------------------------------------------------------------


def test_no_stored_no_sources_estimates() -> None:
    resolved = resolve_prices(keys(P5, T4_GCP), AT, NOTHING_STORED, [], SETTINGS)
    assert resolved.warnings == []
    assert list(resolved.prices.columns) == PRICE_COLUMNS
    assert one(resolved.prices, P5)["price_per_gpu_hour"] == pytest.approx(6.88)
    assert one(resolved.prices, T4_GCP)["price_per_gpu_hour"] == pytest.approx(0.35)
    assert set(resolved.prices["source"]) == {"estimate"}


def test_override_wins_over_everything() -> None:
    points = stored(
        point(P5, 1.23, "override", AT - timedelta(hours=20), on_demand=7.0),
        point(P5, 5.00, "api", AT - timedelta(minutes=5)),
    )
    source = FakeSource({k(P5): 4.0}, {k(P5): 6.0})
    resolved = resolve_prices(keys(P5), AT, points, [source], SETTINGS)
    row = one(resolved.prices, P5)
    assert row["source"] == "override"
    assert row["price_per_gpu_hour"] == 1.23
    assert row["on_demand_price_per_gpu_hour"] == 7.0
    assert pd.Timestamp(row["effective_at"]) == pd.Timestamp(AT)
    assert source.asked == []  # nothing left to ask


def test_latest_override_in_effect_wins_and_future_ones_do_not_count() -> None:
    points = stored(
        point(P5, 1.00, "override", AT - timedelta(hours=3)),
        point(P5, 2.00, "override", AT - timedelta(hours=1)),
        point(P5, 3.00, "override", AT + timedelta(minutes=1)),
    )
    row = one(resolve_prices(keys(P5), AT, points, [], SETTINGS).prices, P5)
    assert (row["source"], row["price_per_gpu_hour"]) == ("override", 2.00)


def test_fresh_api_price_is_used_as_cache() -> None:
    points = stored(point(P5, 5.00, "api", AT - timedelta(minutes=30), on_demand=6.5))
    source = FakeSource({k(P5): 4.0}, {k(P5): 6.0})
    resolved = resolve_prices(keys(P5), AT, points, [source], SETTINGS)
    row = one(resolved.prices, P5)
    assert row["source"] == "cache"
    assert row["price_per_gpu_hour"] == 5.00
    assert row["on_demand_price_per_gpu_hour"] == 6.5
    assert pd.Timestamp(row["effective_at"]) == pd.Timestamp(AT)
    assert source.asked == []


def test_latest_fresh_api_price_wins() -> None:
    points = stored(
        point(P5, 5.00, "api", AT - timedelta(minutes=50)),
        point(P5, 5.50, "api", AT - timedelta(minutes=10)),
    )
    row = one(resolve_prices(keys(P5), AT, points, [], SETTINGS).prices, P5)
    assert (row["source"], row["price_per_gpu_hour"]) == ("cache", 5.50)


def test_stale_api_price_is_not_used() -> None:
    points = stored(point(P5, 5.00, "api", AT - timedelta(minutes=90)))
    row = one(resolve_prices(keys(P5), AT, points, [], SETTINGS).prices, P5)
    assert (row["source"], row["price_per_gpu_hour"]) == ("estimate", pytest.approx(6.88))

    source = FakeSource({k(P5): 4.0}, {k(P5): 6.0})
    row = one(resolve_prices(keys(P5), AT, points, [source], SETTINGS).prices, P5)
    assert (row["source"], row["price_per_gpu_hour"]) == ("api", 4.0)
    assert len(source.asked) == 1


def test_ttl_is_configurable() -> None:
    points = stored(point(P5, 5.00, "api", AT - timedelta(minutes=90)))
    row = one(resolve_prices(keys(P5), AT, points, [], SETTINGS, ttl=timedelta(hours=2)).prices, P5)
    assert (row["source"], row["price_per_gpu_hour"]) == ("cache", 5.00)


def test_stored_estimates_are_not_a_cache() -> None:
    points = stored(point(P5, 1.11, "estimate", AT - timedelta(minutes=5)))
    source = FakeSource({k(P5): 4.0}, {k(P5): 6.0})
    row = one(resolve_prices(keys(P5), AT, points, [source], SETTINGS).prices, P5)
    assert (row["source"], row["price_per_gpu_hour"]) == ("api", 4.0)


def test_live_source_prices_what_it_can_and_estimates_the_rest() -> None:
    source = FakeSource({k(P5): 4.0}, {k(P5): 6.0})
    resolved = resolve_prices(keys(P5, T4_GCP), AT, NOTHING_STORED, [source], SETTINGS)
    p5 = one(resolved.prices, P5)
    assert (p5["source"], p5["price_per_gpu_hour"], p5["on_demand_price_per_gpu_hour"]) == (
        "api",
        4.0,
        6.0,
    )
    assert pd.Timestamp(p5["effective_at"]) == pd.Timestamp(AT)
    t4 = one(resolved.prices, T4_GCP)
    assert (t4["source"], t4["price_per_gpu_hour"]) == ("estimate", pytest.approx(0.35))
    assert len(resolved.prices) == 2


def test_second_source_is_asked_only_for_what_the_first_missed() -> None:
    first = FakeSource({k(P5): 4.0}, {k(P5): 6.0}, name="aws")
    second = FakeSource({k(T4_GCP): 0.30}, {k(T4_GCP): 0.36}, name="gcp")
    resolved = resolve_prices(keys(P5, T4_GCP), AT, NOTHING_STORED, [first, second], SETTINGS)
    assert len(second.asked) == 1
    assert second.asked[0][PRICE_KEY].to_dict("records") == [T4_GCP]
    assert one(resolved.prices, T4_GCP)["price_per_gpu_hour"] == 0.30
    assert set(resolved.prices["source"]) == {"api"}


def test_cached_keys_are_not_asked_of_live_sources() -> None:
    points = stored(point(P5, 5.00, "api", AT - timedelta(minutes=1)))
    source = FakeSource({k(T4_GCP): 0.30}, {k(T4_GCP): 0.36})
    resolve_prices(keys(P5, T4_GCP), AT, points, [source], SETTINGS)
    assert [frame[PRICE_KEY].to_dict("records") for frame in source.asked] == [[T4_GCP]]


def test_failing_source_warns_and_estimates() -> None:
    broken = FakeSource({}, name="aws-pricing", fail=True)
    resolved = resolve_prices(keys(P5), AT, NOTHING_STORED, [broken], SETTINGS)
    row = one(resolved.prices, P5)
    assert (row["source"], row["price_per_gpu_hour"]) == ("estimate", pytest.approx(6.88))
    assert len(resolved.warnings) == 1
    assert "aws-pricing" in resolved.warnings[0]
    assert "timed out" in resolved.warnings[0]


def test_failing_source_then_working_source() -> None:
    broken = FakeSource({}, name="broken", fail=True)
    good = FakeSource({k(P5): 4.0}, {k(P5): 6.0}, name="good")
    resolved = resolve_prices(keys(P5), AT, NOTHING_STORED, [broken, good], SETTINGS)
    assert one(resolved.prices, P5)["source"] == "api"
    assert len(resolved.warnings) == 1


def test_live_price_without_on_demand_gets_the_estimate_on_demand() -> None:
    spot = with_capacity(P5, "spot")
    nan_column = FakeSource({k(spot): 2.0})  # on-demand column present but NaN
    no_column = FakeSource({k(spot): 2.0}, with_on_demand_column=False)
    for source in (nan_column, no_column):
        row = one(resolve_prices(keys(spot), AT, NOTHING_STORED, [source], SETTINGS).prices, spot)
        assert row["source"] == "api"
        assert row["price_per_gpu_hour"] == 2.0  # the live price stays
        assert row["on_demand_price_per_gpu_hour"] == pytest.approx(6.88)  # filled: 55.04 / 8


def test_duplicate_keys_resolve_once() -> None:
    resolved = resolve_prices(keys(P5, P5), AT, NOTHING_STORED, [], SETTINGS)
    assert len(resolved.prices) == 1


def test_cached_price_expires_one_ttl_after_the_api_fetch() -> None:
    # What gpu_prices does every window: resolve, store the result, resolve again later.
    t0 = AT
    source = FakeSource({k(P5): 4.0}, {k(P5): 6.0})
    history = resolve_prices(keys(P5), t0, NOTHING_STORED, [source], SETTINGS).prices
    assert one(history, P5)["source"] == "api"

    t1 = t0 + timedelta(minutes=40)
    at_t1 = resolve_prices(keys(P5), t1, history, [source], SETTINGS).prices
    assert one(at_t1, P5)["source"] == "cache"
    history = pd.concat([history, at_t1], ignore_index=True)

    # 80 minutes after the only API fetch: more than the 1 h TTL, the API must be asked again.
    source.prices[k(P5)] = 3.0
    t2 = t0 + timedelta(minutes=80)
    row = one(resolve_prices(keys(P5), t2, history, [source], SETTINGS).prices, P5)
    assert (row["source"], row["price_per_gpu_hour"]) == ("api", 3.0)
