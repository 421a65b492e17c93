"""The price book in PostgreSQL: a fetch is stored once however often it is repeated, and a
window gets, per price key, its most specific series' points around and inside it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from gpu_cost_pipeline.core.price_book import BookFetch, PriceRows, finish_fetch
from gpu_cost_pipeline.store import price_book, queries
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.test_store import node_rows

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
FETCHED = T0 + timedelta(hours=5)


def fetch_of(spot_hours: list[int], on_demand: float = 55.04) -> BookFetch:
    rows = PriceRows("aws", "aws-price-list")
    common = {"region": "us-east-1", "instance_type": "p5.48xlarge", "gpu_model": "H100-80GB"}
    rows.add(
        sku="OD", capacity_type="on-demand", price_per_gpu_hour=on_demand / 8,
        effective_at=datetime(2026, 7, 1, tzinfo=UTC), gpu_count=8, **common,
    )  # fmt: skip
    for hour in spot_hours:
        rows.add(
            sku=f"spot{hour}", capacity_type="spot", zone="us-east-1a",
            price_per_gpu_hour=2.0 + hour / 100, effective_at=T0 + timedelta(hours=hour), **common,
        )  # fmt: skip
    return finish_fetch("aws", [rows], ["us-east-1"])


def stored(store: CostStore) -> pd.DataFrame:
    return store.read_frame(
        "SELECT s.capacity_type, p.effective_at, p.price_per_gpu_hour, p.confirmed_at"
        " FROM price_book_points p JOIN price_book_series s USING (series_id)"
        " ORDER BY 1, 2"
    )


def test_a_repeated_fetch_adds_nothing_and_reconfirms(store: CostStore):
    with store.connection() as conn:
        price_book.write_fetch(conn, fetch_of([-2, -1, 0, 1]), T0, FETCHED)
        first = stored(store)
        price_book.write_fetch(conn, fetch_of([0, 1, 2]), T0, FETCHED + timedelta(hours=1))
    second = stored(store)
    assert len(first) == 5 and len(second) == 6
    latest = second[second["effective_at"] == T0 + timedelta(hours=1)].iloc[0]
    assert latest["confirmed_at"] == FETCHED + timedelta(hours=1)
    fetches = store.read_frame("SELECT status, prices_stored, spot_points FROM price_book_fetches")
    assert fetches.to_dict("records") == [
        {"status": "ok", "prices_stored": 5, "spot_points": 4},
        {"status": "ok", "prices_stored": 4, "spot_points": 3},
    ]


def test_the_database_refuses_a_zero_price_whatever_the_caller(store: CostStore):
    fetch = fetch_of([])
    fetch.points.loc[0, "price_per_gpu_hour"] = 0.0
    with store.connection() as conn, pytest.raises(Exception, match="price_per_gpu_hour"):
        price_book.write_fetch(conn, fetch, T0, FETCHED)
    assert stored(store).empty  # the whole fetch rolled back


def test_window_book_gives_the_points_around_and_inside_the_window(store: CostStore):
    start, end = T0, T0 + timedelta(hours=2)
    with store.write_window("c1", start, end) as writer:
        writer.replace("gpu_node_usage", node_rows(start, 120).assign(zone="us-east-1a"))
        writer.replace(
            "gpu_node_usage",
            node_rows(start, 120, node="n2").assign(zone="us-east-1a", capacity_type="spot"),
        )
    with store.connection() as conn:
        price_book.write_fetch(conn, fetch_of([-3, -1, 0, 1, 2, 5]), T0, FETCHED)
        keys = queries.price_keys(conn, "c1", start, end)
        found = price_book.window_book(conn, keys, start, end)
    spot = found[found["capacity_type"] == "spot"].sort_values("effective_at")
    # latest at or before the start, inside the window, first after the end
    assert spot["effective_at"].tolist() == [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert set(spot["level"]) == {7} and set(spot["zone"]) == {"us-east-1a"}
    on_demand = found[found["capacity_type"] == "on-demand"]
    assert len(on_demand) == 1 and on_demand.iloc[0]["level"] == 3
    assert on_demand.iloc[0]["zone"] == "us-east-1a"  # keyed by the node's key
