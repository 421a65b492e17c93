"""Run metadata and log lines shared by the assets (numeric values, so the UI plots them).

Figures are per partition: a range run gives every minute partition its own minute's figures
(money in cents, hours to 0.01), so the UI's plots read the same whether a minute was written by
the live schedule or by a day-long backfill run.
"""

import logging
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
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


def _round(metadata: dict[str, float | int]) -> dict[str, float | int]:
    """Money to cents, hours to 0.01, shares and utilization to 0.001; counts as they are."""
    rounded: dict[str, float | int] = {}
    for name, value in metadata.items():
        if isinstance(value, int | np.integer):
            rounded[name] = int(value)
        elif name.endswith("_usd") or name.endswith("_hours"):
            rounded[name] = round(float(value), 2)
        else:
            rounded[name] = round(float(value), 3)
    return rounded


class PerMinute:
    """Per-minute sums of a window's chunks, turned into one metadata dict per partition."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []
        self.columns: list[str] = []

    def add(self, frame: pd.DataFrame, sums: dict[str, pd.Series]) -> None:
        self.columns = list(sums)
        if frame.empty:
            return
        grouped = pd.DataFrame(sums).groupby(frame["minute"]).sum()
        self.parts.append(grouped)

    def by_partition(self, keys: list[str], fmt: str, derive) -> dict[str, dict[str, float | int]]:
        """``derive(row)`` turns one minute's sums (a dict, zeros when nothing ran) into its
        metadata."""
        sums = pd.concat(self.parts) if self.parts else pd.DataFrame()
        if not sums.empty:  # per partition: minutes with the same key (e.g. a day's) add up
            sums = sums.groupby(pd.DatetimeIndex(sums.index).strftime(fmt)).sum()
        rows = sums.to_dict("index") if not sums.empty else {}
        nothing = dict.fromkeys(self.columns, 0)
        return {key: _round(derive(rows.get(key, nothing))) for key in keys}


def add_partition_metadata(
    context: dg.AssetExecutionContext, asset_key: str, by_partition: dict[str, dict]
) -> None:
    """Attach each partition's own metadata to its materialization.

    ``context.add_asset_metadata(..., partition_key=k)`` re-lists the run's partitions on every
    call (about 22 ms for a day of minutes here, half a minute per asset for 1,440 calls), so
    the partitions are checked once here and the step's accumulator is extended directly
    (Dagster 1.13's own code path for that call).
    """
    targeted = set(context.partition_keys)
    unknown = set(by_partition) - targeted
    if unknown:
        raise ValueError(f"metadata for partitions this run does not target: {sorted(unknown)[:3]}")
    step = context.op_execution_context._step_execution_context
    accumulator = step._metadata_accumulator
    key = dg.AssetKey.from_coercible(asset_key)
    for partition, metadata in by_partition.items():
        accumulator = accumulator.with_additional_asset_metadata(
            asset_key=key, metadata=metadata, partition_key=partition
        )
    step._metadata_accumulator = accumulator


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
    pod_minutes_by_minute: PerMinute = field(default_factory=PerMinute)
    node_minutes_by_minute: PerMinute = field(default_factory=PerMinute)

    def add(self, usage: WindowUsage) -> None:
        pods, nodes = usage.pods, usage.nodes
        held = pods["gpu_share"] * pods["seconds"] / 3600
        measured = pods["gpu_utilization"].notna()
        self.pod_minutes_by_minute.add(
            pods,
            {
                "rows": pd.Series(1, index=pods.index),
                "gpu_hours": held,
                "measured_gpu_hours": held.where(measured, 0.0),
                "used_gpu_hours": (held * pods["gpu_utilization"]).fillna(0.0),
                "no_team": (pods["team"] == "").astype(int),
            },
        )
        capacity = nodes["gpu_count"] * nodes["seconds"] / 3600
        self.node_minutes_by_minute.add(
            nodes,
            {
                "rows": pd.Series(1, index=nodes.index),
                "gpu_hours_capacity": capacity,
                "idle_gpu_hours": nodes["idle_gpus"] * nodes["seconds"] / 3600,
            },
        )
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

    def problem_counts(self) -> dict[str, dict[str, int]]:
        """Distinct input problems the run saw (not per minute: one count for the run)."""
        return {
            "gpu_node_usage": {
                "unknown_model_nodes": len(self.unknown_model_nodes),
                "node_input_problems": self._issue_count("Node"),
            },
            "gpu_pod_usage": {"pod_input_problems": self._issue_count("Pod")},
        }

    def node_partitions(self, keys: list[str], fmt: str) -> dict[str, dict]:
        return self.node_minutes_by_minute.by_partition(
            keys,
            fmt,
            lambda m: {
                "rows": int(m["rows"]),
                "gpu_hours_capacity": m["gpu_hours_capacity"],
                "idle_share": m["idle_gpu_hours"] / m["gpu_hours_capacity"]
                if m["gpu_hours_capacity"]
                else 0.0,
            },
        )

    def pod_partitions(self, keys: list[str], fmt: str) -> dict[str, dict]:
        return self.pod_minutes_by_minute.by_partition(
            keys,
            fmt,
            lambda m: {
                "rows": int(m["rows"]),
                "pods": int(m["rows"]),  # one row per pod in a minute
                "gpu_hours": m["gpu_hours"],
                "pods_without_team": int(m["no_team"]),
                "utilization_measured_share": m["measured_gpu_hours"] / m["gpu_hours"]
                if m["gpu_hours"]
                else 0.0,
                "mean_utilization": m["used_gpu_hours"] / m["measured_gpu_hours"]
                if m["measured_gpu_hours"]
                else 0.0,
            },
        )


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
    per_minute: PerMinute = field(default_factory=PerMinute)

    def add(self, costs: pd.DataFrame, nodes: pd.DataFrame, prices: pd.DataFrame) -> None:
        idle = costs["is_idle"]
        self.per_minute.add(
            costs,
            {
                "rows": pd.Series(1, index=costs.index),
                "idle_rows": idle.astype(int),
                "total_cost_usd": costs["cost_usd"],
                "on_demand_cost_usd": costs["on_demand_cost_usd"],
                "exclusive_cost_usd": costs["exclusive_cost_usd"],
                "gpu_hours": costs["gpu_hours"],
                "idle_cost_usd": costs["cost_usd"].where(idle, 0.0),
                "unused_cost_usd": costs["cost_usd"]
                .where(idle, costs["cost_usd"] * (1 - costs["gpu_utilization"]))
                .fillna(0.0),
                "estimated_cost_usd": costs["cost_usd"].where(
                    costs["price_source"] == SOURCE_ESTIMATE, 0.0
                ),
            },
        )
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

    def partitions(self, keys: list[str], fmt: str) -> dict[str, dict]:
        def derive(m: dict) -> dict:
            total = m["total_cost_usd"]
            return {
                "rows": int(m["rows"]),
                "idle_rows": int(m["idle_rows"]),
                **{name: m[name] for name in _COST_SUMS},
                "idle_cost_usd": m["idle_cost_usd"],
                "unused_cost_usd": m["unused_cost_usd"],
                "idle_share": m["idle_cost_usd"] / total if total else 0.0,
                "estimated_price_share": m["estimated_cost_usd"] / total if total else 0.0,
            }

        return self.per_minute.by_partition(keys, fmt, derive)

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
