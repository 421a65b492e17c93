"""kube-state-metrics and DCGM exporter series → the Kubernetes objects the one parser reads.

The Prometheus source hands over what its queries returned for a window (``MetricsWindow``:
one frame per query, labels as columns); this module rebuilds nodes and pods as the API would
have served them, so shares, GPU models and capacity types follow exactly the parser's rules,
plus what the live API cannot tell: when each pod started and ended to the second, when nodes
came and went, and GPU utilization per pod-minute and node-minute.

Lifetimes, in epoch seconds:
- a pod starts at ``kube_pod_start_time`` (its ``status.startTime``, as the live source bills);
- it ends at ``kube_pod_completion_time`` when it completed; a pod that vanished while running
  (deleted, evicted) ends one scrape interval after its last sample — the first scrape that no
  longer saw it; a pod still reported near the window end runs through it;
- nodes likewise, from ``kube_node_created`` to their last sample.

kube-state-metrics turns label keys into Prometheus label names (``nvidia.com/gpu.product`` →
``label_nvidia_com_gpu_product``), which loses the punctuation; the keys the parser reads are
mapped back exactly (``KNOWN_LABEL_KEYS``), any other key keeps its sanitized name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from gpu_cost_pipeline.core.gpus import (
    GKE_ACCELERATOR_LABEL,
    INSTANCE_TYPE_LABELS,
    KARPENTER_GPU_MEMORY_LABEL,
    KARPENTER_GPU_NAME_LABEL,
    PRODUCT_LABEL,
)
from gpu_cost_pipeline.core.usage import (
    COST_CENTER_LABELS,
    COST_LIMIT_ANNOTATION,
    EXPERIMENT_LABELS,
    PROJECT_LABELS,
    TEAM_LABELS,
    ParseIssue,
)
from gpu_cost_pipeline.core.window_usage import ClusterObservation

# Label keys the parser reads, so their sanitized names can be mapped back.
KNOWN_LABEL_KEYS = (
    PRODUCT_LABEL,
    GKE_ACCELERATOR_LABEL,
    KARPENTER_GPU_NAME_LABEL,
    KARPENTER_GPU_MEMORY_LABEL,
    *INSTANCE_TYPE_LABELS,
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.replicas",
    "nvidia.com/gpu.sharing-strategy",
    "nvidia.com/mig.strategy",
    "karpenter.sh/capacity-type",
    "eks.amazonaws.com/capacityType",
    "cloud.google.com/gke-spot",
    "cloud.google.com/gke-preemptible",
    "kubernetes.azure.com/scalesetpriority",
    "lifecycle",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "kubernetes.io/hostname",
    *TEAM_LABELS,
    *PROJECT_LABELS,
    *EXPERIMENT_LABELS,
    *COST_CENTER_LABELS,
    COST_LIMIT_ANNOTATION,
)
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
# nvidia_com_mig_1g_10gb → nvidia.com/mig-1g.10gb
_MIG_RESOURCE = re.compile(r"^nvidia_com_mig_(\d+)g_(\d+)gb$")
_GPU_RESOURCES = {
    "nvidia_com_gpu": "nvidia.com/gpu",
    "nvidia_com_gpu_shared": "nvidia.com/gpu.shared",
}
DEFAULT_SCRAPE_INTERVAL_S = 30.0


def sanitize_label_name(key: str) -> str:
    """The Prometheus label name kube-state-metrics gives a Kubernetes label key."""
    return _INVALID_LABEL_CHARS.sub("_", key)


_KNOWN_BY_SANITIZED = {sanitize_label_name(key): key for key in reversed(KNOWN_LABEL_KEYS)}


def kubernetes_labels(series_labels: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``label_*`` (or ``annotation_*``) Prometheus labels back to Kubernetes keys; empty
    values are how kube-state-metrics writes "not set" and are dropped."""
    found: dict[str, str] = {}
    for name, value in series_labels.items():
        if name.startswith(prefix) and value != "":
            sanitized = name[len(prefix) :]
            found[_KNOWN_BY_SANITIZED.get(sanitized, sanitized)] = value
    return found


def kubernetes_resource(resource: str) -> str | None:
    """kube-state-metrics' ``resource`` label back to the GPU resource name; None if not a GPU."""
    if resource in _GPU_RESOURCES:
        return _GPU_RESOURCES[resource]
    mig = _MIG_RESOURCE.match(resource)
    return f"nvidia.com/mig-{mig[1]}g.{mig[2]}gb" if mig else None


@dataclass
class MetricsWindow:
    """What the Prometheus queries returned for [start, end): one frame per query, one row per
    series, its labels as columns and its value in ``value`` (utilization frames: one row per
    series and minute, ``minute_s`` the minute's epoch second)."""

    gpu_requests: pd.DataFrame  # kube_pod_container_resource_requests (+ init), GPU resources
    running: pd.DataFrame  # kube_pod_status_phase{phase="Running"} seen in the window
    pod_start: pd.DataFrame  # kube_pod_start_time
    pod_completion: pd.DataFrame  # kube_pod_completion_time
    pod_last_seen: pd.DataFrame  # uid, value: the last sample time of the pod's GPU requests
    pod_labels: pd.DataFrame  # kube_pod_labels
    pod_annotations: pd.DataFrame  # kube_pod_annotations
    node_labels: pd.DataFrame  # kube_node_labels
    node_capacity: pd.DataFrame  # kube_node_status_capacity, GPU resources
    node_allocatable: pd.DataFrame  # kube_node_status_allocatable, GPU resources
    node_info: pd.DataFrame  # kube_node_info (provider_id)
    node_created: pd.DataFrame  # kube_node_created
    node_last_seen: pd.DataFrame  # node, value: the last sample time of kube_node_info
    samples_per_series: pd.DataFrame  # count_over_time of the GPU requests, for the interval
    pod_utilization: pd.DataFrame  # namespace/pod (or exported_*), minute_s, value (0–1)
    node_utilization: pd.DataFrame  # Hostname or hostname, minute_s, value (0–1)
    covered_seconds: float  # the span the window questions covered (the window + a lookahead)


def _by(frame: pd.DataFrame, key: str) -> dict[str, float]:
    if frame.empty or key not in frame:
        return {}
    return frame.groupby(key)["value"].max().to_dict()


def _rows(frame: pd.DataFrame) -> Iterable[dict[str, str]]:
    if frame.empty:
        return []
    labels = [c for c in frame.columns if c != "value"]
    return frame[labels].fillna("").to_dict("records")


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(int(epoch_seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scrape_interval(samples: pd.DataFrame, window_seconds: float) -> float:
    """The scrape interval: a series present through the whole window has about
    window / interval samples, and none has more; the kube-prometheus default when no series
    has two samples."""
    counts = samples["value"].astype(float) if not samples.empty else pd.Series(dtype=float)
    if counts.empty or counts.max() < 2:
        return DEFAULT_SCRAPE_INTERVAL_S
    return float(window_seconds / counts.max())


def _lifetime_end(
    last_seen: float | None, completed: float | None, interval: float, end_s: int
) -> int:
    if completed is not None and not np.isnan(completed):
        return int(completed)
    if last_seen is None or last_seen + interval >= end_s:
        return end_s  # still reported at the window's end
    return int(last_seen + interval)  # the first scrape that no longer saw it


def observe_from_metrics(
    metrics: MetricsWindow, window_start: datetime, window_end: datetime
) -> ClusterObservation:
    """Rebuild the window's GPU nodes and running GPU pods, with per-second lifetimes."""
    start_s, end_s = int(window_start.timestamp()), int(window_end.timestamp())
    interval = scrape_interval(metrics.samples_per_series, metrics.covered_seconds)
    issues: list[ParseIssue] = []
    nodes, node_end_s = _nodes(metrics, interval, end_s, issues)
    pods, starts, ends, uid_of = _pods(metrics, interval, start_s, end_s, issues)
    return ClusterObservation(
        nodes=nodes,
        pods=pods,
        pod_start_s=np.asarray(starts, dtype=np.int64),
        pod_end_s=np.asarray(ends, dtype=np.int64),
        node_end_s=node_end_s,
        pod_utilization=_pod_utilization(metrics.pod_utilization, uid_of),
        node_utilization=_node_utilization(metrics.node_utilization),
        issues=issues,
    )


def _nodes(
    metrics: MetricsWindow, interval: float, end_s: int, issues: list[ParseIssue]
) -> tuple[list[dict], dict[str, int]]:
    capacity: dict[str, dict[str, str]] = {}
    allocatable: dict[str, dict[str, str]] = {}
    for target, frame in (
        (capacity, metrics.node_capacity),
        (allocatable, metrics.node_allocatable),
    ):
        for row, value in zip(_rows(frame), frame.get("value", []), strict=False):
            resource = kubernetes_resource(row.get("resource", ""))
            if resource and row.get("node"):
                target.setdefault(row["node"], {})[resource] = str(int(float(value)))
    labels = {
        row["node"]: kubernetes_labels(row, "label_")
        for row in _rows(metrics.node_labels)
        if row.get("node")
    }
    providers = {
        row["node"]: row.get("provider_id", "")
        for row in _rows(metrics.node_info)
        if row.get("node")
    }
    created = _by(metrics.node_created, "node")
    last_seen = _by(metrics.node_last_seen, "node")
    gpu_nodes = sorted(capacity)
    missing = [node for node in gpu_nodes if not labels.get(node)]
    if gpu_nodes and len(missing) == len(gpu_nodes):
        raise MissingSeriesError(
            f"kube_node_labels carries no labels for the {len(gpu_nodes)} GPU nodes (e.g. "
            f"{missing[0]!r}): kube-state-metrics exports node labels only when allow-listed. "
            "Run it with --metric-labels-allowlist=nodes=[nvidia.com/gpu.product,"
            "nvidia.com/gpu.count,node.kubernetes.io/instance-type,karpenter.sh/capacity-type,"
            "topology.kubernetes.io/region,topology.kubernetes.io/zone,...] (or nodes=[*]); "
            "without them GPU models and capacity types, hence prices, would be wrong."
        )
    for node in missing:
        issues.append(
            ParseIssue(
                "Node", node, "kube_node_labels", "no allow-listed labels", "priced as unknown"
            )
        )
    nodes = []
    for node in gpu_nodes:
        metadata: dict = {"name": node, "labels": labels.get(node, {})}
        if node in created:
            metadata["creationTimestamp"] = _iso(created[node])
        nodes.append(
            {
                "metadata": metadata,
                "spec": {"providerID": providers.get(node, "")},
                "status": {
                    "capacity": capacity[node],
                    "allocatable": allocatable.get(node, capacity[node]),
                },
            }
        )
    node_end_s = {
        node: _lifetime_end(last_seen.get(node), None, interval, end_s) for node in gpu_nodes
    }
    return nodes, node_end_s


def _pods(
    metrics: MetricsWindow, interval: float, start_s: int, end_s: int, issues: list[ParseIssue]
) -> tuple[list[dict], list[int], list[int], dict[tuple[str, str], str]]:
    running = set(metrics.running["uid"]) if "uid" in metrics.running else set()
    containers: dict[str, dict[tuple[bool, str], dict[str, str]]] = {}
    identity: dict[str, tuple[str, str, str]] = {}
    for row, value in zip(
        _rows(metrics.gpu_requests), metrics.gpu_requests.get("value", []), strict=False
    ):
        uid, resource = row.get("uid", ""), kubernetes_resource(row.get("resource", ""))
        if not uid or uid not in running or resource is None:
            continue
        identity.setdefault(uid, (row.get("namespace", ""), row.get("pod", ""), ""))
        if row.get("node"):
            identity[uid] = (*identity[uid][:2], row["node"])
        key = (row.get("init") == "true", row.get("container", ""))
        containers.setdefault(uid, {}).setdefault(key, {})[resource] = str(int(float(value)))
    pod_labels = {row["uid"]: kubernetes_labels(row, "label_") for row in _rows(metrics.pod_labels)}
    annotations = {
        row["uid"]: kubernetes_labels(row, "annotation_") for row in _rows(metrics.pod_annotations)
    }
    started = _by(metrics.pod_start, "uid")
    completed = _by(metrics.pod_completion, "uid")
    last_seen = _by(metrics.pod_last_seen, "uid")
    if identity and not any(pod_labels.get(uid) for uid in identity):
        issues.append(
            ParseIssue(
                "Pod",
                "(all GPU pods)",
                "kube_pod_labels",
                "no pod carries allow-listed labels (kube-state-metrics "
                "--metric-labels-allowlist=pods=[team,project,experiment-id,cost-center])",
                "costs kept without team/project attribution",
            )
        )
    pods, starts, ends = [], [], []
    uid_of: dict[tuple[str, str], str] = {}
    for uid in sorted(identity):
        namespace, name, node = identity[uid]
        start = started.get(uid)
        if start is None:
            issues.append(
                ParseIssue(
                    "Pod", f"{namespace}/{name}", "kube_pod_start_time", "missing",
                    "counted from the window start",
                )
            )  # fmt: skip
            start = start_s
        by_kind: dict[str, list[dict]] = {"containers": [], "initContainers": []}
        for (init, container), requests in sorted(containers[uid].items()):
            by_kind["initContainers" if init else "containers"].append(
                {"name": container, "resources": {"requests": requests}}
            )
        metadata = {"name": name, "namespace": namespace, "uid": uid}
        metadata["labels"] = pod_labels.get(uid, {})
        metadata["annotations"] = annotations.get(uid, {})
        pods.append(
            {
                "metadata": metadata,
                "spec": {"nodeName": node, **{k: v for k, v in by_kind.items() if v}},
                "status": {"phase": "Running", "startTime": _iso(start)},
            }
        )
        starts.append(int(start))
        ends.append(_lifetime_end(last_seen.get(uid), completed.get(uid), interval, end_s))
        uid_of[(namespace, name)] = uid
    return pods, starts, ends, uid_of


def _minutes(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame["minute_s"].astype("int64"), unit="s", utc=True)


def _first_present(frame: pd.DataFrame, *columns: str) -> pd.Series:
    """Per row, the first of ``columns`` that is non-empty (DCGM's exported_pod wins over pod:
    with honor_labels off, ``pod`` names the exporter's own pod)."""
    chosen = pd.Series("", index=frame.index, dtype=object)
    for column in reversed(columns):
        if column in frame:
            values = frame[column].fillna("")
            chosen = values.where(values != "", chosen)
    return chosen


UTILIZATION_COLUMNS = ["minute", "gpu_utilization"]


def _pod_utilization(frame: pd.DataFrame, uid_of: dict[tuple[str, str], str]) -> pd.DataFrame:
    columns = ["pod_uid", *UTILIZATION_COLUMNS]
    if frame.empty or not uid_of:
        return pd.DataFrame(columns=columns)
    namespace = _first_present(frame, "exported_namespace", "namespace")
    pod = _first_present(frame, "exported_pod", "pod")
    uids = pd.Series(list(zip(namespace, pod, strict=True)), index=frame.index).map(uid_of)
    found = frame.assign(pod_uid=uids, minute=_minutes(frame)).dropna(subset=["pod_uid"])
    # A pod on several GPUs has one series per GPU: its utilization is their mean.
    grouped = found.groupby(["pod_uid", "minute"], as_index=False)["value"].mean()
    return grouped.rename(columns={"value": "gpu_utilization"})[columns]


def _node_utilization(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["node", *UTILIZATION_COLUMNS]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    node = _first_present(frame, "Hostname", "hostname")
    found = frame.assign(node=node, minute=_minutes(frame))
    found = found[found["node"] != ""]
    grouped = found.groupby(["node", "minute"], as_index=False)["value"].mean()
    return grouped.rename(columns={"value": "gpu_utilization"})[columns]


class MissingSeriesError(ValueError):
    """Prometheus lacks series the source needs; the message says which and how to fix it."""
