"""A window's usage rows: pods and nodes expanded to minutes, node GPUs split into held and idle.

Input is what a source observed (API objects plus each pod's running interval); output is one
row per pod per minute and one per node per minute, ready to store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from gpu_cost_pipeline.core.usage import (
    NODE_COLUMNS,
    POD_COLUMNS,
    ParseIssue,
    UsageSettings,
    expand_to_minutes,
    parse_nodes,
    parse_pods,
)

# Node attributes every pod-minute carries: the price key of the GPUs it held.
NODE_ATTRIBUTES = [c for c in NODE_COLUMNS if c not in ("node", "gpu_count", "sharing_mode")]
POD_USAGE_COLUMNS = [
    "minute",
    "cluster",
    *POD_COLUMNS,
    *NODE_ATTRIBUTES,
    "seconds",
    "gpu_utilization",
]
NODE_USAGE_COLUMNS = [
    "minute",
    "cluster",
    *NODE_COLUMNS,
    "seconds",
    "gpus_held",
    "idle_gpus",
    "gpu_utilization",
]


@dataclass(frozen=True)
class ClusterObservation:
    """What a source saw in a window: pods and nodes as the API returns them, each pod's running
    interval (epoch seconds), and what only some sources know: when nodes left (by name; a node
    not named runs through the window) and measured GPU utilization, 0–1, as frames of
    (pod_uid, minute, gpu_utilization) and (node, minute, gpu_utilization). Utilization a source
    does not measure stays unknown (null), never guessed."""

    nodes: list[dict]
    pods: list[dict]
    pod_start_s: np.ndarray
    pod_end_s: np.ndarray
    node_end_s: Mapping[str, int] = field(default_factory=dict)
    pod_utilization: pd.DataFrame | None = None
    node_utilization: pd.DataFrame | None = None
    issues: list[ParseIssue] = field(default_factory=list)


@dataclass
class WindowUsage:
    pods: pd.DataFrame  # POD_USAGE_COLUMNS
    nodes: pd.DataFrame  # NODE_USAGE_COLUMNS
    issues: list[ParseIssue]


def derive_window_usage(
    nodes: Sequence[dict],
    pods: Sequence[dict],
    pod_start_s: np.ndarray,
    pod_end_s: np.ndarray,
    window_start: datetime,
    window_end: datetime,
    settings: UsageSettings,
    *,
    node_end_s: Mapping[str, int] | None = None,
    pod_utilization: pd.DataFrame | None = None,
    node_utilization: pd.DataFrame | None = None,
) -> WindowUsage:
    """Parse the objects once, then expand to minutes in one vectorized pass.

    Nodes count from their creation (or the window start) to the window end (sources list
    the nodes of the window). Where
    the pods on a node-minute hold more GPU-seconds than the node has (bad input, such as a
    replica count that disagrees with the device plugin), their shares are scaled down so that
    pods + idle still equals the node, and the node is reported.
    """
    parsed_nodes = parse_nodes(nodes, settings)
    pod_frame, kept, issues = parse_pods(pods, parsed_nodes, settings)
    issues = parsed_nodes.issues + issues
    node_frame = parsed_nodes.frame
    window_start_s = int(pd.Timestamp(window_start).timestamp())
    window_end_s = int(pd.Timestamp(window_end).timestamp())
    # A node counts from its creation (a live listing may include one created after the
    # window); a pod cannot hold GPUs on a node before the node exists.
    node_start_s = np.maximum(parsed_nodes.created_s, window_start_s)
    ends = node_end_s or {}
    node_stop_s = np.array(
        [min(ends.get(name, window_end_s), window_end_s) for name in node_frame["node"]],
        dtype=np.int64,
    )
    node_minutes = expand_to_minutes(
        node_frame, node_start_s, node_stop_s, window_start, window_end
    )
    kept_index = np.asarray(kept, dtype=np.int64)
    # A pod holds GPUs only while its node exists.
    by_node = pd.DataFrame({"start": node_start_s, "stop": node_stop_s}, index=node_frame["node"])
    pod_node = by_node.reindex(pod_frame["node"])
    pod_minutes = expand_to_minutes(
        pod_frame,
        np.maximum(
            np.asarray(pod_start_s, dtype=np.int64)[kept_index], pod_node["start"].to_numpy()
        ),
        np.minimum(np.asarray(pod_end_s, dtype=np.int64)[kept_index], pod_node["stop"].to_numpy()),
        window_start,
        window_end,
    )
    pod_minutes = _with_utilization(pod_minutes, pod_utilization, "pod_uid")
    node_minutes = _with_utilization(node_minutes, node_utilization, "node")
    pod_minutes = pod_minutes.merge(node_frame[["node", *NODE_ATTRIBUTES]], on="node", how="left")
    held_seconds = (
        (pod_minutes["gpu_share"] * pod_minutes["seconds"])
        .groupby([pod_minutes["node"], pod_minutes["minute"]])
        .sum()
        .rename("held_gpu_seconds")
    )
    node_minutes = node_minutes.merge(
        held_seconds, left_on=["node", "minute"], right_index=True, how="left"
    )
    node_minutes["held_gpu_seconds"] = node_minutes["held_gpu_seconds"].fillna(0.0)
    capacity_seconds = node_minutes["gpu_count"] * node_minutes["seconds"]

    over = node_minutes["held_gpu_seconds"] > capacity_seconds * (1 + 1e-12)
    if over.any():
        scale = (capacity_seconds / node_minutes["held_gpu_seconds"]).where(over, 1.0)
        factors = node_minutes.loc[over, ["node", "minute"]].assign(scale=scale[over])
        pod_minutes = pod_minutes.merge(factors, on=["node", "minute"], how="left")
        pod_minutes["gpu_share"] *= pod_minutes.pop("scale").fillna(1.0)
        node_minutes.loc[over, "held_gpu_seconds"] = capacity_seconds[over]
        for node in node_minutes.loc[over, "node"].unique():
            issues.append(
                ParseIssue(
                    "Node",
                    node,
                    "spec.containers[*].resources (of its pods)",
                    "pods hold more GPUs than the node has",
                    "pod shares scaled down to the node's GPUs",
                )
            )

    seconds = node_minutes["seconds"].where(node_minutes["seconds"] > 0, 1)
    node_minutes["gpus_held"] = node_minutes.pop("held_gpu_seconds") / seconds
    node_minutes["idle_gpus"] = (node_minutes["gpu_count"] - node_minutes["gpus_held"]).clip(
        lower=0.0
    )
    node_minutes["cluster"] = settings.cluster
    pod_minutes["cluster"] = settings.cluster
    return WindowUsage(
        pods=pod_minutes[POD_USAGE_COLUMNS],
        nodes=node_minutes[NODE_USAGE_COLUMNS],
        issues=issues,
    )


def _with_utilization(
    minutes: pd.DataFrame, utilization: pd.DataFrame | None, key: str
) -> pd.DataFrame:
    """Attach measured utilization by (key, minute); unknown stays NaN (stored as null)."""
    if utilization is None or utilization.empty or minutes.empty:
        return minutes.assign(gpu_utilization=np.nan)
    on = [key, "minute"] if "minute" in utilization else [key]
    measured = utilization.drop_duplicates(on)[[*on, "gpu_utilization"]]
    if "minute" in on:
        measured = measured.assign(minute=pd.to_datetime(measured["minute"], utc=True))
        measured["minute"] = measured["minute"].astype(minutes["minute"].dtype)
    merged = minutes.merge(measured, on=on, how="left")
    merged["gpu_utilization"] = merged["gpu_utilization"].astype("float64").clip(0.0, 1.0)
    return merged


def derive_observed_usage(
    seen: ClusterObservation, window_start: datetime, window_end: datetime, settings: UsageSettings
) -> WindowUsage:
    """derive_window_usage over everything a source observed, its own issues included."""
    usage = derive_window_usage(
        seen.nodes,
        seen.pods,
        seen.pod_start_s,
        seen.pod_end_s,
        window_start,
        window_end,
        settings,
        node_end_s=seen.node_end_s,
        pod_utilization=seen.pod_utilization,
        node_utilization=seen.node_utilization,
    )
    return WindowUsage(pods=usage.pods, nodes=usage.nodes, issues=seen.issues + usage.issues)


POD_ATTRIBUTE_COLUMNS = [
    "pod_uid",
    "namespace",
    "pod",
    "team",
    "project",
    "experiment_id",
    "cost_center",
    "gpu_resource",
    "gpu_requested",
    "sharing_mode",
    "labels",
    "cost_limit_usd",
]


def pod_attributes(pod_usage: pd.DataFrame) -> pd.DataFrame:
    """One row per pod: its attribution and labels, and the first and last minute it was seen."""
    if pod_usage.empty:
        return pd.DataFrame(columns=[*POD_ATTRIBUTE_COLUMNS, "first_seen", "last_seen"])
    first_rows = pod_usage.drop_duplicates("pod_uid")[POD_ATTRIBUTE_COLUMNS].set_index("pod_uid")
    seen = pod_usage.groupby("pod_uid", sort=False)["minute"].agg(["min", "max"])
    seen.columns = ["first_seen", "last_seen"]
    return first_rows.join(seen).reset_index()
