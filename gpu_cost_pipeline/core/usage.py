"""The one parser from Kubernetes pod and node objects (API JSON) to usage rows.

Objects are parsed once per window (a Python pass over objects, not over minutes); the expansion
to one row per pod per minute is vectorized in ``expand_to_minutes``. Malformed objects never stop
a window: they are skipped or defaulted, and each such decision is reported as a ``ParseIssue``
that names the object and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from gpu_cost_pipeline.core.gpus import (
    GPU_MODELS,
    INSTANCE_TYPES,
    PRODUCT_LABEL,
    UNKNOWN_GPU_MODEL,
    canonical_gpu_model,
    instance_type_of,
)
from gpu_cost_pipeline.core.quantity import parse_device_count
from gpu_cost_pipeline.core.sharing import (
    SHARED_GPU_RESOURCE,
    WHOLE_GPU_RESOURCE,
    MigConvention,
    NodeSharing,
    is_gpu_resource,
    mig_profile_of_product,
    pod_gpu_share,
)

COST_LIMIT_ANNOTATION = "gpu-autoscaler.io/cost-limit"
# Attribution label keys, first match wins (the seed's keys first).
TEAM_LABELS = ("team", "gpu-autoscaler.io/team")
PROJECT_LABELS = ("project", "gpu-autoscaler.io/project")
EXPERIMENT_LABELS = ("experiment-id", "gpu-autoscaler.io/experiment-id")
COST_CENTER_LABELS = ("cost-center", "gpu-autoscaler.io/cost-center")

CAPACITY_SPOT, CAPACITY_ON_DEMAND, CAPACITY_RESERVED = "spot", "on-demand", "reserved"
# On-demand capacity covered by a term purchase (RIs, savings plans, GCP committed use, Azure
# reservations): no cloud label says so, the node's owner does, with this label.
COMMITMENT_LABEL = "gpu-autoscaler.io/commitment"
COMMITMENT_CAPACITY = {"1yr": "committed-1yr", "3yr": "committed-3yr"}


@dataclass(frozen=True)
class ParseIssue:
    kind: str  # "Pod" | "Node"
    name: str  # "namespace/name" for pods
    field: str
    problem: str
    action: str  # "skipped" | "defaulted"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.field}: {self.problem}; {self.action}"


@dataclass(frozen=True)
class UsageSettings:
    cluster: str
    default_provider: str = "aws"
    default_region: str = ""
    mig_convention: MigConvention = MigConvention.COMPUTE


@dataclass
class ParsedNodes:
    frame: pd.DataFrame
    sharing: dict[str, NodeSharing] = field(default_factory=dict)
    issues: list[ParseIssue] = field(default_factory=list)
    # Creation time of each node (epoch seconds, 0 when unknown), aligned with frame's rows.
    created_s: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


NODE_COLUMNS = [
    "node",
    "gpu_model",
    "gpu_count",
    "sharing_mode",
    "capacity_type",
    "instance_type",
    "provider",
    "region",
    "zone",
]

POD_COLUMNS = [
    "pod_uid",
    "namespace",
    "pod",
    "node",
    "gpu_resource",
    "gpu_requested",
    "gpu_share",
    "sharing_mode",
    "team",
    "project",
    "experiment_id",
    "cost_center",
    "labels",
    "cost_limit_usd",
]


def clean_labels(value: object) -> dict[str, str]:
    """Labels or annotations as str -> str: API JSON can carry nulls, numbers or a wrong type."""
    if not isinstance(value, Mapping):
        return {}
    return {
        str(key): str(item).lower() if isinstance(item, bool) else str(item)
        for key, item in value.items()
        if isinstance(item, str | int | float | bool)
    }


def _mapping(value: object) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _first_label(labels: Mapping[str, str], keys: Sequence[str]) -> str:
    for key in keys:
        value = labels.get(key)
        if value:
            return str(value)
    return ""


def capacity_type_of(labels: Mapping[str, str]) -> str:
    """Spot / on-demand / reserved from the cloud labels; on-demand nodes labelled with a
    commitment (gpu-autoscaler.io/commitment: 1yr | 3yr) are committed-1yr / committed-3yr."""
    capacity = _cloud_capacity_type(labels)
    if capacity == CAPACITY_ON_DEMAND:
        return COMMITMENT_CAPACITY.get(labels.get(COMMITMENT_LABEL, "").lower(), capacity)
    return capacity


def _cloud_capacity_type(labels: Mapping[str, str]) -> str:
    """Spot / on-demand / reserved from the label conventions of Karpenter, EKS, GKE, AKS."""
    karpenter = labels.get("karpenter.sh/capacity-type", "").lower()
    if karpenter in (CAPACITY_SPOT, CAPACITY_ON_DEMAND, CAPACITY_RESERVED):
        return karpenter
    eks = labels.get("eks.amazonaws.com/capacityType", "").upper()
    if eks == "SPOT":
        return CAPACITY_SPOT
    if eks == "ON_DEMAND":
        return CAPACITY_ON_DEMAND
    if (
        labels.get("cloud.google.com/gke-spot") == "true"
        or labels.get("cloud.google.com/gke-preemptible") == "true"
        or labels.get("kubernetes.azure.com/scalesetpriority", "").lower() == "spot"
        or labels.get("lifecycle") == "EC2Spot"
    ):
        return CAPACITY_SPOT
    return CAPACITY_ON_DEMAND


def provider_of(provider_id: object, labels: Mapping[str, str], default: str) -> str:
    provider_id = provider_id if isinstance(provider_id, str) else ""
    scheme = provider_id.split("://", 1)[0].lower() if "://" in provider_id else ""
    by_scheme = {"aws": "aws", "gce": "gcp", "azure": "azure"}
    if scheme in by_scheme:
        return by_scheme[scheme]
    prefixes = {"aws": ("eks.amazonaws.com/", "karpenter.k8s.aws/"), "gcp": ("cloud.google.com/",)}
    prefixes["azure"] = ("kubernetes.azure.com/",)
    for provider, keys in prefixes.items():
        if any(label.startswith(keys) for label in labels):
            return provider
    instance = INSTANCE_TYPES.get(instance_type_of(labels))
    return instance.provider if instance else default


def _int_label(labels: Mapping[str, str], key: str) -> int | None:
    value = labels.get(key)
    if value is None:
        return None
    try:
        return parse_device_count(value)
    except ValueError:
        return None


def _gpu_capacity(status: Mapping, resource: str) -> int | None:
    for source in ("capacity", "allocatable"):
        value = _mapping(status.get(source)).get(resource)
        if value is not None:
            try:
                return parse_device_count(value)
            except ValueError:
                return None
    return None


def _node_gpu_count(
    labels: Mapping[str, str], status: Mapping, sharing: NodeSharing, name: str
) -> tuple[int, list[ParseIssue]]:
    """Physical GPUs on the node: the GFD count label, else derived from the device plugin's
    capacity (MIG devices or time-sliced replicas divided back), else the instance catalog."""
    issues: list[ParseIssue] = []
    counted = _int_label(labels, "nvidia.com/gpu.count")
    if "nvidia.com/gpu.count" in labels and counted is None:
        issues.append(
            ParseIssue(
                "Node",
                name,
                "metadata.labels['nvidia.com/gpu.count']",
                f"{labels['nvidia.com/gpu.count']!r} is not a count",
                "defaulted from capacity",
            )
        )
    per_gpu = (
        sharing.mig_single_profile.instances_per_gpu(sharing.gpu_memory_gb)
        if sharing.mig_single_profile is not None
        else 1
    )
    instance = INSTANCE_TYPES.get(instance_type_of(labels))
    if sharing.mig_single_profile is not None and instance is not None:
        return instance.gpu_count, issues  # MIG layouts vary; the instance's GPUs do not
    if counted:
        # With MIG single strategy GFD counts MIG devices (7 on one A100 as 1g.5gb).
        return max(1, -(-counted // per_gpu)), issues
    devices = _gpu_capacity(status, WHOLE_GPU_RESOURCE) or 0
    if devices and sharing.mig_single_profile is not None:
        return max(1, -(-devices // per_gpu)), issues
    if devices and sharing.replicas > 1:
        return max(1, devices // sharing.replicas), issues
    shared = _gpu_capacity(status, SHARED_GPU_RESOURCE) or 0
    if shared:
        return max(1, shared // max(1, sharing.replicas)), issues
    if instance and _has_mig_resources(status):
        return instance.gpu_count, issues
    return devices, issues


def _has_mig_resources(status: Mapping) -> bool:
    return any(str(key).startswith("nvidia.com/mig-") for key in _mapping(status.get("capacity")))


def parse_nodes(nodes: Iterable[object], settings: UsageSettings) -> ParsedNodes:
    """One row per GPU node. Any malformed node is skipped with an issue naming it; a node
    listed twice counts once."""
    rows: list[dict] = []
    sharing_by_node: dict[str, NodeSharing] = {}
    issues: list[ParseIssue] = []
    created_s: list[int] = []
    for index, node in enumerate(nodes):
        metadata = _mapping(_mapping(node).get("metadata"))
        name = str(metadata.get("name") or "")
        if not name:
            issues.append(ParseIssue("Node", f"#{index}", "metadata.name", "missing", "skipped"))
            continue
        if name in sharing_by_node:
            issues.append(ParseIssue("Node", name, "metadata.name", "listed twice", "skipped"))
            continue
        try:
            parsed = _parse_node(_mapping(node), name, settings, issues)
        except Exception as error:  # one odd object must not stop the window
            issues.append(
                ParseIssue("Node", name, "(object)", f"{type(error).__name__}: {error}", "skipped")
            )
            continue
        if parsed is not None:
            row, sharing = parsed
            rows.append(row)
            sharing_by_node[name] = sharing
            created_s.append(parse_timestamp(metadata.get("creationTimestamp")) or 0)
    frame = pd.DataFrame(rows, columns=NODE_COLUMNS)
    frame["gpu_count"] = frame["gpu_count"].astype("int64")
    return ParsedNodes(
        frame=frame,
        sharing=sharing_by_node,
        issues=issues,
        created_s=np.asarray(created_s, dtype=np.int64),
    )


def _parse_node(
    node: Mapping, name: str, settings: UsageSettings, issues: list[ParseIssue]
) -> tuple[dict, NodeSharing] | None:
    metadata = _mapping(node.get("metadata"))
    labels = clean_labels(metadata.get("labels"))
    status = _mapping(node.get("status"))
    gpu_model = canonical_gpu_model(labels)
    memory_gb = GPU_MODELS[gpu_model].memory_gb if gpu_model in GPU_MODELS else 0
    strategy = labels.get("nvidia.com/gpu.sharing-strategy", "none").lower()
    replicas = _int_label(labels, "nvidia.com/gpu.replicas")
    if (replicas or 1) > 1 and strategy not in ("time-slicing", "mps"):
        # Older GPU Feature Discovery sets replicas without a strategy label: time-slicing.
        strategy = "time-slicing"
    if "nvidia.com/gpu.replicas" in labels and not replicas:
        issues.append(
            ParseIssue(
                "Node",
                name,
                "metadata.labels['nvidia.com/gpu.replicas']",
                f"{labels['nvidia.com/gpu.replicas']!r} is not a positive count",
                "defaulted to 1",
            )
        )
    single_profile = (
        mig_profile_of_product(labels.get(PRODUCT_LABEL, ""))
        if labels.get("nvidia.com/mig.strategy", "single").lower() == "single"
        else None
    )
    sharing = NodeSharing(
        gpu_count=0,
        gpu_memory_gb=memory_gb,
        sharing_strategy=strategy if strategy in ("time-slicing", "mps") else "none",
        replicas=replicas or 1,
        mig_single_profile=single_profile,
    )
    gpu_count, count_issues = _node_gpu_count(labels, status, sharing, name)
    issues.extend(count_issues)
    if gpu_count <= 0:
        issues.append(
            ParseIssue("Node", name, "status.capacity", "no GPUs found on the node", "skipped")
        )
        return None
    sharing = replace(sharing, gpu_count=gpu_count)
    has_mig = single_profile is not None or _has_mig_resources(status)
    mode = "mig" if has_mig else ("exclusive" if sharing.replicas <= 1 else strategy)
    if gpu_model == UNKNOWN_GPU_MODEL:
        issues.append(
            ParseIssue(
                "Node",
                name,
                f"metadata.labels['{PRODUCT_LABEL}']",
                f"GPU model {labels.get(PRODUCT_LABEL, '(no label)')!r} is not in the catalog",
                "kept as 'unknown', priced by estimate",
            )
        )
    row = {
        "node": name,
        "gpu_model": gpu_model,
        "gpu_count": gpu_count,
        "sharing_mode": mode,
        "capacity_type": capacity_type_of(labels),
        "instance_type": instance_type_of(labels),
        "provider": provider_of(
            _mapping(node.get("spec")).get("providerID"), labels, settings.default_provider
        ),
        "region": labels.get("topology.kubernetes.io/region") or settings.default_region,
        "zone": labels.get("topology.kubernetes.io/zone", ""),
    }
    return row, sharing


def parse_timestamp(value: object) -> int | None:
    """RFC 3339 time (as the API writes it) to epoch seconds; None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _container_gpu_amounts(container: Mapping, path: str) -> dict[str, int]:
    """GPU units per resource in one container; a limit stands in for a missing request (as
    Kubernetes defaults extended-resource requests to limits). Raises ValueError naming the field."""
    resources = _mapping(_mapping(container).get("resources"))
    found: dict[str, int] = {}
    for section in ("limits", "requests"):  # requests, read last, win over limits
        for resource, value in _mapping(resources.get(section)).items():
            if is_gpu_resource(resource):
                try:
                    found[resource] = parse_device_count(value)
                except ValueError as error:
                    raise ValueError(f"{path}.resources.{section}['{resource}']: {error}") from None
    return found


def pod_gpu_amounts(pod: Mapping) -> dict[str, int]:
    """Effective GPU units a pod holds per resource, as the scheduler counts them:
    max(sum over app containers, max over init containers). Raises ValueError naming the field."""
    spec = _mapping(pod.get("spec"))
    totals: dict[str, int] = {}
    for index, container in enumerate(_list(spec.get("containers"))):
        for resource, amount in _container_gpu_amounts(
            container, f"spec.containers[{index}]"
        ).items():
            totals[resource] = totals.get(resource, 0) + amount
    for index, container in enumerate(_list(spec.get("initContainers"))):
        path = f"spec.initContainers[{index}]"
        for resource, amount in _container_gpu_amounts(container, path).items():
            totals[resource] = max(totals.get(resource, 0), amount)
    return {resource: amount for resource, amount in totals.items() if amount > 0}


def parse_pods(
    pods: Iterable[object], nodes: ParsedNodes, settings: UsageSettings
) -> tuple[pd.DataFrame, list[int], list[ParseIssue]]:
    """One row per GPU pod. Returns the frame, the input index of each kept pod (to line up
    per-pod side data such as observed intervals), and the issues found. Any malformed pod is
    skipped with an issue naming it and the field; a uid seen twice counts once."""
    rows: list[dict] = []
    kept: list[int] = []
    issues: list[ParseIssue] = []
    seen: set[str] = set()
    for index, pod in enumerate(pods):
        metadata = _mapping(_mapping(pod).get("metadata"))
        namespace = str(metadata.get("namespace") or "default")
        name = f"{namespace}/{metadata.get('name') or f'#{index}'}"
        uid = str(metadata.get("uid") or "")
        if not uid:
            issues.append(ParseIssue("Pod", name, "metadata.uid", "missing", "skipped"))
            continue
        if uid in seen:
            issues.append(ParseIssue("Pod", name, "metadata.uid", f"{uid} listed twice", "skipped"))
            continue
        try:
            row = _parse_pod(_mapping(pod), name, uid, nodes, settings, issues)
        except Exception as error:  # one odd object must not stop the window
            issues.append(
                ParseIssue("Pod", name, "(object)", f"{type(error).__name__}: {error}", "skipped")
            )
            continue
        if row is not None:
            rows.append(row)
            kept.append(index)
            seen.add(uid)
    frame = pd.DataFrame(rows, columns=POD_COLUMNS)
    frame = frame.astype({"gpu_requested": "int64", "gpu_share": "float64"})
    frame["cost_limit_usd"] = frame["cost_limit_usd"].astype("float64")
    return frame, kept, issues


def _parse_pod(
    pod: Mapping,
    name: str,
    uid: str,
    nodes: ParsedNodes,
    settings: UsageSettings,
    issues: list[ParseIssue],
) -> dict | None:
    metadata = _mapping(pod.get("metadata"))
    try:
        amounts = pod_gpu_amounts(pod)
    except ValueError as error:
        field_path, _, problem = str(error).partition(": ")
        issues.append(ParseIssue("Pod", name, field_path, problem, "skipped"))
        return None
    if not amounts:
        return None  # not a GPU pod
    node = _mapping(pod.get("spec")).get("nodeName")
    sharing = nodes.sharing.get(node) if isinstance(node, str) else None
    if sharing is None:
        problem = (
            "not set"
            if not node
            else f"node {node!r} is not a GPU node in this listing (missing, or without GPUs)"
        )
        issues.append(ParseIssue("Pod", name, "spec.nodeName", problem, "skipped"))
        return None
    share, modes = 0.0, []
    for resource, amount in amounts.items():
        resource_share, mode = pod_gpu_share(resource, amount, sharing, settings.mig_convention)
        share += resource_share
        modes.append(mode.value)
    if share > sharing.gpu_count:
        issues.append(
            ParseIssue(
                "Pod",
                name,
                "spec.containers[*].resources",
                f"holds {share:g} GPUs but node {node!r} has {sharing.gpu_count}",
                f"capped at {sharing.gpu_count}",
            )
        )
        share = float(sharing.gpu_count)
    labels = clean_labels(metadata.get("labels"))
    annotations = clean_labels(metadata.get("annotations"))
    return {
        "pod_uid": uid,
        "namespace": name.split("/", 1)[0],
        "pod": str(metadata.get("name") or ""),
        "node": node,
        "gpu_resource": "+".join(sorted(amounts)),
        "gpu_requested": sum(amounts.values()),
        "gpu_share": share,
        "sharing_mode": "+".join(sorted(set(modes))),
        "team": _first_label(labels, TEAM_LABELS),
        "project": _first_label(labels, PROJECT_LABELS),
        "experiment_id": _first_label(labels, EXPERIMENT_LABELS),
        "cost_center": _first_label(labels, COST_CENTER_LABELS),
        "labels": json.dumps(labels, sort_keys=True, separators=(",", ":")),
        "cost_limit_usd": _cost_limit(annotations, name, issues),
    }


def _cost_limit(
    annotations: Mapping[str, str], name: str, issues: list[ParseIssue]
) -> float | None:
    if COST_LIMIT_ANNOTATION not in annotations:
        return None
    raw_limit = annotations[COST_LIMIT_ANNOTATION]
    try:
        cost_limit = float(raw_limit)
    except ValueError:
        cost_limit = float("nan")
    if np.isfinite(cost_limit) and cost_limit >= 0:
        return cost_limit
    issues.append(
        ParseIssue(
            "Pod",
            name,
            f"metadata.annotations['{COST_LIMIT_ANNOTATION}']",
            f"{raw_limit!r} is not a non-negative amount of USD",
            "ignored",
        )
    )
    return None


def expand_to_minutes(
    frame: pd.DataFrame,
    active_start: np.ndarray,
    active_end: np.ndarray,
    window_start: datetime,
    window_end: datetime,
) -> pd.DataFrame:
    """Repeat each row once per minute it was active inside the window, with the seconds it was
    active in that minute. ``active_*`` are epoch seconds (int64), one per row of ``frame``."""
    window_start_s = int(pd.Timestamp(window_start).timestamp())
    window_end_s = int(pd.Timestamp(window_end).timestamp())
    start = np.clip(np.asarray(active_start, dtype=np.int64), window_start_s, window_end_s)
    end = np.clip(np.asarray(active_end, dtype=np.int64), window_start_s, window_end_s)
    first_minute = start // 60 * 60
    last_minute = np.where(end > start, (end - 1) // 60 * 60, first_minute - 60)
    counts = np.maximum(0, (last_minute - first_minute) // 60 + 1)
    row_index = np.repeat(np.arange(len(frame)), counts)
    # Minute offset of each repeated row within its own run: 0, 1, 2, ... per source row.
    run_starts = np.repeat(np.cumsum(counts) - counts, counts)
    minute_s = first_minute[row_index] + (np.arange(len(row_index)) - run_starts) * 60
    seconds = np.minimum(end[row_index], minute_s + 60) - np.maximum(start[row_index], minute_s)
    expanded = frame.iloc[row_index].reset_index(drop=True)
    expanded.insert(0, "minute", pd.to_datetime(minute_s, unit="s", utc=True))
    expanded["seconds"] = seconds.astype("int64")
    return expanded
