"""cost_rows, _attach_prices, node_balance_error and attach_attributes with hand-computed costs."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from gpu_cost_pipeline.core.costing import (
    COST_COLUMNS,
    MissingPriceError,
    _attach_prices,
    attach_attributes,
    cost_problems,
    cost_rows,
    node_balance_error,
)
from gpu_cost_pipeline.core.pricing import PRICE_COLUMNS, PRICE_KEY

P5 = {
    "provider": "aws",
    "region": "us-east-1",
    "zone": "us-east-1a",
    "instance_type": "p5.48xlarge",
    "gpu_model": "H100-80GB",
    "capacity_type": "on-demand",
}
P4DE_SPOT = {
    **P5,
    "instance_type": "p4de.24xlarge",
    "gpu_model": "A100-80GB",
    "capacity_type": "spot",
}
P4D = {**P5, "instance_type": "p4d.24xlarge", "gpu_model": "A100-40GB"}
G6 = {**P5, "instance_type": "g6.xlarge", "gpu_model": "L4"}


def ts(hh: int, mm: int) -> pd.Timestamp:
    return pd.Timestamp(datetime(2026, 3, 1, hh, mm, tzinfo=UTC))


T10 = ts(10, 0)


def price_points(
    *points: tuple[dict, float, float, pd.Timestamp], unit: str = "ns"
) -> pd.DataFrame:
    frame = pd.DataFrame(
        [
            {
                **key,
                "price_per_gpu_hour": price,
                "on_demand_price_per_gpu_hour": on_demand,
                "source": "estimate",
                "effective_at": at,
            }
            for key, price, on_demand, at in points
        ],
        columns=PRICE_COLUMNS,
    )
    if unit == "python":
        frame["effective_at"] = pd.Series(
            [pd.Timestamp(v).to_pydatetime() for v in frame["effective_at"]], dtype=object
        )
    else:
        frame["effective_at"] = frame["effective_at"].astype(f"datetime64[{unit}, UTC]")
    return frame


def node_minute(node: str, key: dict, gpu_count: int, minute: pd.Timestamp, idle: float, **kw):
    return {
        "minute": minute,
        "cluster": "prod",
        "node": node,
        **key,
        "gpu_count": gpu_count,
        "sharing_mode": kw.get("sharing_mode", "exclusive"),
        "seconds": kw.get("seconds", 60),
        "gpus_held": gpu_count - idle,
        "idle_gpus": idle,
    }


def pod_minute(uid: str, node: str, key: dict, share: float, minute: pd.Timestamp, seconds: int):
    return {
        "minute": minute,
        "cluster": "prod",
        "pod_uid": uid,
        "namespace": "ml",
        "pod": f"pod-{uid}",
        "node": node,
        **key,
        "gpu_share": share,
        "sharing_mode": "exclusive",
        "team": "nlp",
        "project": "llm",
        "experiment_id": "",
        "cost_center": "research",
        "seconds": seconds,
    }


def frames(pods: list[dict], nodes: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    pod_frame = (
        pd.DataFrame(pods)
        if pods
        else pd.DataFrame(columns=list(pod_minute("", "", P5, 0, T10, 0)))
    )
    return pod_frame, pd.DataFrame(nodes)


def by_uid(costs: pd.DataFrame) -> dict[str, dict]:
    return {row["pod_uid"]: row for row in costs.to_dict("records")}


def test_whole_gpu_pod_and_idle_row() -> None:
    pods, nodes = frames(
        [pod_minute("train", "h100", P5, 4.0, T10, 60)],
        [node_minute("h100", P5, 8, T10, idle=4.0)],
    )
    prices = price_points((P5, 6.88, 6.88, ts(9, 0)))
    costs = cost_rows(pods, nodes, prices)
    assert list(costs.columns) == COST_COLUMNS
    rows = by_uid(costs)
    assert set(rows) == {"train", "idle:h100"}

    train = rows["train"]
    assert train["cost_usd"] == pytest.approx(0.4586666666666667, rel=1e-12)  # 4 × 6.88 × 60/3600
    assert train["on_demand_cost_usd"] == pytest.approx(0.4586666666666667, rel=1e-12)
    assert train["exclusive_cost_usd"] == pytest.approx(0.4586666666666667, rel=1e-12)
    assert train["gpu_hours"] == pytest.approx(4 / 60, rel=1e-12)
    assert train["price_per_gpu_hour"] == 6.88
    assert train["price_source"] == "estimate"
    assert not train["is_idle"]
    assert (train["team"], train["namespace"], train["node"]) == ("nlp", "ml", "h100")

    idle = rows["idle:h100"]
    assert idle["is_idle"]
    assert idle["gpu_share"] == 4.0
    assert idle["cost_usd"] == pytest.approx(0.4586666666666667, rel=1e-12)
    assert idle["exclusive_cost_usd"] == pytest.approx(0.4586666666666667, rel=1e-12)
    assert (idle["namespace"], idle["pod"], idle["team"], idle["project"]) == ("", "", "", "")
    assert idle["gpu_model"] == "H100-80GB"
    assert node_balance_error(costs, nodes, prices) == pytest.approx(0.0, abs=1e-12)


def test_spot_cost_vs_on_demand_cost() -> None:
    pods, nodes = frames(
        [pod_minute("p", "a100s", P4DE_SPOT, 2.0, T10, 30)],
        [node_minute("a100s", P4DE_SPOT, 2, T10, idle=1.0)],
    )
    costs = by_uid(cost_rows(pods, nodes, price_points((P4DE_SPOT, 2.0, 5.0, ts(9, 0)))))
    p = costs["p"]
    assert p["cost_usd"] == pytest.approx(2.0 * 2 * 30 / 3600, rel=1e-12)  # 0.0333…
    assert p["on_demand_cost_usd"] == pytest.approx(5.0 * 2 * 30 / 3600, rel=1e-12)  # 0.0833…
    assert p["on_demand_price_per_gpu_hour"] == 5.0
    assert p["capacity_type"] == "spot"
    assert costs["idle:a100s"]["cost_usd"] == pytest.approx(2.0 * 1 * 60 / 3600, rel=1e-12)
    assert costs["idle:a100s"]["on_demand_cost_usd"] == pytest.approx(5.0 / 60, rel=1e-12)


def test_exclusive_cost_rounds_shared_use_up_to_whole_gpus() -> None:
    pods, nodes = frames(
        [
            pod_minute("slice", "mig", P4D, 1 / 7, T10, 60),
            pod_minute("three-slices", "mig", P4D, 3 / 7, T10, 60),
            pod_minute("one-and-a-half", "mig", P4D, 1.5, T10, 60),
            pod_minute("two", "mig", P4D, 2.0, T10, 60),
            pod_minute("ts", "l4", G6, 0.25, T10, 60),
        ],
        [
            node_minute("mig", P4D, 8, T10, idle=8 - (1 / 7 + 3 / 7 + 1.5 + 2.0)),
            node_minute("l4", G6, 1, T10, idle=0.75),
        ],
    )
    prices = price_points((P4D, 2.745, 2.745, ts(9, 0)), (G6, 0.8048, 0.8048, ts(9, 0)))
    all_costs = cost_rows(pods, nodes, prices)
    costs = by_uid(all_costs)
    # a 1/7 MIG slice costs 1/7 of the GPU, but alone it would have needed a whole GPU
    assert costs["slice"]["cost_usd"] == pytest.approx(2.745 / 7 / 60, rel=1e-12)  # 0.0065357…
    assert costs["slice"]["exclusive_cost_usd"] == pytest.approx(0.04575, rel=1e-12)  # 2.745/60
    assert costs["three-slices"]["exclusive_cost_usd"] == pytest.approx(0.04575, rel=1e-12)
    assert costs["one-and-a-half"]["exclusive_cost_usd"] == pytest.approx(2 * 0.04575, rel=1e-12)
    assert costs["two"]["exclusive_cost_usd"] == pytest.approx(2 * 0.04575, rel=1e-12)
    assert costs["ts"]["cost_usd"] == pytest.approx(0.8048 * 0.25 / 60, rel=1e-12)
    assert costs["ts"]["exclusive_cost_usd"] == pytest.approx(0.8048 / 60, rel=1e-12)
    # the idle row's exclusive cost is just its cost
    idle = costs["idle:l4"]
    assert idle["exclusive_cost_usd"] == pytest.approx(idle["cost_usd"], rel=1e-12)
    assert idle["cost_usd"] == pytest.approx(0.8048 * 0.75 / 60, rel=1e-12)
    assert node_balance_error(all_costs, nodes, prices) == pytest.approx(0.0, abs=1e-12)


def test_fully_held_node_has_no_idle_row() -> None:
    pods, nodes = frames(
        [pod_minute("a", "n", P5, 1.0, T10, 60), pod_minute("b", "n", P5, 1.0, T10, 60)],
        [node_minute("n", P5, 2, T10, idle=0.0)],
    )
    costs = cost_rows(pods, nodes, price_points((P5, 6.88, 6.88, ts(9, 0))))
    assert sorted(costs["pod_uid"]) == ["a", "b"]
    assert not costs["is_idle"].any()


def test_zero_share_pod_has_zero_exclusive_cost() -> None:
    pods, nodes = frames(
        [pod_minute("z", "n", P5, 0.0, T10, 60)], [node_minute("n", P5, 1, T10, idle=1.0)]
    )
    costs = by_uid(cost_rows(pods, nodes, price_points((P5, 6.88, 6.88, ts(9, 0)))))
    assert costs["z"]["cost_usd"] == 0.0
    assert costs["z"]["exclusive_cost_usd"] == 0.0


def test_prices_are_matched_by_the_whole_key() -> None:
    zone_b = {**P5, "zone": "us-east-1b"}
    spot = {**P5, "capacity_type": "spot"}
    pods, nodes = frames(
        [
            pod_minute("a", "na", P5, 1.0, T10, 60),
            pod_minute("b", "nb", zone_b, 1.0, T10, 60),
            pod_minute("s", "ns", spot, 1.0, T10, 60),
        ],
        [
            node_minute("na", P5, 1, T10, idle=0.0),
            node_minute("nb", zone_b, 1, T10, idle=0.0),
            node_minute("ns", spot, 1, T10, idle=0.0),
        ],
    )
    prices = price_points(
        (spot, 3.0, 6.88, ts(9, 30)),
        (zone_b, 2.0, 2.0, ts(9, 0)),
        (P5, 1.0, 1.0, ts(8, 0)),
        ({**P5, "region": "us-west-2"}, 99.0, 99.0, ts(9, 59)),
    )
    costs = by_uid(cost_rows(pods, nodes, prices))
    assert costs["a"]["price_per_gpu_hour"] == 1.0
    assert costs["b"]["price_per_gpu_hour"] == 2.0
    assert costs["s"]["price_per_gpu_hour"] == 3.0
    assert costs["s"]["on_demand_price_per_gpu_hour"] == 6.88


def _five_minutes() -> pd.DataFrame:
    return pd.DataFrame([{**P5, "minute": ts(10, m), "seconds": 60} for m in range(5)])


def _price_change(unit: str) -> pd.DataFrame:
    return price_points((P5, 1.0, 1.5, ts(10, 0)), (P5, 2.0, 2.5, ts(10, 3)), unit=unit)


@pytest.mark.parametrize("unit", ["ns", "us", "python"])
def test_price_change_mid_window(unit: str) -> None:
    attached = _attach_prices(_five_minutes(), _price_change(unit))
    assert attached["price_per_gpu_hour"].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert attached["on_demand_price_per_gpu_hour"].tolist() == [1.5, 1.5, 1.5, 2.5, 2.5]


@pytest.mark.parametrize("unit", ["ns", "us", "python"])
def test_price_change_mid_window_costs(unit: str) -> None:
    pods, nodes = frames(
        [pod_minute("p", "n", P5, 1.0, ts(10, m), 60) for m in range(5)],
        [node_minute("n", P5, 1, ts(10, m), idle=0.0) for m in range(5)],
    )
    costs = cost_rows(pods, nodes, _price_change(unit)).sort_values("minute")
    assert costs["cost_usd"].tolist() == pytest.approx([1 / 60] * 3 + [2 / 60] * 2, rel=1e-12)
    assert costs["cost_usd"].sum() == pytest.approx(7 / 60, rel=1e-12)


@pytest.mark.parametrize("unit", ["ns", "us", "python"])
def test_missing_price_before_the_first_point(unit: str) -> None:
    usage = pd.DataFrame([{**P5, "minute": ts(9, 59), "seconds": 60}])
    with pytest.raises(MissingPriceError):
        _attach_prices(usage, price_points((P5, 1.0, 1.0, ts(10, 0)), unit=unit))


def test_missing_price_for_an_unpriced_key() -> None:
    usage = pd.DataFrame([{**P5, "minute": T10}, {**P4D, "minute": T10}])
    with pytest.raises(MissingPriceError, match="1 usage rows have no price") as error:
        _attach_prices(usage, price_points((P5, 1.0, 1.0, ts(9, 0))))
    assert "p4d.24xlarge" in str(error.value)


def test_cost_rows_raise_without_prices_for_idle_node() -> None:
    pods, nodes = frames(
        [pod_minute("p", "n", P5, 1.0, T10, 60)],
        [node_minute("n", P5, 2, T10, idle=1.0), node_minute("m", P4D, 1, T10, idle=1.0)],
    )
    with pytest.raises(MissingPriceError):
        cost_rows(pods, nodes, price_points((P5, 1.0, 1.0, ts(9, 0))))


def test_many_distinct_keys_are_priced() -> None:
    n = 30
    keys = [{column: f"{column}-{i}" for column in PRICE_KEY} for i in range(n)]
    usage = pd.DataFrame([{**key, "minute": T10} for key in keys])
    prices = price_points(*[(key, float(i), float(i), ts(9, 0)) for i, key in enumerate(keys)])
    attached = _attach_prices(usage, prices)
    assert attached["price_per_gpu_hour"].tolist() == [float(i) for i in range(n)]


def test_node_balance_error_measures_the_gap() -> None:
    pods, nodes = frames(
        [pod_minute("train", "h100", P5, 4.0, T10, 60)],
        [node_minute("h100", P5, 8, T10, idle=4.0)],
    )
    prices = price_points((P5, 6.88, 6.88, ts(9, 0)))
    costs = cost_rows(pods, nodes, prices)
    assert node_balance_error(costs, nodes, prices) < 1e-12
    # without the idle row, pods are half of the node's 8 × 6.88 / 60 = 0.91733…
    assert node_balance_error(costs[~costs["is_idle"]], nodes, prices) == pytest.approx(0.5)
    # a node-minute with no cost rows at all is a 100 % gap
    empty = costs.iloc[0:0]
    assert node_balance_error(empty, nodes, prices) == pytest.approx(1.0)
    assert node_balance_error(empty, nodes.iloc[0:0], prices) == 0.0


def test_attach_attributes_looks_up_pods_and_node_keys() -> None:
    pod_minutes = pd.DataFrame(
        {
            "minute": [T10, T10, ts(10, 1)],
            "pod_uid": ["u1", "u2", "u1"],
            "node": ["n1", "n2", "n1"],
            "gpu_share": [1.0, 0.5, 1.0],
            "seconds": [60, 30, 60],
        }
    )
    pods = pd.DataFrame(
        [
            {
                "pod_uid": "u1",
                "namespace": "ml",
                "team": "nlp",
                "project": "llm",
                "experiment_id": "e1",
                "cost_center": "cc",
                "sharing_mode": "exclusive",
            },
            {
                "pod_uid": "u1",  # duplicates: the first wins
                "namespace": "other",
                "team": "other",
                "project": "",
                "experiment_id": "",
                "cost_center": "",
                "sharing_mode": "mig",
            },
        ]
    )
    node_minutes = pd.DataFrame(
        [node_minute("n1", P5, 8, T10, 0.0), node_minute("n2", P4D, 8, T10, 0.0)]
    )
    out = attach_attributes(pod_minutes, pods, node_minutes)
    assert len(out) == 3
    rows = out.to_dict("records")
    assert (rows[0]["team"], rows[0]["namespace"], rows[0]["instance_type"]) == (
        "nlp",
        "ml",
        "p5.48xlarge",
    )
    assert rows[2]["team"] == "nlp"
    # u2 is not in the pods table: blank attribution, still priced by its node
    assert (rows[1]["team"], rows[1]["namespace"], rows[1]["gpu_model"]) == ("", "", "A100-40GB")
    assert rows[1]["gpu_share"] == 0.5
    assert set(PRICE_KEY) <= set(out.columns)


def test_attach_attributes_rejects_pods_on_nodes_without_usage() -> None:
    pod_minutes = pd.DataFrame(
        {"minute": [T10], "pod_uid": ["u1"], "node": ["ghost"], "gpu_share": [1.0], "seconds": [60]}
    )
    pods = pd.DataFrame(
        columns=[
            "pod_uid",
            "namespace",
            "team",
            "project",
            "experiment_id",
            "cost_center",
            "sharing_mode",
        ]
    )
    node_minutes = pd.DataFrame([node_minute("n1", P5, 8, T10, 0.0)])
    with pytest.raises(ValueError, match="ghost"):
        attach_attributes(pod_minutes, pods, node_minutes)


def test_cost_rows_costs_are_finite() -> None:
    pods, nodes = frames(
        [pod_minute("p", "n", P5, 0.5, T10, 17)], [node_minute("n", P5, 1, T10, idle=0.8583333)]
    )
    costs = cost_rows(pods, nodes, price_points((P5, 6.88, 6.88, ts(9, 0))))
    for column in ("cost_usd", "on_demand_cost_usd", "exclusive_cost_usd", "gpu_hours"):
        assert np.isfinite(costs[column]).all()
    assert by_uid(costs)["p"]["cost_usd"] == pytest.approx(6.88 * 0.5 * 17 / 3600, rel=1e-12)


def test_cost_problems_counts_negative_and_duplicate_rows() -> None:
    frame = pd.DataFrame(
        {
            "pod_uid": ["a", "a", "b", "c"],
            "minute": [T10, T10, T10, T10],
            "cost_usd": [1.0, 1.0, -0.5, 0.0],
            "on_demand_cost_usd": [1.0, 1.0, 1.0, -1e-12],
            "exclusive_cost_usd": [1.0, 1.0, 1.0, 0.0],
        }
    )
    assert cost_problems(frame) == {"negative_cost_rows": 2, "duplicate_pod_minutes": 1}
