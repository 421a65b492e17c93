"""Scopes over cost rows, and the CostAttribution status.

Cost rows arrive grouped (a few thousand rows for a month, see ``store/budgets.py``): one row
per combination of attribution columns, GPU model, capacity type and *label match signature* —
a string of 0/1, one character per distinct label selector among the specs, saying whether the
row's pod carries those labels. Each scope then becomes a boolean mask built from a handful of
vectorized comparisons (cached per column and value set), and every figure a status needs is a
masked sum or a ``bincount``: a thousand scopes over a month cost milliseconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from gpu_cost_pipeline.core.specs import Attribution, Scope

SCOPE_COLUMNS = ("namespace", "team", "project", "experiment_id", "cost_center")
BREAKDOWN_COLUMNS = {
    "namespace": "byNamespace",
    "team": "byTeam",
    "project": "byProject",
    "gpu_model": "byGPUModel",
    "capacity_type": "byCapacityType",
}
LABEL_MATCH = "label_match"
UNLABELLED = "(none)"
IDLE = "(idle GPUs)"


def label_selectors(scopes: list[Scope]) -> list[str]:
    """The distinct label selectors of these scopes, as JSON objects for jsonb ``@>``."""
    distinct = {scope.labels for scope in scopes if scope.labels}
    return [json.dumps(dict(labels), sort_keys=True) for labels in sorted(distinct)]


@dataclass(frozen=True)
class Grouping:
    """How to group cost rows for a set of scopes, so the frame stays small: columns shown in a
    breakdown are kept in full; the other scope columns keep only the values some scope names
    (every other value becomes ''); columns no scope uses are dropped (''); label selectors
    become one signature per row: the 1-based positions of the selectors its pod matches."""

    keep: tuple[str, ...]
    values: dict[str, tuple[str, ...]]
    selectors: list[str]


def grouping_for(scopes: list[Scope], keep: tuple[str, ...]) -> Grouping:
    values: dict[str, set[str]] = {}
    for scope in scopes:
        for column, wanted in scope.columns().items():
            values.setdefault(column, set()).update(wanted)
    return Grouping(
        keep=keep,
        values={c: tuple(sorted(v)) for c, v in values.items() if c not in keep},
        selectors=label_selectors(scopes),
    )


def money(value: float) -> float:
    """Dollar figures in statuses: cents are plenty and keep the objects readable."""
    return round(float(value), 2)


class ScopedCosts:
    """A grouped cost frame and the masks of scopes over it."""

    def __init__(self, frame: pd.DataFrame, selectors: list[str]) -> None:
        self.frame = frame.reset_index(drop=True)
        self.selectors = {selector: position for position, selector in enumerate(selectors)}
        self._codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._masks: dict[tuple, np.ndarray] = {}
        self._measures: dict[str, np.ndarray] = {}
        self._summaries: dict[tuple, dict] = {}
        self.all = np.ones(len(self.frame), dtype=bool)

    def _factorized(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        if column not in self._codes:
            codes, uniques = pd.factorize(self.frame[column], use_na_sentinel=False)
            self._codes[column] = (codes, np.asarray(uniques, dtype=object))
        return self._codes[column]

    def measure(self, name: str) -> np.ndarray:
        if name not in self._measures:
            self._measures[name] = self.frame[name].to_numpy(dtype="float64", na_value=0.0)
        return self._measures[name]

    def _column_mask(self, column: str, values: tuple[str, ...]) -> np.ndarray:
        key = (column, values)
        if key not in self._masks:
            codes, uniques = self._factorized(column)
            self._masks[key] = np.isin(codes, np.flatnonzero(np.isin(uniques, list(values))))
        return self._masks[key]

    def _label_mask(self, labels: tuple[tuple[str, str], ...]) -> np.ndarray:
        key = ("labels", labels)
        if key not in self._masks:
            position = str(self.selectors[json.dumps(dict(labels), sort_keys=True)] + 1)
            codes, signatures = self._factorized(LABEL_MATCH)
            matches = np.array([position in str(s or "").split(",") for s in signatures], bool)
            self._masks[key] = matches[codes] if len(codes) else np.zeros(0, bool)
        return self._masks[key]

    def summary(self, scope: Scope, measures: tuple[str, ...], breakdowns: dict[str, str]) -> dict:
        """Totals of ``measures`` and breakdowns (title → {value: cost}) for a scope, computed
        once per distinct scope: a thousand budgets share far fewer scopes."""
        key = ("summary", scope, measures, tuple(breakdowns.items()))
        if key not in self._summaries:
            mask = self.mask(scope)
            self._summaries[key] = {
                **{measure: self.total(mask, measure) for measure in measures},
                **{title: self.breakdown(mask, column) for column, title in breakdowns.items()},
            }
        return self._summaries[key]

    def mask(self, scope: Scope) -> np.ndarray:
        if scope.is_cluster:
            return self.all
        mask = self.all
        for column, values in scope.columns().items():
            mask = mask & self._column_mask(column, values)
        if scope.labels:
            mask = mask & self._label_mask(scope.labels)
        return mask

    def total(self, mask: np.ndarray, measure: str = "cost_usd") -> float:
        return float(self.measure(measure)[mask].sum())

    def breakdown(self, mask: np.ndarray, column: str, measure: str = "cost_usd") -> dict:
        """Cost per value of ``column`` within the mask, largest first (idle rows apart)."""
        codes, uniques = self._factorized(column)
        sums = np.bincount(codes[mask], weights=self.measure(measure)[mask], minlength=len(uniques))
        idle = self._idle_share(mask, column, measure)
        named = {
            (str(value) or UNLABELLED): money(total)
            for value, total in zip(uniques, sums, strict=True)
            if total
        }
        if idle:
            named[UNLABELLED] = money(named.get(UNLABELLED, 0.0) - idle)
            named = {k: v for k, v in named.items() if v}
            named[IDLE] = money(idle)
        return dict(sorted(named.items(), key=lambda item: -item[1]))

    def _idle_share(self, mask: np.ndarray, column: str, measure: str) -> float:
        """Idle rows carry no attribution: shown as their own line in attribution columns."""
        if column not in SCOPE_COLUMNS or "is_idle" not in self.frame:
            return 0.0
        idle = self.frame["is_idle"].to_numpy(dtype=bool)
        return float(self.measure(measure)[mask & idle].sum())


@dataclass(frozen=True)
class AttributionWindows:
    """The periods a CostAttribution status reports, from the last minute with cost data."""

    last_minute: datetime  # start of the newest minute with cost rows
    month_start: datetime

    @property
    def data_end(self) -> datetime:
        return self.last_minute + timedelta(minutes=1)

    @property
    def day_start(self) -> datetime:
        """The last 24 clock hours, the current one so far."""
        return self.last_minute.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)

    def total_start(self, retention_days: int) -> datetime:
        """The last ``retention_days`` calendar days (UTC), today so far."""
        today = self.last_minute.replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=retention_days - 1)


def attribution_status(
    attribution: Attribution, costs: ScopedCosts, active: ScopedCosts, hour_costs: ScopedCosts
) -> dict:
    """The seed's status fields for one CostAttribution.

    ``costs`` holds the rollup rows since the earliest period any attribution needs, with
    per-period measure columns (``total_<days>d``, ``day``, ``month``); ``active`` holds the
    newest minute's rows and ``hour_costs`` the last 60 minutes' (both from the minute table).
    """
    scope = attribution.scope
    mask = costs.mask(scope)
    total_column = f"total_{attribution.spec.retentionDays}d"
    total = costs.total(mask, total_column)
    gpu_hours = costs.total(mask, f"{total_column}_gpu_hours")
    on_demand = costs.total(mask, f"{total_column}_on_demand")
    exclusive = costs.total(mask, f"{total_column}_exclusive")
    now_mask = active.mask(scope)
    pods_now = active.frame.loc[now_mask & ~_idle(active), "pods"].sum() if len(active.frame) else 0
    gpus_now = active.total(now_mask & ~_idle(active), "gpu_share") if len(active.frame) else 0.0
    return {
        "scope": scope.describe(),
        "totalCost": money(total),
        "dailyCost": money(costs.total(mask, "day")),
        "monthlyCost": money(costs.total(mask, "month")),
        "hourlyCost": money(hour_costs.total(hour_costs.mask(scope))),
        "activePods": int(pods_now),
        # Physical GPUs held (MIG slices and time-sliced replicas count as their share).
        "activeGPUs": math.floor(gpus_now + 0.5),
        "costPerGPUHour": money(total / gpu_hours) if gpu_hours > 0 else 0.0,
        "detailedBreakdown": {
            title: costs.breakdown(mask, column, total_column)
            for column, title in BREAKDOWN_COLUMNS.items()
        }
        | {"gpuHours": round(gpu_hours, 3), "activeGPUShare": round(gpus_now, 3)},
        "savings": {
            "onDemandBaseline": money(on_demand),
            "exclusiveBaseline": money(exclusive),
            "vsOnDemand": money(on_demand - total),
            "vsExclusive": money(exclusive - total),
        },
    }


def _idle(costs: ScopedCosts) -> np.ndarray:
    return costs.frame["is_idle"].to_numpy(dtype=bool)


def pod_in_scope(pod: dict, labels: dict, scope: Scope) -> bool:
    """Whether one pod (its attribution columns and labels) is inside the scope: the same rule
    as the masks, for a single pod."""
    if scope.is_cluster:
        return True
    if any(str(pod.get(column, "")) not in values for column, values in scope.columns().items()):
        return False
    return all(labels.get(key) == value for key, value in scope.labels)
