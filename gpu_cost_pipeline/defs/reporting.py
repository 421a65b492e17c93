"""Run metadata and log lines shared by the assets (numeric values, so the UI plots them)."""

import logging
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from gpu_cost_pipeline.core.costing import cost_problems, node_balance_error
from gpu_cost_pipeline.core.gpus import UNKNOWN_GPU_MODEL
from gpu_cost_pipeline.core.pricing import SOURCE_ESTIMATE
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
        self.unknown_model_nodes.update(
            nodes.loc[nodes["gpu_model"] == UNKNOWN_GPU_MODEL, "node"].unique()
        )
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


BALANCE_TOLERANCE = 1e-9  # relative: pods + idle must equal the node's GPU cost
COST_CHECKS = {
    "no_negative_cost": "No cost, on-demand or exclusive amount below zero.",
    "pods_plus_idle_equals_node_cost": "Per node-minute, pod rows + idle row = the node's GPU "
    f"cost (relative tolerance {BALANCE_TOLERANCE:g}).",
    "no_duplicate_pod_minute": "At most one row per (pod uid, minute) in the window.",
}


@dataclass
class CostTotals:
    """Sums and check findings over the chunks of one cost window."""

    rows: int = 0
    idle_rows: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    balance_error: float = 0.0
    problems: dict[str, int] = field(default_factory=dict)

    def add(self, costs: pd.DataFrame, nodes: pd.DataFrame, prices: pd.DataFrame) -> None:
        idle = costs["is_idle"]
        chunk = {
            "total_cost_usd": costs["cost_usd"].sum(),
            "on_demand_cost_usd": costs["on_demand_cost_usd"].sum(),
            "exclusive_cost_usd": costs["exclusive_cost_usd"].sum(),
            "gpu_hours": (costs["gpu_share"] * costs["seconds"]).sum() / 3600,
            "idle_cost_usd": costs.loc[idle, "cost_usd"].sum(),
            "estimated_cost_usd": costs.loc[
                costs["price_source"] == SOURCE_ESTIMATE, "cost_usd"
            ].sum(),
        }
        for name, value in chunk.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.rows += len(costs)
        self.idle_rows += int(idle.sum())
        self.balance_error = max(self.balance_error, node_balance_error(costs, nodes, prices))
        for name, found in cost_problems(costs).items():
            self.problems[name] = self.problems.get(name, 0) + found

    def metadata(self) -> dict[str, float | int]:
        total = self.sums.get("total_cost_usd", 0.0)
        return {
            "rows": self.rows,
            "idle_rows": self.idle_rows,
            **{name: self.sums.get(name, 0.0) for name in _COST_SUMS},
            "idle_share": self.sums.get("idle_cost_usd", 0.0) / total if total else 0.0,
            "estimated_price_share": self.sums.get("estimated_cost_usd", 0.0) / total
            if total
            else 0.0,
        }

    def check_results(self) -> list[dg.AssetCheckResult]:
        """One result per COST_CHECKS entry: (passed, figure shown with it)."""
        negative = self.problems.get("negative_cost_rows", 0)
        duplicates = self.problems.get("duplicate_pod_minutes", 0)
        outcomes = {
            "no_negative_cost": (negative == 0, {"negative_rows": negative}),
            "pods_plus_idle_equals_node_cost": (
                self.balance_error <= BALANCE_TOLERANCE,
                {"max_relative_error": self.balance_error},
            ),
            "no_duplicate_pod_minute": (duplicates == 0, {"duplicate_rows": duplicates}),
        }
        return [
            dg.AssetCheckResult(check_name=name, passed=passed, metadata=metadata)
            for name, (passed, metadata) in outcomes.items()
        ]


_COST_SUMS = ("total_cost_usd", "on_demand_cost_usd", "exclusive_cost_usd", "gpu_hours")
