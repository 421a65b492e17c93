"""derive_window_usage: pod and node minutes, held and idle GPUs, oversubscription; pod_attributes."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from gpu_cost_pipeline.core.usage import UsageSettings
from gpu_cost_pipeline.core.window_usage import (
    NODE_USAGE_COLUMNS,
    POD_USAGE_COLUMNS,
    derive_window_usage,
    pod_attributes,
)

SETTINGS = UsageSettings(cluster="prod")
GPU = "nvidia.com/gpu"
W_START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
BASE = int(W_START.timestamp())


def minute(m: int) -> pd.Timestamp:
    return pd.Timestamp(datetime(2026, 3, 1, 10, m, tzinfo=UTC))


def window_end(minutes: int) -> datetime:
    return datetime(2026, 3, 1, 10, minutes, tzinfo=UTC)


def node(name: str, gpus: int, **labels: str) -> dict:
    return {
        "metadata": {
            "name": name,
            "labels": {
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.count": str(gpus),
                "node.kubernetes.io/instance-type": "p5.48xlarge",
                "karpenter.sh/capacity-type": "spot",
                "topology.kubernetes.io/region": "us-east-1",
                "topology.kubernetes.io/zone": "us-east-1a",
                **labels,
            },
        },
        "spec": {"providerID": f"aws:///us-east-1a/i-{name}"},
        "status": {"capacity": {GPU: str(gpus)}},
    }


def pod(name: str, node_name: str, gpus: str = "1", team: str | None = None) -> dict:
    labels = {"team": team} if team else {}
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "labels": labels},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "c", "resources": {"requests": {GPU: gpus}}}],
        },
    }


def derive(nodes, pods, intervals, minutes=3):
    start = np.array([BASE + s for s, _ in intervals], dtype=np.int64)
    end = np.array([BASE + e for _, e in intervals], dtype=np.int64)
    return derive_window_usage(nodes, pods, start, end, W_START, window_end(minutes), SETTINGS)


def test_node_minutes_held_and_idle() -> None:
    # 2-GPU node; a: 10:00:00-10:01:30, b: 10:00:30-10:03:00 (1 GPU each)
    usage = derive(
        [node("n1", 2)],
        [pod("a", "n1"), pod("b", "n1")],
        [(0, 90), (30, 180)],
    )
    assert usage.issues == []
    assert list(usage.nodes.columns) == NODE_USAGE_COLUMNS
    assert list(usage.pods.columns) == POD_USAGE_COLUMNS
    nodes = usage.nodes.sort_values("minute").reset_index(drop=True)
    assert [pd.Timestamp(m) for m in nodes["minute"]] == [minute(0), minute(1), minute(2)]
    assert nodes["seconds"].tolist() == [60, 60, 60]
    assert nodes["gpu_count"].tolist() == [2, 2, 2]
    # 10:00 a 60 s + b 30 s = 90 GPU-s → 1.5 held; 10:01 a 30 + b 60 → 1.5; 10:02 b 60 → 1
    assert nodes["gpus_held"].tolist() == pytest.approx([1.5, 1.5, 1.0])
    assert nodes["idle_gpus"].tolist() == pytest.approx([0.5, 0.5, 1.0])
    assert set(nodes["cluster"]) == {"prod"}
    first = nodes.iloc[0]
    assert (first["gpu_model"], first["capacity_type"], first["provider"]) == (
        "H100-80GB",
        "spot",
        "aws",
    )
    assert (first["region"], first["zone"], first["instance_type"]) == (
        "us-east-1",
        "us-east-1a",
        "p5.48xlarge",
    )

    pods = usage.pods.sort_values(["pod", "minute"])
    got = [(r.pod, pd.Timestamp(r.minute), r.seconds) for r in pods.itertuples()]
    assert got == [
        ("a", minute(0), 60),
        ("a", minute(1), 30),
        ("b", minute(0), 30),
        ("b", minute(1), 60),
        ("b", minute(2), 60),
    ]
    # node attributes were joined onto pod rows
    assert set(usage.pods["gpu_model"]) == {"H100-80GB"}
    assert set(usage.pods["capacity_type"]) == {"spot"}
    assert set(usage.pods["zone"]) == {"us-east-1a"}
    assert set(usage.pods["cluster"]) == {"prod"}


def test_empty_node_is_all_idle_and_pods_outside_the_window_vanish() -> None:
    usage = derive(
        [node("busy", 1), node("empty", 4)],
        [pod("before", "busy"), pod("after", "busy")],
        [(-300, -10), (180, 400)],
    )
    assert usage.pods.empty
    empty = usage.nodes[usage.nodes["node"] == "empty"]
    assert len(empty) == 3
    assert empty["gpus_held"].tolist() == [0.0, 0.0, 0.0]
    assert empty["idle_gpus"].tolist() == [4.0, 4.0, 4.0]


def test_partial_minute_window() -> None:
    # window 10:00:30 - 10:02:00: node minutes 10:00 (30 s) and 10:01 (60 s)
    usage = derive_window_usage(
        [node("n1", 1)],
        [pod("a", "n1")],
        np.array([BASE], dtype=np.int64),
        np.array([BASE + 600], dtype=np.int64),
        datetime(2026, 3, 1, 10, 0, 30, tzinfo=UTC),
        window_end(2),
        SETTINGS,
    )
    nodes = usage.nodes.sort_values("minute")
    assert nodes["seconds"].tolist() == [30, 60]
    assert nodes["gpus_held"].tolist() == [1.0, 1.0]
    assert nodes["idle_gpus"].tolist() == [0.0, 0.0]
    assert usage.pods.sort_values("minute")["seconds"].tolist() == [30, 60]


def test_oversubscription_scales_shares_and_reports_the_node() -> None:
    # 3 pods each asking 1 GPU of a 1-GPU node for the whole minute 10:00; 1 pod in 10:01.
    usage = derive(
        [node("small", 1)],
        [pod("a", "small"), pod("b", "small"), pod("c", "small")],
        [(0, 120), (0, 60), (0, 60)],
        minutes=2,
    )
    nodes = usage.nodes.sort_values("minute").reset_index(drop=True)
    assert nodes["gpus_held"].tolist() == pytest.approx([1.0, 1.0])
    assert nodes["idle_gpus"].tolist() == pytest.approx([0.0, 0.0])
    first = usage.pods[usage.pods["minute"] == minute(0)]
    assert first["gpu_share"].tolist() == pytest.approx([1 / 3] * 3)
    second = usage.pods[usage.pods["minute"] == minute(1)]
    assert second["gpu_share"].tolist() == [1.0]  # not oversubscribed: untouched
    over = [i for i in usage.issues if i.field == "spec.containers[*].resources (of its pods)"]
    assert [(i.kind, i.name) for i in over] == [("Node", "small")]
    # per node-minute the held GPU-seconds now equal the node's exactly
    held = (usage.pods["gpu_share"] * usage.pods["seconds"]).groupby(usage.pods["minute"]).sum()
    assert held.tolist() == pytest.approx([60.0, 60.0], rel=1e-12)


def test_parse_issues_are_passed_through_and_good_pods_kept() -> None:
    bad = pod("bad", "n1", gpus="abc")
    lost = pod("lost", "nowhere")
    usage = derive(
        [node("n1", 2)],
        [pod("a", "n1"), bad, lost, pod("d", "n1")],
        [(0, 60), (0, 60), (0, 60), (60, 120)],
    )
    assert sorted(set(usage.pods["pod"])) == ["a", "d"]
    # pod d's interval (index 3 of the input) lines up although b and c were dropped
    d_rows = usage.pods[usage.pods["pod"] == "d"]
    assert [pd.Timestamp(m) for m in d_rows["minute"]] == [minute(1)]
    assert [(i.name, i.field) for i in usage.issues] == [
        ("ml/bad", "spec.containers[0].resources.requests['nvidia.com/gpu']"),
        ("ml/lost", "spec.nodeName"),
    ]


def test_pod_attributes_one_row_per_pod() -> None:
    usage = derive(
        [node("n1", 2)],
        [pod("a", "n1", team="nlp"), pod("b", "n1")],
        [(20, 150), (120, 180)],
    )
    attributes = pod_attributes(usage.pods).set_index("pod_uid")
    assert sorted(attributes.index) == ["uid-a", "uid-b"]
    assert pd.Timestamp(attributes.loc["uid-a", "first_seen"]) == minute(0)
    assert pd.Timestamp(attributes.loc["uid-a", "last_seen"]) == minute(2)
    assert pd.Timestamp(attributes.loc["uid-b", "first_seen"]) == minute(2)
    assert pd.Timestamp(attributes.loc["uid-b", "last_seen"]) == minute(2)
    assert attributes.loc["uid-a", "team"] == "nlp"
    assert attributes.loc["uid-b", "team"] == ""
    assert attributes.loc["uid-a", "namespace"] == "ml"
    assert attributes.loc["uid-a", "gpu_requested"] == 1


def test_pod_attributes_of_nothing() -> None:
    usage = derive([node("n1", 1)], [], [])
    assert usage.pods.empty
    attributes = pod_attributes(usage.pods)
    assert attributes.empty
    assert {"pod_uid", "first_seen", "last_seen", "team"} <= set(attributes.columns)


def test_deterministic() -> None:
    nodes = [node("n1", 2), node("n2", 1)]
    pods = [pod("a", "n1"), pod("b", "n2", gpus="2"), pod("c", "n1")]
    intervals = [(5, 170), (0, 60), (61, 119)]
    first, second = derive(nodes, pods, intervals), derive(nodes, pods, intervals)
    pd.testing.assert_frame_equal(first.pods, second.pods)
    pd.testing.assert_frame_equal(first.nodes, second.nodes)
    assert first.issues == second.issues


def test_a_node_counts_from_its_creation_and_pods_on_it_too() -> None:
    """A live listing can include a node created inside (or after) the window."""
    young = node("young", 2)
    young["metadata"]["creationTimestamp"] = "2026-03-01T10:01:30Z"
    usage = derive([young], [pod("a", "young")], [(10, 180)])
    nodes = usage.nodes.set_index("minute")
    assert nodes["seconds"].to_dict() == {minute(1): 30, minute(2): 60}
    pods = usage.pods.set_index("minute")
    assert pods["seconds"].to_dict() == {minute(1): 30, minute(2): 60}
    assert (usage.nodes["idle_gpus"] == 1.0).all()
