"""The ROI report: what spot, GPU sharing, autoscaling and waste elimination saved over a period,
against what baseline, and what the autoscaler's own cost takes back.

Pure: frames of daily facts in (see ``RoiFacts``), a JSON-ready dict out. Each component is one
function, its formula in its docstring and in the README:

    spot          = Σ on_demand_cost − Σ cost                over rows on spot capacity
    sharing       = Σ exclusive_cost − Σ cost                over pod rows shared by MIG, MPS or
                                                             time-slicing
    autoscaling   = Σ per (GPU model, capacity type) of
                    price × (peak_gpus × covered_hours − gpu_hours_run),
                    price = Σ cost / gpu_hours_run of that model and capacity type
    waste         = max(0, baseline_share × actual_cost − (idle_cost + unused_cost))

    baseline      = actual + spot + sharing + autoscaling + waste
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

DAYS_PER_YEAR = 365
MONTH_DAYS = DAYS_PER_YEAR / 12  # 30.42: monthly figures are a twelfth of the annual ones
SHARED_MODES = ("mig", "mps", "time-slicing")
SPOT = "spot"

# What the store reads for a period, all summed over its days:
# - pods: one row per (pod, node), POD_COLUMNS + POD_DETAILS, only the pods a recommendation may
#   concern (the store narrows them with the same thresholds; recommendations decide);
# - summary: SUMMARY_COLUMNS, per attribution and price key (node only for idle GPUs);
# - unlabelled: the pods without a team label that cost most (pod_uid, namespace, pod, cost_usd);
# - capacity: CAPACITY_COLUMNS, per (GPU model, capacity type).
FACT_SUMS = [
    "hours",
    "gpu_hours",
    "cost_usd",
    "on_demand_cost_usd",
    "exclusive_cost_usd",
    "measured_gpu_hours",
    "measured_cost_usd",
    "used_gpu_hours",
    "unused_cost_usd",
]
# Attribution and price key, shared by the pod rows and the summary.
_KEYS = ["namespace", "team", "gpu_model", "capacity_type", "provider", "sharing_mode", "is_idle"]
POD_KEYS = ["pod_uid", "node", *_KEYS]
POD_COLUMNS = [*POD_KEYS, "gpu_share", "max_utilization", *FACT_SUMS]
POD_DETAILS = ["pod", "interruptible"]
SUMMARY_KEYS = [*_KEYS, "node"]  # node: '' for pods, the node for its idle GPUs
SUMMARY_COLUMNS = [*SUMMARY_KEYS, "pod_days", *FACT_SUMS, "unmeasured_cost_usd"]
CAPACITY_KEYS = ["gpu_model", "capacity_type"]
CAPACITY_COLUMNS = [*CAPACITY_KEYS, "peak_gpus", "min_gpus", "peak_nodes", "gpu_hours", "minutes"]


@dataclass(frozen=True)
class RoiFacts:
    """What the report needs about a period (see the column lists above).

    ``covered_minutes``: minutes of the period that have cost data (the static cluster of the
    autoscaling baseline runs only then; un-materialized time claims nothing).
    """

    summary: pd.DataFrame
    pods: pd.DataFrame
    unlabelled: pd.DataFrame
    capacity: pd.DataFrame
    covered_minutes: int
    # GPU model → 1-year committed price per GPU-hour from the price books, where they have one
    # for the instance types and regions the cluster ran that model on demand.
    committed_prices: Mapping[str, float] = field(default_factory=dict)

    @property
    def covered_days(self) -> float:
        return self.covered_minutes / 1440


@dataclass(frozen=True)
class RoiSettings:
    investment_monthly_usd: float = 0.0  # the autoscaler's own monthly cost
    waste_baseline_share: float = 0.0  # share of GPU spend idle or unused before idle detection


def _money(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def spot_savings(summary: pd.DataFrame) -> dict:
    """On-demand cost − actual cost, over every row on spot capacity (pods and idle GPUs: the
    whole spot node is cheaper)."""
    spot = summary[summary["capacity_type"] == SPOT]
    on_demand, actual = spot["on_demand_cost_usd"].sum(), spot["cost_usd"].sum()
    return {
        "savings_usd": _money(on_demand - actual),
        "on_demand_cost_usd": _money(on_demand),
        "actual_cost_usd": _money(actual),
        "gpu_hours": _money(spot["gpu_hours"].sum()),
    }


def sharing_savings(summary: pd.DataFrame) -> dict:
    """Exclusive cost − actual cost, over pod rows shared by MIG, MPS or time-slicing: what the
    same pods would have cost holding whole GPUs alone (at the prices they ran at)."""
    shared = summary[~summary["is_idle"].astype(bool) & summary["sharing_mode"].isin(SHARED_MODES)]
    by_mode = {}
    for mode in SHARED_MODES:
        rows = shared[shared["sharing_mode"] == mode]
        by_mode[mode] = {
            "savings_usd": _money(rows["exclusive_cost_usd"].sum() - rows["cost_usd"].sum()),
            "pod_days": int(rows["pod_days"].sum()),
            "gpu_hours": _money(rows["gpu_hours"].sum()),
        }
    exclusive, actual = shared["exclusive_cost_usd"].sum(), shared["cost_usd"].sum()
    return {
        "savings_usd": _money(exclusive - actual),
        "exclusive_cost_usd": _money(exclusive),
        "actual_cost_usd": _money(actual),
        "gpu_hours": _money(shared["gpu_hours"].sum()),
        "by_mode": by_mode,
    }


def autoscaling_savings(facts: RoiFacts) -> dict:
    """Per (GPU model, capacity type): a static cluster sized for the period's peak GPU count,
    running every covered hour, at the period's average price of that model and capacity type,
    minus the capacity actually run:

        price × (peak_gpus × covered_hours − gpu_hours_run),  price = Σ cost / gpu_hours_run
    """
    covered_hours = facts.covered_minutes / 60
    cost_by_pool = facts.summary.groupby(CAPACITY_KEYS)["cost_usd"].sum()
    pools = []
    for row in facts.capacity.itertuples(index=False):
        cost = float(cost_by_pool.get((row.gpu_model, row.capacity_type), 0.0))
        price = cost / row.gpu_hours if row.gpu_hours > 0 else 0.0
        static_gpu_hours = row.peak_gpus * covered_hours
        pools.append(
            {
                "gpu_model": row.gpu_model,
                "capacity_type": row.capacity_type,
                "peak_gpus": float(row.peak_gpus),
                "peak_nodes": int(row.peak_nodes),
                "gpu_hours": float(row.gpu_hours),
                "static_gpu_hours": float(static_gpu_hours),
                "price_per_gpu_hour": price,
                "actual_cost_usd": cost,
                "static_cost_usd": price * static_gpu_hours,
                "savings_usd": _money(price * (static_gpu_hours - row.gpu_hours)),
            }
        )
    pools.sort(key=lambda pool: -pool["savings_usd"])
    return {
        "savings_usd": sum(p["savings_usd"] for p in pools),
        "static_cost_usd": sum(p["static_cost_usd"] for p in pools),
        "actual_cost_usd": sum(p["actual_cost_usd"] for p in pools),
        "covered_hours": covered_hours,
        "by_pool": pools,
    }


def waste_elimination(summary: pd.DataFrame, baseline_share: float) -> dict:
    """Against the stated baseline (``baseline_share`` of the actual GPU spend idle or unused
    without idle detection): max(0, baseline_share × actual − current waste), where current
    waste = idle GPUs' cost (held by no pod) + allocated but unused cost (pod cost ×
    (1 − utilization), where utilization is measured; unmeasured pod time counts as used)."""
    idle = summary["is_idle"].astype(bool)
    actual = summary["cost_usd"].sum()
    idle_cost = summary.loc[idle, "cost_usd"].sum()
    unused_cost = summary.loc[~idle, "unused_cost_usd"].sum()
    pod_gpu_hours = summary.loc[~idle, "gpu_hours"].sum()
    measured = summary.loc[~idle, "measured_gpu_hours"].sum()
    baseline_waste = baseline_share * actual
    waste = idle_cost + unused_cost
    return {
        "savings_usd": _money(max(0.0, baseline_waste - waste)),
        "baseline_share": baseline_share,
        "baseline_waste_usd": _money(baseline_waste),
        "waste_cost_usd": _money(waste),
        "idle_cost_usd": _money(idle_cost),
        "idle_gpu_hours": _money(summary.loc[idle, "gpu_hours"].sum()),
        "allocated_unused_cost_usd": _money(unused_cost),
        "utilization_measured_share": _money(measured / pod_gpu_hours) if pod_gpu_hours else 0.0,
        "mean_utilization": _money(summary.loc[~idle, "used_gpu_hours"].sum() / measured)
        if measured
        else None,
    }


@dataclass(frozen=True)
class Period:
    cluster: str
    start: datetime
    end: datetime
    team: str | None = None
    namespace: str | None = None
    notes: list[str] = field(default_factory=list)


def roi_metrics(actual: float, savings: float, covered_days: float, investment: float) -> dict:
    """Baseline, savings %, payback and the projections, from the period's totals.

    payback_days = investment_monthly / daily_savings (days of savings that pay one month of the
    autoscaler; None when nothing is saved or no investment is set);
    projected_annual_savings = daily_savings × 365 (gross), net = gross − 12 × investment.
    """
    baseline = actual + savings
    daily = savings / covered_days if covered_days > 0 else 0.0
    annual = daily * DAYS_PER_YEAR
    return {
        "baseline_cost_usd": baseline,
        "actual_cost_usd": actual,
        "total_savings_usd": savings,
        "savings_percent": 100 * savings / baseline if baseline > 0 else 0.0,
        "daily_savings_usd": daily,
        "monthly_savings_usd": annual / 12,
        "investment_monthly_usd": investment,
        "payback_days": investment / daily if investment > 0 and daily > 0 else None,
        "roi_percent": 100 * (annual / 12 - investment) / investment if investment > 0 else None,
        "projected_annual_savings_usd": annual,
        "projected_annual_net_savings_usd": annual - 12 * investment,
    }


def roi_report(
    facts: RoiFacts, period: Period, settings: RoiSettings, recommendations: list[dict]
) -> dict:
    """The whole report, JSON-ready and deterministic (the same facts give the same dict)."""
    summary = facts.summary
    cluster_wide = period.team is None and period.namespace is None
    components = {
        "spot": spot_savings(summary),
        "sharing": sharing_savings(summary),
        "autoscaling": autoscaling_savings(facts),
        "waste_elimination": waste_elimination(summary, settings.waste_baseline_share),
    }
    components["autoscaling"]["included"] = cluster_wide
    actual = float(summary["cost_usd"].sum())
    savings = sum(c["savings_usd"] for c in components.values())
    notes = list(period.notes)
    period_hours = (period.end - period.start).total_seconds() / 3600
    if facts.covered_minutes < period_hours * 60:
        notes.append(
            f"Only {facts.covered_minutes / 60:.1f} of the {period_hours:.1f} hours in this "
            "period have cost data; savings and projections use those hours."
        )
    if not cluster_wide:
        notes.append(
            "Filtered by team/namespace: idle GPUs and autoscaling are cluster-wide and left out."
        )
    if settings.waste_baseline_share == 0:
        notes.append(
            "Waste elimination claims nothing until GPU_COST_WASTE_BASELINE_SHARE states the "
            "share of GPU spend that was idle or unused before idle detection."
        )
    measured = components["waste_elimination"]["utilization_measured_share"]
    if measured < 1:
        notes.append(
            f"GPU utilization is measured for {measured:.0%} of pod GPU-hours; allocated but "
            "unused cost and utilization-based recommendations cover only that part."
        )
    return {
        "cluster": period.cluster,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "team": period.team,
        "namespace": period.namespace,
        "covered_hours": facts.covered_minutes / 60,
        "period_hours": period_hours,
        **roi_metrics(actual, savings, facts.covered_days, settings.investment_monthly_usd),
        "savings": components,
        "recommendations": recommendations,
        "recommended_monthly_savings_usd": sum(
            r["estimated_monthly_savings_usd"] for r in recommendations
        ),
        "notes": notes,
    }


HEADLINE = [
    "baseline_cost_usd",
    "actual_cost_usd",
    "total_savings_usd",
    "savings_percent",
    "monthly_savings_usd",
    "projected_annual_savings_usd",
    "recommended_monthly_savings_usd",
]


def headline_figures(report: dict) -> dict[str, float]:
    """The numeric figures the Dagster UI plots across days (money in cents, others to 0.001;
    the stored report keeps them exact)."""
    figures = {name: float(report[name]) for name in HEADLINE}
    for name, component in report["savings"].items():
        figures[f"{name}_savings_usd"] = float(component["savings_usd"])
    figures["idle_cost_usd"] = float(report["savings"]["waste_elimination"]["idle_cost_usd"])
    figures["covered_hours"] = float(report["covered_hours"])
    if report["payback_days"] is not None:
        figures["payback_days"] = float(report["payback_days"])
    return {
        name: round(value, 2 if name.endswith("_usd") else 3) for name, value in figures.items()
    }


def _usd(value: float) -> str:
    return f"${value:,.2f}"


COMPONENT_TITLES = {
    "spot": "Spot instances",
    "sharing": "GPU sharing (MIG/MPS/time-slicing)",
    "autoscaling": "Autoscaling",
    "waste_elimination": "Waste elimination",
}


def report_markdown(report: dict) -> str:
    """The report as markdown tables (the Dagster UI shows it with the materialization)."""
    payback = report["payback_days"]
    lines = [
        f"**ROI** — cluster `{report['cluster']}`, {report['start']} → {report['end']} "
        f"({report['covered_hours']:.1f} h with data)",
        "",
        "| savings | USD |",
        "|---|---:|",
        *(
            f"| {title} | {_usd(report['savings'][name]['savings_usd'])} |"
            for name, title in COMPONENT_TITLES.items()
        ),
        f"| **Total savings** | **{_usd(report['total_savings_usd'])}** |",
        "",
        "| ROI | value |",
        "|---|---:|",
        f"| Baseline cost | {_usd(report['baseline_cost_usd'])} |",
        f"| Actual cost | {_usd(report['actual_cost_usd'])} |",
        f"| Savings | {report['savings_percent']:.1f} % |",
        f"| Payback | {'n/a' if payback is None else f'{payback:.1f} days'} |",
        f"| Projected annual savings | {_usd(report['projected_annual_savings_usd'])} |",
    ]
    if report["recommendations"]:
        lines += ["", "| recommendation | est. monthly saving |", "|---|---:|"]
        lines += [
            f"| {r['title']} | {_usd(r['estimated_monthly_savings_usd'])} |"
            for r in report["recommendations"]
        ]
    return "\n".join(lines)
