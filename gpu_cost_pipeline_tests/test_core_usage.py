"""parse_nodes / parse_pods on Kubernetes-shaped objects, and expand_to_minutes."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from gpu_cost_pipeline.core.sharing import MigConvention, MigProfile
from gpu_cost_pipeline.core.usage import (
    POD_COLUMNS,
    ParsedNodes,
    UsageSettings,
    capacity_type_of,
    expand_to_minutes,
    parse_nodes,
    parse_pods,
    pod_gpu_amounts,
    provider_of,
)

SETTINGS = UsageSettings(cluster="test")
GPU = "nvidia.com/gpu"
REQUEST_FIELD = "spec.containers[0].resources.requests['nvidia.com/gpu']"


def make_node(
    name: str,
    labels: dict[str, str] | None = None,
    capacity: dict[str, str] | None = None,
    provider_id: str | None = None,
) -> dict:
    node: dict = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": dict(labels or {})},
        "spec": {},
        "status": {
            "capacity": {"cpu": "8", "memory": "64Gi", **(capacity or {})},
            "allocatable": {"cpu": "7", "memory": "60Gi", **(capacity or {})},
        },
    }
    if provider_id is not None:
        node["spec"]["providerID"] = provider_id
    return node


def h100_node(name: str = "gpu-1", count: int = 8, **labels: str) -> dict:
    return make_node(
        name,
        {
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.count": str(count),
            "node.kubernetes.io/instance-type": "p5.48xlarge",
            **labels,
        },
        {GPU: str(count)},
    )


def make_pod(
    name: str,
    node: str | None = "gpu-1",
    requests: dict[str, object] | None = None,
    limits: dict[str, object] | None = None,
    namespace: str | None = "ml",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[dict] | None = None,
    init_containers: list[dict] | None = None,
    uid: str | None = "auto",
) -> dict:
    metadata: dict = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if uid is not None:
        metadata["uid"] = f"uid-{name}" if uid == "auto" else uid
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    if containers is None:
        resources: dict = {}
        if requests is not None:
            resources["requests"] = requests
        if limits is not None:
            resources["limits"] = limits
        containers = [{"name": "main", "image": "busybox", "resources": resources}]
    spec: dict = {"containers": containers}
    if init_containers is not None:
        spec["initContainers"] = init_containers
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": {"phase": "Running"},
    }


def container(requests: dict | None = None, limits: dict | None = None) -> dict:
    resources: dict = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": "c", "image": "busybox", "resources": resources}


def node_row(parsed: ParsedNodes, name: str) -> dict:
    rows = parsed.frame[parsed.frame["node"] == name].to_dict("records")
    assert len(rows) == 1, rows
    return rows[0]


# --- capacity type and provider ------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"karpenter.sh/capacity-type": "spot"}, "spot"),
        ({"karpenter.sh/capacity-type": "on-demand"}, "on-demand"),
        ({"karpenter.sh/capacity-type": "reserved"}, "reserved"),
        ({"eks.amazonaws.com/capacityType": "SPOT"}, "spot"),
        ({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, "on-demand"),
        ({"cloud.google.com/gke-spot": "true"}, "spot"),
        ({"cloud.google.com/gke-preemptible": "true"}, "spot"),
        ({"cloud.google.com/gke-spot": "false"}, "on-demand"),
        ({"kubernetes.azure.com/scalesetpriority": "spot"}, "spot"),
        ({"kubernetes.azure.com/scalesetpriority": "regular"}, "on-demand"),
        ({"lifecycle": "EC2Spot"}, "spot"),
        ({}, "on-demand"),
    ],
)
def test_capacity_type_label_conventions(labels: dict[str, str], expected: str) -> None:
    assert capacity_type_of(labels) == expected
    node = h100_node()
    node["metadata"]["labels"].update(labels)
    assert node_row(parse_nodes([node], SETTINGS), "gpu-1")["capacity_type"] == expected


@pytest.mark.parametrize(
    ("provider_id", "labels", "expected"),
    [
        ("aws:///us-east-1a/i-0123456789abcdef0", {}, "aws"),
        ("gce://my-project/us-central1-a/gke-pool-1-abcd", {}, "gcp"),
        (
            "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/"
            "virtualMachineScaleSets/vmss/virtualMachines/0",
            {},
            "azure",
        ),
        ("", {"cloud.google.com/gke-nodepool": "gpu"}, "gcp"),
        ("", {"kubernetes.azure.com/agentpool": "gpu"}, "azure"),
        ("", {"eks.amazonaws.com/nodegroup": "gpu"}, "aws"),
        ("", {"node.kubernetes.io/instance-type": "a2-highgpu-1g"}, "gcp"),
        ("", {}, "oracle"),  # the settings' default
        ("kind://docker/kind/kind-worker", {}, "oracle"),
    ],
)
def test_provider(provider_id: str, labels: dict[str, str], expected: str) -> None:
    assert provider_of(provider_id, labels, "oracle") == expected
    node = make_node(
        "n",
        {"nvidia.com/gpu.product": "Tesla-T4", **labels},
        {GPU: "1"},
        provider_id=provider_id or None,
    )
    parsed = parse_nodes([node], UsageSettings(cluster="c", default_provider="oracle"))
    assert node_row(parsed, "n")["provider"] == expected


# --- parse_nodes ----------------------------------------------------------------------------


def test_parse_whole_gpu_node() -> None:
    node = h100_node(
        "gpu-1",
        **{
            "topology.kubernetes.io/region": "us-east-1",
            "topology.kubernetes.io/zone": "us-east-1b",
            "karpenter.sh/capacity-type": "spot",
        },
    )
    node["spec"]["providerID"] = "aws:///us-east-1b/i-1"
    parsed = parse_nodes([node], SETTINGS)
    assert parsed.issues == []
    assert node_row(parsed, "gpu-1") == {
        "node": "gpu-1",
        "gpu_model": "H100-80GB",
        "gpu_count": 8,
        "sharing_mode": "exclusive",
        "capacity_type": "spot",
        "instance_type": "p5.48xlarge",
        "provider": "aws",
        "region": "us-east-1",
        "zone": "us-east-1b",
    }
    assert parsed.sharing["gpu-1"].gpu_count == 8
    assert parsed.sharing["gpu-1"].gpu_memory_gb == 80
    assert parsed.frame["gpu_count"].dtype == np.int64


def test_region_defaults_from_settings() -> None:
    node = make_node("n", {"nvidia.com/gpu.product": "Tesla-T4"}, {GPU: "1"})
    parsed = parse_nodes([node], UsageSettings(cluster="c", default_region="eu-west-1"))
    row = node_row(parsed, "n")
    assert row["region"] == "eu-west-1"
    assert row["zone"] == ""
    assert row["instance_type"] == ""


def test_gpu_count_label_wins_over_capacity() -> None:
    node = make_node(
        "n", {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.count": "2"}, {GPU: "7"}
    )
    assert node_row(parse_nodes([node], SETTINGS), "n")["gpu_count"] == 2


def test_gpu_count_from_capacity_without_label() -> None:
    node = make_node("n", {"nvidia.com/gpu.product": "Tesla-T4"}, {GPU: "4"})
    assert node_row(parse_nodes([node], SETTINGS), "n")["gpu_count"] == 4


def test_time_sliced_capacity_divided_by_replicas() -> None:
    node = make_node(
        "ts",
        {
            "nvidia.com/gpu.product": "NVIDIA-L4-SHARED",
            "nvidia.com/gpu.sharing-strategy": "time-slicing",
            "nvidia.com/gpu.replicas": "4",
        },
        {GPU: "4"},
    )
    parsed = parse_nodes([node], SETTINGS)
    row = node_row(parsed, "ts")
    assert row["gpu_count"] == 1
    assert row["gpu_model"] == "L4"
    assert row["sharing_mode"] == "time-slicing"
    assert parsed.sharing["ts"].replicas == 4
    pods, _, issues = parse_pods([make_pod("p", node="ts", requests={GPU: "1"})], parsed, SETTINGS)
    assert issues == []
    assert pods.loc[0, "gpu_share"] == 0.25
    assert pods.loc[0, "sharing_mode"] == "time-slicing"


def test_mps_node_with_shared_resource() -> None:
    node = make_node(
        "mps",
        {
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-SHARED",
            "nvidia.com/gpu.sharing-strategy": "mps",
            "nvidia.com/gpu.replicas": "4",
        },
        {"nvidia.com/gpu.shared": "8"},
    )
    parsed = parse_nodes([node], SETTINGS)
    row = node_row(parsed, "mps")
    assert row["gpu_count"] == 2
    assert row["sharing_mode"] == "mps"
    pods, _, _ = parse_pods(
        [make_pod("p", node="mps", requests={"nvidia.com/gpu.shared": "1"})], parsed, SETTINGS
    )
    assert pods.loc[0, "gpu_share"] == 0.25
    assert pods.loc[0, "sharing_mode"] == "mps"


def test_mig_single_capacity_divided_by_slices_per_gpu() -> None:
    node = make_node(
        "mig",
        {
            "nvidia.com/gpu.product": "A100-SXM4-40GB-MIG-1g.5gb",
            "nvidia.com/mig.strategy": "single",
        },
        {GPU: "56"},
    )
    parsed = parse_nodes([node], SETTINGS)
    row = node_row(parsed, "mig")
    assert row["gpu_count"] == 8
    assert row["gpu_model"] == "A100-40GB"
    assert row["sharing_mode"] == "mig"
    assert parsed.sharing["mig"].mig_single_profile == MigProfile(1, 5)
    pods, _, _ = parse_pods([make_pod("p", node="mig", requests={GPU: "1"})], parsed, SETTINGS)
    assert pods.loc[0, "gpu_share"] == pytest.approx(1 / 7, rel=1e-12)
    assert pods.loc[0, "sharing_mode"] == "mig"


def test_mig_single_3g_40gb_on_80gb() -> None:
    node = make_node(
        "mig", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb"}, {GPU: "16"}
    )
    row = node_row(parse_nodes([node], SETTINGS), "mig")
    assert row["gpu_count"] == 8
    assert row["gpu_model"] == "A100-80GB"


def test_mig_mixed_node_counts_from_catalog_without_count_label() -> None:
    node = make_node(
        "mixed",
        {
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
            "nvidia.com/mig.strategy": "mixed",
            "node.kubernetes.io/instance-type": "p4d.24xlarge",
        },
        {GPU: "5", "nvidia.com/mig-1g.5gb": "7", "nvidia.com/mig-3g.20gb": "2"},
    )
    parsed = parse_nodes([node], SETTINGS)
    row = node_row(parsed, "mixed")
    assert row["gpu_count"] == 8
    assert row["sharing_mode"] == "mig"
    assert parsed.sharing["mixed"].mig_single_profile is None

    pods = [
        make_pod("slice", node="mixed", requests={"nvidia.com/mig-1g.5gb": "1"}),
        make_pod("big", node="mixed", requests={"nvidia.com/mig-3g.20gb": "1"}),
        make_pod("whole", node="mixed", requests={GPU: "1"}),
        make_pod("both", node="mixed", requests={GPU: "1", "nvidia.com/mig-1g.5gb": "1"}),
    ]
    frame, kept, issues = parse_pods(pods, parsed, SETTINGS)
    assert issues == []
    assert kept == [0, 1, 2, 3]
    by_pod = frame.set_index("pod")
    assert by_pod.loc["slice", "gpu_share"] == pytest.approx(1 / 7)
    assert by_pod.loc["slice", "gpu_resource"] == "nvidia.com/mig-1g.5gb"
    assert by_pod.loc["big", "gpu_share"] == pytest.approx(3 / 7)
    assert by_pod.loc["whole", "gpu_share"] == 1.0
    assert by_pod.loc["whole", "sharing_mode"] == "exclusive"
    assert by_pod.loc["both", "gpu_share"] == pytest.approx(8 / 7)
    assert by_pod.loc["both", "gpu_resource"] == "nvidia.com/gpu+nvidia.com/mig-1g.5gb"
    assert by_pod.loc["both", "sharing_mode"] == "exclusive+mig"
    assert by_pod.loc["both", "gpu_requested"] == 2

    memory = UsageSettings(cluster="c", mig_convention=MigConvention.MEMORY)
    frame, _, _ = parse_pods(pods[:2], parse_nodes([node], memory), memory)
    assert frame["gpu_share"].tolist() == pytest.approx([1 / 8, 0.5])


def test_node_without_gpus_is_skipped() -> None:
    parsed = parse_nodes([make_node("cpu-only", {"kubernetes.io/os": "linux"})], SETTINGS)
    assert parsed.frame.empty
    assert "cpu-only" not in parsed.sharing
    assert [(i.name, i.field, i.action) for i in parsed.issues] == [
        ("cpu-only", "status.capacity", "skipped")
    ]


def test_node_without_name_is_skipped() -> None:
    node = h100_node()
    del node["metadata"]["name"]
    parsed = parse_nodes([h100_node("ok"), node], SETTINGS)
    assert parsed.frame["node"].tolist() == ["ok"]
    assert [(i.kind, i.name, i.field) for i in parsed.issues] == [("Node", "#1", "metadata.name")]


def test_bad_gpu_count_label_defaults_from_capacity() -> None:
    node = make_node(
        "n", {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.count": "many"}, {GPU: "2"}
    )
    parsed = parse_nodes([node], SETTINGS)
    assert node_row(parsed, "n")["gpu_count"] == 2
    assert [i.field for i in parsed.issues] == ["metadata.labels['nvidia.com/gpu.count']"]


def test_bad_replicas_label_defaults_to_one() -> None:
    node = make_node(
        "n",
        {
            "nvidia.com/gpu.product": "NVIDIA-L4",
            "nvidia.com/gpu.sharing-strategy": "time-slicing",
            "nvidia.com/gpu.replicas": "0",
        },
        {GPU: "1"},
    )
    parsed = parse_nodes([node], SETTINGS)
    assert parsed.sharing["n"].replicas == 1
    assert node_row(parsed, "n")["sharing_mode"] == "exclusive"
    assert [(i.field, i.action) for i in parsed.issues] == [
        ("metadata.labels['nvidia.com/gpu.replicas']", "defaulted to 1")
    ]


def test_unknown_model_is_kept_and_reported() -> None:
    node = make_node(
        "rtx",
        {"nvidia.com/gpu.product": "NVIDIA-GH200-480GB"},
        {GPU: "1"},
    )
    parsed = parse_nodes([node], SETTINGS)
    assert node_row(parsed, "rtx")["gpu_model"] == "unknown"
    assert parsed.sharing["rtx"].gpu_memory_gb == 0
    assert len(parsed.issues) == 1
    assert parsed.issues[0].field == "metadata.labels['nvidia.com/gpu.product']"
    assert "unknown" in parsed.issues[0].action


def test_replicas_label_without_sharing_strategy_is_consistent() -> None:
    node = make_node(
        "old-gfd",
        {"nvidia.com/gpu.product": "Tesla-T4-SHARED", "nvidia.com/gpu.replicas": "4"},
        {GPU: "4"},
    )
    parsed = parse_nodes([node], SETTINGS)
    row = node_row(parsed, "old-gfd")
    assert row["gpu_count"] == 1
    pods, _, _ = parse_pods(
        [make_pod(f"p{i}", node="old-gfd", requests={GPU: "1"}) for i in range(4)],
        parsed,
        SETTINGS,
    )
    assert row["sharing_mode"] in {"exclusive", "mig", "time-slicing", "mps"}
    assert pods["gpu_share"].sum() <= row["gpu_count"]


# --- parse_pods -----------------------------------------------------------------------------


@pytest.fixture
def nodes() -> ParsedNodes:
    return parse_nodes([h100_node("gpu-1", count=8), h100_node("gpu-2", count=2)], SETTINGS)


def test_whole_gpu_pod_row(nodes: ParsedNodes) -> None:
    labels = {
        "team": "nlp",
        "project": "llm",
        "experiment-id": "exp-1",
        "cost-center": "research",
        "app": "trainer",
    }
    pod = make_pod(
        "train",
        requests={GPU: "2", "cpu": "4"},
        limits={GPU: "2"},
        labels=labels,
        annotations={"gpu-autoscaler.io/cost-limit": "250"},
    )
    frame, kept, issues = parse_pods([pod], nodes, SETTINGS)
    assert issues == []
    assert kept == [0]
    assert list(frame.columns) == POD_COLUMNS
    row = frame.iloc[0].to_dict()
    assert row == {
        "pod_uid": "uid-train",
        "namespace": "ml",
        "pod": "train",
        "node": "gpu-1",
        "gpu_resource": "nvidia.com/gpu",
        "gpu_requested": 2,
        "gpu_share": 2.0,
        "sharing_mode": "exclusive",
        "team": "nlp",
        "project": "llm",
        "experiment_id": "exp-1",
        "cost_center": "research",
        "labels": json.dumps(labels, sort_keys=True, separators=(",", ":")),
        "cost_limit_usd": 250.0,
    }
    assert json.loads(row["labels"]) == labels


def test_prefixed_attribution_labels(nodes: ParsedNodes) -> None:
    labels = {
        "gpu-autoscaler.io/team": "vision",
        "gpu-autoscaler.io/project": "detector",
        "gpu-autoscaler.io/experiment-id": "e7",
        "gpu-autoscaler.io/cost-center": "cc9",
    }
    frame, _, _ = parse_pods([make_pod("p", requests={GPU: "1"}, labels=labels)], nodes, SETTINGS)
    row = frame.iloc[0]
    assert (row["team"], row["project"], row["experiment_id"], row["cost_center"]) == (
        "vision",
        "detector",
        "e7",
        "cc9",
    )
    # the plain key wins over the prefixed one
    both = {**labels, "team": "nlp"}
    frame, _, _ = parse_pods([make_pod("q", requests={GPU: "1"}, labels=both)], nodes, SETTINGS)
    assert frame.iloc[0]["team"] == "nlp"


def test_missing_labels_and_namespace_are_defaults_not_issues(nodes: ParsedNodes) -> None:
    pod = make_pod("bare", requests={GPU: "1"}, namespace=None)
    frame, kept, issues = parse_pods([pod], nodes, SETTINGS)
    assert issues == []
    assert kept == [0]
    row = frame.iloc[0]
    assert row["namespace"] == "default"
    assert (row["team"], row["project"], row["experiment_id"], row["cost_center"]) == ("",) * 4
    assert row["labels"] == "{}"
    assert math.isnan(row["cost_limit_usd"])


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "500m", True])
def test_bad_request_quantity_skips_pod_and_names_the_field(
    nodes: ParsedNodes, bad: object
) -> None:
    pods = [
        make_pod("good-1", requests={GPU: "1"}),
        make_pod("bad", requests={GPU: bad}),
        make_pod("good-2", node="gpu-2", requests={GPU: "2"}),
    ]
    frame, kept, issues = parse_pods(pods, nodes, SETTINGS)
    assert frame["pod"].tolist() == ["good-1", "good-2"]
    assert kept == [0, 2]
    assert len(issues) == 1
    issue = issues[0]
    assert issue.kind == "Pod"
    assert issue.name == "ml/bad"
    assert issue.field == REQUEST_FIELD
    assert issue.action == "skipped"
    assert repr(bad) in issue.problem


def test_bad_quantity_in_other_containers_names_them(nodes: ParsedNodes) -> None:
    second = make_pod(
        "second",
        containers=[container(requests={GPU: "1"}), container(limits={GPU: "x"})],
    )
    init = make_pod(
        "init",
        requests={GPU: "1"},
        init_containers=[container(requests={"nvidia.com/mig-1g.5gb": "-2"})],
    )
    frame, kept, issues = parse_pods([second, init], nodes, SETTINGS)
    assert frame.empty
    assert kept == []
    assert [(i.name, i.field) for i in issues] == [
        ("ml/second", "spec.containers[1].resources.limits['nvidia.com/gpu']"),
        ("ml/init", "spec.initContainers[0].resources.requests['nvidia.com/mig-1g.5gb']"),
    ]


def test_bad_non_gpu_quantity_is_not_our_business(nodes: ParsedNodes) -> None:
    pod = make_pod("p", requests={GPU: "1", "cpu": "lots"})
    frame, _, issues = parse_pods([pod], nodes, SETTINGS)
    assert issues == []
    assert frame["pod"].tolist() == ["p"]


def test_pod_on_unlisted_node_is_skipped(nodes: ParsedNodes) -> None:
    pods = [
        make_pod("elsewhere", node="cpu-node", requests={GPU: "1"}),
        make_pod("pending", node=None, requests={GPU: "1"}),
        make_pod("ok", requests={GPU: "1"}),
    ]
    frame, kept, issues = parse_pods(pods, nodes, SETTINGS)
    assert frame["pod"].tolist() == ["ok"]
    assert kept == [2]
    assert [(i.name, i.field, i.action) for i in issues] == [
        ("ml/elsewhere", "spec.nodeName", "skipped"),
        ("ml/pending", "spec.nodeName", "skipped"),
    ]
    assert "cpu-node" in issues[0].problem


def test_pod_without_uid_is_skipped(nodes: ParsedNodes) -> None:
    frame, _, issues = parse_pods([make_pod("p", requests={GPU: "1"}, uid=None)], nodes, SETTINGS)
    assert frame.empty
    assert [(i.name, i.field) for i in issues] == [("ml/p", "metadata.uid")]


def test_non_gpu_pod_is_ignored_silently(nodes: ParsedNodes) -> None:
    pods = [make_pod("web", requests={"cpu": "1"}), make_pod("zero", requests={GPU: "0"})]
    frame, kept, issues = parse_pods(pods, nodes, SETTINGS)
    assert frame.empty
    assert kept == []
    assert issues == []
    assert list(frame.columns) == POD_COLUMNS


@pytest.mark.parametrize("bad", ["abc", "-5", "inf", "nan"])
def test_bad_cost_limit_is_ignored_with_an_issue(nodes: ParsedNodes, bad: str) -> None:
    pod = make_pod("p", requests={GPU: "1"}, annotations={"gpu-autoscaler.io/cost-limit": bad})
    frame, kept, issues = parse_pods([pod], nodes, SETTINGS)
    assert kept == [0]
    assert math.isnan(frame.loc[0, "cost_limit_usd"])
    assert [(i.name, i.field, i.action) for i in issues] == [
        ("ml/p", "metadata.annotations['gpu-autoscaler.io/cost-limit']", "ignored")
    ]


def test_init_containers_effective_request(nodes: ParsedNodes) -> None:
    bigger_init = make_pod(
        "bigger-init",
        containers=[container(requests={GPU: "1"}), container(requests={GPU: "1"})],
        init_containers=[container(requests={GPU: "3"}), container(requests={GPU: "1"})],
    )
    smaller_init = make_pod(
        "smaller-init",
        containers=[container(requests={GPU: "1"}), container(requests={GPU: "2"})],
        init_containers=[container(requests={GPU: "2"})],
    )
    init_only = make_pod(
        "init-only",
        containers=[container(requests={"cpu": "1"})],
        init_containers=[container(requests={GPU: "1"})],
    )
    assert pod_gpu_amounts(bigger_init) == {GPU: 3}
    assert pod_gpu_amounts(smaller_init) == {GPU: 3}
    assert pod_gpu_amounts(init_only) == {GPU: 1}
    frame, _, _ = parse_pods([bigger_init, smaller_init, init_only], nodes, SETTINGS)
    assert frame.set_index("pod")["gpu_requested"].to_dict() == {
        "bigger-init": 3,
        "smaller-init": 3,
        "init-only": 1,
    }
    assert frame.set_index("pod")["gpu_share"].to_dict() == {
        "bigger-init": 3.0,
        "smaller-init": 3.0,
        "init-only": 1.0,
    }


def test_limits_only_pod_counts(nodes: ParsedNodes) -> None:
    pod = make_pod("limits", limits={GPU: "2"})
    assert pod_gpu_amounts(pod) == {GPU: 2}
    frame, kept, issues = parse_pods([pod], nodes, SETTINGS)
    assert issues == []
    assert kept == [0]
    assert frame.loc[0, "gpu_share"] == 2.0


def test_request_wins_over_limit() -> None:
    assert pod_gpu_amounts(make_pod("p", requests={GPU: "1"}, limits={GPU: "3"})) == {GPU: 1}


def test_pod_holding_more_than_the_node_is_capped(nodes: ParsedNodes) -> None:
    frame, kept, issues = parse_pods(
        [make_pod("huge", node="gpu-2", requests={GPU: "5"})], nodes, SETTINGS
    )
    assert kept == [0]
    assert frame.loc[0, "gpu_share"] == 2.0
    assert frame.loc[0, "gpu_requested"] == 5
    assert [(i.name, i.field, i.action) for i in issues] == [
        ("ml/huge", "spec.containers[*].resources", "capped at 2")
    ]


def test_malformed_sections_do_not_raise(nodes: ParsedNodes) -> None:
    pods = [
        {"metadata": {"name": "no-spec", "uid": "u1"}},
        {"metadata": None, "spec": None},
        {"metadata": {"uid": "u3", "labels": None}, "spec": {"containers": None}},
        make_pod("ok", requests={GPU: "1"}),
    ]
    frame, kept, issues = parse_pods(pods, nodes, SETTINGS)
    assert frame["pod"].tolist() == ["ok"]
    assert kept == [3]
    assert [(i.name, i.field) for i in issues] == [("default/#1", "metadata.uid")]


# --- expand_to_minutes ----------------------------------------------------------------------

W_START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
W_END = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
BASE = int(W_START.timestamp())  # epoch seconds of 10:00:00


def minute(hh: int, mm: int) -> pd.Timestamp:
    return pd.Timestamp(datetime(2026, 3, 1, hh, mm, tzinfo=UTC))


def expand(intervals: list[tuple[int, int]]) -> pd.DataFrame:
    frame = pd.DataFrame({"pod_uid": [f"p{i}" for i in range(len(intervals))]})
    start = np.array([BASE + s for s, _ in intervals], dtype=np.int64)
    end = np.array([BASE + e for _, e in intervals], dtype=np.int64)
    return expand_to_minutes(frame, start, end, W_START, W_END)


def rows(frame: pd.DataFrame) -> list[tuple]:
    return [
        (r.pod_uid, pd.Timestamp(r.minute), int(r.seconds)) for r in frame.itertuples(index=False)
    ]


def test_expand_partial_minutes() -> None:
    # active 10:00:20 - 10:02:30
    out = expand([(20, 150)])
    assert list(out.columns) == ["minute", "pod_uid", "seconds"]
    assert rows(out) == [
        ("p0", minute(10, 0), 40),
        ("p0", minute(10, 1), 60),
        ("p0", minute(10, 2), 30),
    ]
    assert str(out["minute"].dt.tz) == "UTC"
    assert out["seconds"].dtype == np.int64


def test_expand_clips_to_the_window() -> None:
    out = expand([(-130, 70), (290, 500), (-600, 900)])
    assert rows(out) == [
        ("p0", minute(10, 0), 60),
        ("p0", minute(10, 1), 10),
        ("p1", minute(10, 4), 10),
        *[("p2", minute(10, m), 60) for m in range(5)],
    ]


def test_expand_empty_intervals_give_no_rows() -> None:
    out = expand([(30, 30), (100, 90), (-200, -100), (400, 500), (0, 1)])
    assert rows(out) == [("p4", minute(10, 0), 1)]


def test_expand_whole_minutes_boundaries() -> None:
    out = expand([(60, 120)])
    assert rows(out) == [("p0", minute(10, 1), 60)]


def test_expand_nothing() -> None:
    out = expand([])
    assert out.empty
    assert list(out.columns) == ["minute", "pod_uid", "seconds"]


# --- odd shapes from real-world JSON: skipped or defaulted with an issue, never a crash --------


def _odd(pod: dict, path: list[str], value: object) -> dict:
    target = pod
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return pod


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "containers"], {"not": "a list"}),
        (["spec", "containers"], [None]),
        (["spec", "nodeName"], ["gpu-1"]),
        (["metadata", "labels"], ["team=a"]),
        (["metadata", "annotations"], None),
    ],
)
def test_odd_pod_shapes_never_crash_and_the_good_pod_survives(path, value) -> None:
    nodes = parse_nodes([h100_node()], SETTINGS)
    odd = _odd(make_pod("odd", requests={GPU: "1"}), path, value)
    frame, kept, issues = parse_pods([odd, make_pod("good", requests={GPU: "2"})], nodes, SETTINGS)
    assert "ml/good" in {
        f"{ns}/{pod}" for ns, pod in zip(frame["namespace"], frame["pod"], strict=True)
    }
    assert kept[-1] == 1
    for issue in issues:
        assert issue.name == "ml/odd"


def test_a_pod_that_is_not_an_object_is_skipped_with_an_issue() -> None:
    nodes = parse_nodes([h100_node()], SETTINGS)
    _frame, kept, issues = parse_pods(
        ["garbage", None, make_pod("good", requests={GPU: "1"})], nodes, SETTINGS
    )
    assert kept == [2]
    assert [i.field for i in issues] == ["metadata.uid", "metadata.uid"]


def test_resources_as_a_list_is_skipped_not_a_crash() -> None:
    nodes = parse_nodes([h100_node()], SETTINGS)
    pod = make_pod("odd", requests={GPU: "1"})
    pod["spec"]["containers"][0]["resources"] = [{"requests": {GPU: "1"}}]
    frame, _, _ = parse_pods([pod], nodes, SETTINGS)
    assert frame.empty


@pytest.mark.parametrize(
    ("labels", "expected_region"),
    [
        ({"topology.kubernetes.io/region": None}, "us-east-1"),
        ({"topology.kubernetes.io/region": 7}, "7"),
        (
            {"karpenter.sh/capacity-type": None, "nvidia.com/gpu.sharing-strategy": None},
            "us-east-1",
        ),
    ],
)
def test_null_and_numeric_node_labels_are_defaulted_or_stringified(labels, expected_region) -> None:
    node = h100_node()
    node["metadata"]["labels"].update(labels)
    node["spec"]["providerID"] = None
    parsed = parse_nodes([node], UsageSettings(cluster="test", default_region="us-east-1"))
    assert parsed.frame.loc[0, "region"] == expected_region
    assert parsed.frame.loc[0, "provider"] == "aws"


def test_a_node_listed_twice_counts_once() -> None:
    parsed = parse_nodes([h100_node(), h100_node()], SETTINGS)
    assert len(parsed.frame) == 1
    assert [(i.name, i.problem) for i in parsed.issues] == [("gpu-1", "listed twice")]


def test_a_pod_uid_listed_twice_counts_once() -> None:
    nodes = parse_nodes([h100_node()], SETTINGS)
    pod = make_pod("train", requests={GPU: "2"})
    frame, kept, issues = parse_pods([pod, pod], nodes, SETTINGS)
    assert kept == [0] and frame["gpu_share"].tolist() == [2.0]
    assert issues[0].field == "metadata.uid" and "listed twice" in issues[0].problem


def test_mig_single_strategy_count_label_counts_mig_devices() -> None:
    """NVIDIA's MIG-in-Kubernetes example: one A100 as 7 × 1g.5gb reports gpu.count 7."""
    node = make_node(
        "mig-1",
        {
            "nvidia.com/gpu.product": "A100-PCIE-40GB-MIG-1g.5gb",
            "nvidia.com/gpu.count": "7",
            "nvidia.com/mig.strategy": "single",
        },
        {GPU: "7"},
    )
    parsed = parse_nodes([node], SETTINGS)
    assert parsed.frame.loc[0, "gpu_count"] == 1
    frame, _, _ = parse_pods(
        [make_pod("slice", node="mig-1", requests={GPU: "1"})], parsed, SETTINGS
    )
    assert frame.loc[0, "gpu_share"] == pytest.approx(1 / 7)


def test_node_creation_time_is_kept_for_each_row() -> None:
    node = h100_node()
    node["metadata"]["creationTimestamp"] = "2026-11-20T10:00:30Z"
    parsed = parse_nodes([node, h100_node("gpu-2")], SETTINGS)
    assert parsed.created_s.tolist() == [
        int(datetime(2026, 11, 20, 10, 0, 30, tzinfo=UTC).timestamp()),
        0,
    ]


def test_mig_single_strategy_on_a_known_instance_takes_the_catalog_gpu_count() -> None:
    node = make_node(
        "p4d",
        {
            "nvidia.com/gpu.product": "A100-SXM4-40GB-MIG-1g.5gb",
            "nvidia.com/gpu.count": "16",  # only part of the GPUs partitioned: no count to trust
            "nvidia.com/mig.strategy": "single",
            "node.kubernetes.io/instance-type": "p4d.24xlarge",
        },
        {GPU: "16"},
    )
    assert parse_nodes([node], SETTINGS).frame.loc[0, "gpu_count"] == 8
