"""Price estimates, and resolve_window: override > price book (api, then cache) > estimate,
with a point wherever the price in effect changes inside the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from gpu_cost_pipeline.core.pricing import (
    BOOK_MATCH_COLUMNS,
    CACHE_TTL,
    OVERRIDE_MATCH_COLUMNS,
    PRICE_COLUMNS,
    PRICE_KEY,
    EstimateSettings,
    estimate_on_demand_per_gpu,
    estimate_prices,
    resolve_window,
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


# --- resolve_window ---------------------------------------------------------------------------

START, END = AT, AT + timedelta(hours=3)
SPOT = with_capacity(P5, "spot")
P5_ON_DEMAND_LIST = 6.88


def book(*rows: tuple[dict, int, datetime, datetime, float]) -> pd.DataFrame:
    """(key, level, effective_at, confirmed_at, price) rows as the store hands them over."""
    return pd.DataFrame(
        [
            {
                **key,
                "level": level,
                "effective_at": pd.Timestamp(effective),
                "confirmed_at": pd.Timestamp(confirmed),
                "price_per_gpu_hour": price,
            }
            for key, level, effective, confirmed, price in rows
        ],
        columns=BOOK_MATCH_COLUMNS,
    )


def overrides(*rows: tuple[dict, int, datetime, float, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                **key,
                "level": level,
                "effective_from": pd.Timestamp(start),
                "price_per_gpu_hour": price,
                "on_demand_price_per_gpu_hour": on_demand,
            }
            for key, level, start, price, on_demand in rows
        ],
        columns=OVERRIDE_MATCH_COLUMNS,
    )


NO_BOOK, NO_OVERRIDES = book(), overrides()


def resolve(keys_frame, book_frame=NO_BOOK, override_frame=NO_OVERRIDES, ttl=CACHE_TTL):
    return resolve_window(keys_frame, START, END, book_frame, override_frame, SETTINGS, ttl)


def series(resolved, key: dict) -> list[tuple]:
    frame = resolved.prices
    for column in PRICE_KEY:
        frame = frame[frame[column] == key[column]]
    return [
        (row.effective_at.to_pydatetime(), row.price_per_gpu_hour, row.source)
        for row in frame.sort_values("effective_at").itertuples()
    ]


def test_nothing_stored_gives_estimates_and_says_so() -> None:
    resolved = resolve(keys(P5, T4_GCP))
    assert list(resolved.prices.columns) == PRICE_COLUMNS
    assert series(resolved, P5) == [(AT, pytest.approx(6.88), "estimate")]
    assert series(resolved, T4_GCP) == [(AT, pytest.approx(0.35), "estimate")]
    assert "2 price key(s)" in resolved.warnings[0] and "priced by estimate" in resolved.warnings[0]


def test_a_spot_series_gives_the_point_in_effect_at_each_minute() -> None:
    fetched = AT + timedelta(minutes=5)
    stored_book = book(
        (SPOT, 7, AT - timedelta(hours=2), fetched, 2.00),
        (SPOT, 7, AT - timedelta(minutes=30), fetched, 2.10),
        (SPOT, 7, AT + timedelta(minutes=60), fetched, 2.40),
        (SPOT, 7, AT + timedelta(minutes=120), fetched, 2.40),  # same price: no new point
        (SPOT, 7, AT + timedelta(minutes=240), fetched, 9.99),  # after the window
        (P5, 2, datetime(2026, 1, 1, tzinfo=UTC), fetched, 6.50),
    )
    resolved = resolve(keys(SPOT), stored_book)
    assert series(resolved, SPOT) == [
        (AT, 2.10, "api"),
        (AT + timedelta(minutes=60), 2.40, "api"),
    ]
    # The on-demand baseline is the book's on-demand price, not the estimate.
    assert set(resolved.prices["on_demand_price_per_gpu_hour"]) == {6.50}
    assert resolved.warnings == [] and resolved.cache_age_max is None


def test_a_book_price_not_confirmed_within_the_ttl_turns_cache_and_reports_its_age() -> None:
    confirmed = AT - timedelta(minutes=90)
    resolved = resolve(keys(P5), book((P5, 2, AT - timedelta(days=30), confirmed, 6.50)))
    # Current until confirmed + TTL (2 h) = AT + 30 min, then the newest known: cache.
    assert series(resolved, P5) == [
        (AT, 6.50, "api"),
        (AT + timedelta(minutes=30), 6.50, "cache"),
    ]
    assert resolved.cache_age_max == timedelta(minutes=90) + timedelta(minutes=30)


def test_a_later_point_keeps_an_older_one_current_until_it() -> None:
    # Fetched long ago, but superseded inside the window: the book knew the whole interval.
    old_fetch = AT - timedelta(days=3)
    resolved = resolve(
        keys(P5),
        book(
            (P5, 2, AT - timedelta(days=10), old_fetch, 6.00),
            (P5, 2, AT + timedelta(hours=1), AT + timedelta(hours=1), 6.50),
        ),
    )
    assert series(resolved, P5) == [(AT, 6.00, "api"), (AT + timedelta(hours=1), 6.50, "api")]


def test_the_most_specific_book_series_wins() -> None:
    resolved = resolve(
        keys(SPOT),
        book(
            (SPOT, 2, AT - timedelta(days=1), END, 3.00),  # any zone
            (SPOT, 6, AT - timedelta(days=1), END, 2.20),  # this zone
        ),
    )
    assert series(resolved, SPOT) == [(AT, 2.20, "api")]


def test_overrides_win_from_their_start_and_the_most_specific_one_wins() -> None:
    stored_book = book((P5, 2, AT - timedelta(days=30), AT, 6.50))
    resolved = resolve(
        keys(P5),
        stored_book,
        overrides(
            (P5, 0, AT - timedelta(days=60), 5.00, float("nan")),
            (P5, 6, AT + timedelta(minutes=45), 4.00, 6.10),
            (P5, 0, AT + timedelta(minutes=90), 3.00, float("nan")),  # newer, less specific
        ),
    )
    assert series(resolved, P5) == [
        (AT, 5.00, "override"),
        (AT + timedelta(minutes=45), 4.00, "override"),
    ]
    on_demand = resolved.prices.sort_values("effective_at")["on_demand_price_per_gpu_hour"]
    # Own price stands as the on-demand key's baseline; the override's own figure when given.
    assert on_demand.tolist() == [5.00, 6.10]


def test_an_override_starting_after_the_window_does_not_count() -> None:
    resolved = resolve(keys(P5), NO_BOOK, overrides((P5, 0, END, 1.0, float("nan"))))
    assert series(resolved, P5) == [(AT, pytest.approx(6.88), "estimate")]


def test_estimates_fill_keys_without_book_or_override_and_baselines_follow_the_book() -> None:
    resolved = resolve(keys(SPOT, T4_GCP), book((P5, 2, AT - timedelta(days=1), AT, 6.50)))
    spot = series(resolved, SPOT)
    assert spot == [(AT, pytest.approx(0.40 * 6.88), "estimate")]
    row = resolved.prices[resolved.prices["capacity_type"] == "spot"].iloc[0]
    assert row["on_demand_price_per_gpu_hour"] == 6.50  # the baseline is still real
    assert "e.g. aws/us-east-1" in resolved.warnings[0] or "gcp" in resolved.warnings[0]


def test_duplicate_and_empty_keys() -> None:
    assert len(resolve(keys(P5, P5)).prices) == 1
    assert resolve(keys()).prices.empty
