"""Property tests of what the product promises, over random nodes, pods and windows:

(a) no negative cost, on-demand cost or exclusive cost;
(b) per node-minute, pod rows + idle row = price × GPUs × seconds / 3600;
(c) per node-minute, pods hold at most the node's GPU-seconds;
(d) derive_window_usage is deterministic.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_cost_pipeline.core.costing import cost_rows, node_balance_error
from gpu_cost_pipeline.core.pricing import PRICE_KEY, EstimateSettings, estimate_prices
from gpu_cost_pipeline.core.usage import UsageSettings, expand_to_minutes
from gpu_cost_pipeline.core.window_usage import derive_window_usage

GPU = "nvidia.com/gpu"
DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
USAGE_SETTINGS = UsageSettings(cluster="prop")
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
MIG_MIXED_RESOURCES = (
    GPU,
    "nvidia.com/mig-1g.5gb",
    "nvidia.com/mig-2g.10gb",
    "nvidia.com/mig-3g.20gb",
)


@dataclass(frozen=True)
class NodeSpec:
    kind: str  # whole | time-slicing | mig-mixed | mig-single
    gpus: int
    replicas: int
    spot: bool
    count_label: bool


@dataclass(frozen=True)
class Scenario:
    window_start: datetime
    window_end: datetime
    nodes: list[NodeSpec]
    pods: list[tuple[int, str, int, int, int]]  # node index, resource, amount, start_s, end_s


node_specs = st.builds(
    NodeSpec,
    kind=st.sampled_from(["whole", "time-slicing", "mig-mixed", "mig-single"]),
    gpus=st.integers(1, 8),
    replicas=st.integers(1, 8),
    spot=st.booleans(),
    count_label=st.booleans(),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    start_s = int(DAY0.timestamp()) + draw(st.integers(0, 86_400))
    length_s = draw(st.one_of(st.integers(1, 600), st.sampled_from([60, 120, 300, 600])))
    nodes = draw(st.lists(node_specs, min_size=1, max_size=4))
    pods = []
    for _ in range(draw(st.integers(0, 14))):
        index = draw(st.integers(0, len(nodes) - 1))
        kind = nodes[index].kind
        resource = draw(st.sampled_from(MIG_MIXED_RESOURCES)) if kind == "mig-mixed" else GPU
        amount = draw(st.integers(1, 4))
        pod_start = start_s + draw(st.integers(-150, length_s + 150))
        pod_end = pod_start + draw(st.integers(0, length_s + 300))
        pods.append((index, resource, amount, pod_start, pod_end))
    return Scenario(
        datetime.fromtimestamp(start_s, UTC),
        datetime.fromtimestamp(start_s + length_s, UTC),
        nodes,
        pods,
    )


def node_object(index: int, spec: NodeSpec) -> dict:
    labels = {
        "karpenter.sh/capacity-type": "spot" if spec.spot else "on-demand",
        "topology.kubernetes.io/region": "us-east-1",
        "topology.kubernetes.io/zone": "us-east-1" + "ab"[index % 2],
    }
    if spec.kind == "whole":
        labels |= {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        labels["node.kubernetes.io/instance-type"] = "p5.48xlarge"
        capacity = {GPU: str(spec.gpus)}
    elif spec.kind == "time-slicing":
        labels |= {
            "nvidia.com/gpu.product": "NVIDIA-L4-SHARED" if spec.replicas > 1 else "NVIDIA-L4",
            "nvidia.com/gpu.sharing-strategy": "time-slicing",
            "nvidia.com/gpu.replicas": str(spec.replicas),
            "node.kubernetes.io/instance-type": "g6.xlarge",
        }
        capacity = {GPU: str(spec.gpus * spec.replicas)}
    elif spec.kind == "mig-mixed":
        labels |= {
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
            "nvidia.com/mig.strategy": "mixed",
            "node.kubernetes.io/instance-type": "p4d.24xlarge",
        }
        capacity = {GPU: str(spec.gpus), "nvidia.com/mig-1g.5gb": "7"}
    else:
        # No instance type: its catalog GPU count (8) would win over this node's own count.
        labels |= {
            "nvidia.com/gpu.product": "A100-SXM4-40GB-MIG-1g.5gb",
            "nvidia.com/mig.strategy": "single",
        }
        capacity = {GPU: str(7 * spec.gpus)}
    if spec.count_label or spec.kind == "mig-mixed":
        # GPU Feature Discovery counts MIG devices under the single strategy.
        devices = 7 * spec.gpus if spec.kind == "mig-single" else spec.gpus
        labels["nvidia.com/gpu.count"] = str(devices)
    return {
        "metadata": {"name": f"node-{index}", "labels": labels},
        "spec": {"providerID": f"aws:///us-east-1a/i-{index:04d}"},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def pod_object(index: int, node_index: int, resource: str, amount: int) -> dict:
    return {
        "metadata": {"name": f"pod-{index}", "namespace": "ns", "uid": f"uid-{index}"},
        "spec": {
            "nodeName": f"node-{node_index}",
            "containers": [{"name": "c", "resources": {"limits": {resource: str(amount)}}}],
        },
    }


def objects(scenario: Scenario) -> tuple[list[dict], list[dict], np.ndarray, np.ndarray]:
    nodes = [node_object(i, spec) for i, spec in enumerate(scenario.nodes)]
    pods = [pod_object(i, n, r, a) for i, (n, r, a, _, _) in enumerate(scenario.pods)]
    starts = np.array([p[3] for p in scenario.pods], dtype=np.int64)
    ends = np.array([p[4] for p in scenario.pods], dtype=np.int64)
    return nodes, pods, starts, ends


def derive(scenario: Scenario):
    nodes, pods, starts, ends = objects(scenario)
    return derive_window_usage(
        nodes, pods, starts, ends, scenario.window_start, scenario.window_end, USAGE_SETTINGS
    )


def prices_for(node_usage: pd.DataFrame, window_start: datetime) -> pd.DataFrame:
    prices = estimate_prices(node_usage, window_start - timedelta(hours=1), EstimateSettings())
    prices["effective_at"] = prices["effective_at"].astype("datetime64[ns, UTC]")
    return prices


def minute_seconds(window_start: datetime, window_end: datetime) -> dict[pd.Timestamp, int]:
    """Seconds of each minute inside the window, computed without the code under test."""
    ws, we = int(window_start.timestamp()), int(window_end.timestamp())
    out = {}
    for m in range(ws // 60 * 60, we, 60):
        seconds = min(we, m + 60) - max(ws, m)
        if seconds > 0:
            out[pd.Timestamp(m, unit="s", tz="UTC")] = seconds
    return out


@PROPERTY_SETTINGS
@given(scenarios())
def test_costs_are_non_negative_and_balance_per_node_minute(scenario: Scenario) -> None:
    usage = derive(scenario)
    prices = prices_for(usage.nodes, scenario.window_start)
    costs = cost_rows(usage.pods, usage.nodes, prices)

    # (a) nothing negative
    for column in ("cost_usd", "on_demand_cost_usd", "exclusive_cost_usd", "gpu_hours"):
        assert (costs[column] >= 0).all(), column

    # (b) via the product's own check
    assert node_balance_error(costs, usage.nodes, prices) <= 1e-9

    # (b) recomputed independently: every node is present every minute of the window with its
    # configured GPU count; the price is looked up by key in the price table.
    price_by_key = {
        tuple(row[c] for c in PRICE_KEY): row["price_per_gpu_hour"]
        for row in prices.to_dict("records")
    }
    seconds_by_minute = minute_seconds(scenario.window_start, scenario.window_end)
    node_keys = usage.nodes.drop_duplicates("node").set_index("node")
    actual = costs.groupby(["node", "minute"])["cost_usd"].sum()
    for index, spec in enumerate(scenario.nodes):
        node = f"node-{index}"
        assert int(node_keys.loc[node, "gpu_count"]) == spec.gpus
        price = price_by_key[tuple(node_keys.loc[node, c] for c in PRICE_KEY)]
        for minute, seconds in seconds_by_minute.items():
            expected = price * spec.gpus * seconds / 3600
            got = actual.get((node, minute), 0.0)
            assert abs(got - expected) <= 1e-9 * expected, (node, minute, got, expected)
        window_seconds = (scenario.window_end - scenario.window_start).total_seconds()
        node_total = costs.loc[costs["node"] == node, "cost_usd"].sum()
        expected_total = price * spec.gpus * window_seconds / 3600
        assert abs(node_total - expected_total) <= 1e-9 * expected_total


@PROPERTY_SETTINGS
@given(scenarios())
def test_pods_hold_at_most_the_node(scenario: Scenario) -> None:
    usage = derive(scenario)
    seconds_by_minute = minute_seconds(scenario.window_start, scenario.window_end)
    held = (
        (usage.pods["gpu_share"] * usage.pods["seconds"])
        .groupby([usage.pods["node"], usage.pods["minute"]])
        .sum()
    )
    for (node, minute), gpu_seconds in held.items():
        gpus = scenario.nodes[int(node.removeprefix("node-"))].gpus
        # (c)
        assert gpu_seconds <= gpus * seconds_by_minute[minute] + 1e-9, (node, minute)
    assert (usage.nodes["idle_gpus"] >= 0).all()
    assert (usage.nodes["gpus_held"] <= usage.nodes["gpu_count"] + 1e-9).all()
    # every pod was valid, so each is kept with exactly its overlap with the window
    ws, we = int(scenario.window_start.timestamp()), int(scenario.window_end.timestamp())
    seconds_by_pod = usage.pods.groupby("pod_uid")["seconds"].sum()
    for index, (*_, start, end) in enumerate(scenario.pods):
        overlap = max(0, min(end, we) - max(start, ws))
        assert int(seconds_by_pod.get(f"uid-{index}", 0)) == overlap


@PROPERTY_SETTINGS
@given(scenarios())
def test_derive_window_usage_is_deterministic(scenario: Scenario) -> None:
    nodes, pods, starts, ends = objects(scenario)
    runs = [
        derive_window_usage(
            copy.deepcopy(nodes),
            copy.deepcopy(pods),
            starts.copy(),
            ends.copy(),
            scenario.window_start,
            scenario.window_end,
            USAGE_SETTINGS,
        )
        for _ in range(2)
    ]
    # (d)
    pd.testing.assert_frame_equal(runs[0].pods, runs[1].pods)
    pd.testing.assert_frame_equal(runs[0].nodes, runs[1].nodes)
    assert runs[0].issues == runs[1].issues


@settings(max_examples=100, deadline=None)
@given(
    window_start=st.integers(0, 10_000),
    window_length=st.integers(0, 900),
    intervals=st.lists(st.tuples(st.integers(-300, 1_500), st.integers(-300, 1_500)), max_size=8),
)
def test_expand_to_minutes_splits_intervals_exactly(
    window_start: int, window_length: int, intervals: list[tuple[int, int]]
) -> None:
    base = int(DAY0.timestamp())
    ws, we = base + window_start, base + window_start + window_length
    frame = pd.DataFrame({"row": range(len(intervals))})
    starts = np.array([base + s for s, _ in intervals], dtype=np.int64)
    ends = np.array([base + e for _, e in intervals], dtype=np.int64)
    out = expand_to_minutes(
        frame, starts, ends, datetime.fromtimestamp(ws, UTC), datetime.fromtimestamp(we, UTC)
    )
    assert len(out) == len(out.drop_duplicates(["row", "minute"]))
    assert ((out["seconds"] >= 1) & (out["seconds"] <= 60)).all()
    minute_s = out["minute"].astype("datetime64[s, UTC]").astype("int64")
    assert (minute_s % 60 == 0).all()
    assert ((minute_s + 60 > ws) & (minute_s < we)).all()
    totals = out.groupby("row")["seconds"].sum()
    for row, (start, end) in enumerate(intervals):
        overlap = max(0, min(base + end, we) - max(base + start, ws))
        assert int(totals.get(row, 0)) == overlap
