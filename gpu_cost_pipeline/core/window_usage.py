"""A window's usage rows: pods and nodes expanded to minutes, node GPUs split into held and idle.

Input is what a source observed (API objects plus each pod's running interval); output is one
row per pod per minute and one per node per minute, ready to store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
POD_USAGE_COLUMNS = ["minute", "cluster", *POD_COLUMNS, *NODE_ATTRIBUTES, "seconds"]
NODE_USAGE_COLUMNS = ["minute", "cluster", *NODE_COLUMNS, "seconds", "gpus_held", "idle_gpus"]


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
    node_minutes = expand_to_minutes(
        node_frame,
        node_start_s,
        np.full(len(node_frame), window_end_s, dtype=np.int64),
        window_start,
        window_end,
    )
    kept_index = np.asarray(kept, dtype=np.int64)
    pod_node_start_s = pd.Series(node_start_s, index=node_frame["node"]).reindex(pod_frame["node"])
    pod_minutes = expand_to_minutes(
        pod_frame,
        np.maximum(
            np.asarray(pod_start_s, dtype=np.int64)[kept_index], pod_node_start_s.to_numpy()
        ),
        np.asarray(pod_end_s, dtype=np.int64)[kept_index],
        window_start,
        window_end,
    )
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
