"""Run metadata and log lines shared by the assets (numeric values, so the UI plots them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from gpu_cost_pipeline.core.usage import ParseIssue
from gpu_cost_pipeline.core.window_usage import WindowUsage

MAX_LOGGED_ISSUES = 50


def log_issues(log: logging.Logger | logging.LoggerAdapter, issues: list[ParseIssue]) -> None:
    """One warning per distinct issue (chunks repeat node issues), capped."""
    distinct = list(dict.fromkeys(str(issue) for issue in issues))
    for line in distinct[:MAX_LOGGED_ISSUES]:
        log.warning(line)
    if len(distinct) > MAX_LOGGED_ISSUES:
        log.warning(f"... and {len(distinct) - MAX_LOGGED_ISSUES} more input problems")


@dataclass
class UsageTotals:
    pod_minutes: int = 0
    node_minutes: int = 0
    pods: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    gpu_hours_held: float = 0.0
    gpu_hours_capacity: float = 0.0
    unknown_model_nodes: set[str] = field(default_factory=set)
    pods_without_team: set[str] = field(default_factory=set)
    issues: list[ParseIssue] = field(default_factory=list)

    def add(self, usage: WindowUsage) -> None:
        pods, nodes = usage.pods, usage.nodes
        self.pod_minutes += len(pods)
        self.node_minutes += len(nodes)
        self.pods.update(pods["pod_uid"].unique())
        self.nodes.update(nodes["node"].unique())
        self.gpu_hours_held += float((pods["gpu_share"] * pods["seconds"]).sum() / 3600)
        self.gpu_hours_capacity += float((nodes["gpu_count"] * nodes["seconds"]).sum() / 3600)
        self.unknown_model_nodes.update(nodes.loc[nodes["gpu_model"] == "unknown", "node"].unique())
        self.pods_without_team.update(pods.loc[pods["team"] == "", "pod_uid"].unique())
        self.issues.extend(usage.issues)

    def _issue_count(self, kind: str) -> int:
        return len({str(i) for i in self.issues if i.kind == kind})

    def node_metadata(self) -> dict[str, float | int]:
        idle = 1 - self.gpu_hours_held / self.gpu_hours_capacity if self.gpu_hours_capacity else 0.0
        return {
            "rows": self.node_minutes,
            "nodes": len(self.nodes),
            "gpu_hours_capacity": self.gpu_hours_capacity,
            "idle_share": idle,
            "unknown_model_nodes": len(self.unknown_model_nodes),
            "node_input_problems": self._issue_count("Node"),
        }

    def pod_metadata(self) -> dict[str, float | int]:
        return {
            "rows": self.pod_minutes,
            "pods": len(self.pods),
            "gpu_hours": self.gpu_hours_held,
            "pods_without_team": len(self.pods_without_team),
            "pod_input_problems": self._issue_count("Pod"),
        }


def cost_metadata(totals: pd.Series, rows: int, idle_rows: int) -> dict[str, float | int]:
    total = float(totals.get("cost_usd", 0.0))
    return {
        "rows": rows,
        "idle_rows": idle_rows,
        "total_cost_usd": total,
        "on_demand_cost_usd": float(totals.get("on_demand_cost_usd", 0.0)),
        "exclusive_cost_usd": float(totals.get("exclusive_cost_usd", 0.0)),
        "gpu_hours": float(totals.get("gpu_hours", 0.0)),
        "idle_share": float(totals.get("idle_cost_usd", 0.0)) / total if total else 0.0,
        "estimated_price_share": float(totals.get("estimated_cost_usd", 0.0)) / total
        if total
        else 0.0,
    }
