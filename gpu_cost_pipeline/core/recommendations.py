"""What to do next, each with its estimated monthly saving and the evidence behind it.

Pure: the period's ``RoiFacts`` in, plain dicts out. A saving over the period becomes monthly as
``saving × MONTH_DAYS / covered_days`` (covered days: the days of the period with cost data).
Kinds, and what each saves:

- ``idle_gpus``: nodes whose GPUs sat held by no pod for at least ``min_hours`` GPU-hours; their
  idle cost.
- ``gpu_sharing``: single whole-GPU pods, not idle, whose highest measured utilization fits a
  MIG slice (g/7 of the compute) or a time-slicing replica (1/2, 1/4); measured cost × (1 −
  slice share).
- ``underutilized_gpus``: pods whose mean measured utilization is below the threshold for at
  least ``min_hours`` (and that no slice fits); their allocated but unused cost,
  cost × (1 − utilization).
- ``spot_candidates``: pods on on-demand capacity labelled interruptible; cost − GPU-hours ×
  spot price (seen in the period for that provider and model, else estimated).
- ``reserve_baseline``: the fewest on-demand GPUs of a model that ran in every covered minute,
  over at least a day; GPUs × 730 h × (on-demand price − reserved price).
- ``unlabelled_team``: cost with no team label (saves nothing itself: it makes cost owned).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gpu_cost_pipeline.core.gpus import GPU_MODELS
from gpu_cost_pipeline.core.pricing import EstimateSettings, capacity_price_ratio
from gpu_cost_pipeline.core.roi import MONTH_DAYS, SPOT, RoiFacts
from gpu_cost_pipeline.core.sharing import MigConvention, MigProfile

MAX_SUBJECTS = 20  # pods/nodes/teams listed per recommendation (counts say how many in all)
MIG_CAPABLE_MEMORY_GB = {name: gpu.memory_gb for name, gpu in GPU_MODELS.items() if gpu.mig_capable}
MIG_SLICES = (1, 2, 3, 4)  # compute slices of the profiles smaller than a whole GPU
_MIG_MEMORY_SLICES = {1: 1, 2: 2, 3: 4, 4: 4}  # memory eighths each profile gets
TIME_SLICING_REPLICAS = (4, 2)
# The largest share a slice recommendation can offer (4g = 4/7): a pod peaking above it fits none.
LARGEST_SLICE = max(max(MIG_SLICES) / 7, 1 / min(TIME_SLICING_REPLICAS))
HOURS_PER_MONTH = MONTH_DAYS * 24
RESERVED_DISCOUNT_ESTIMATE = 0.30  # the low end of the seed's "typical 30-50 % vs on-demand"
RESERVE_MIN_COVERED_MINUTES = 1440  # a steady baseline needs at least a day of data
TRUE_LABEL_VALUES = ("true", "yes", "1")
ON_DEMAND = "on-demand"


@dataclass(frozen=True)
class RecommendationSettings:
    idle_utilization: float = 0.05  # below: the GPU is idle
    underutilized_utilization: float = 0.30  # below: the GPU is underutilized
    min_hours: float = 1.0  # for this long at least (measured hours; idle GPU-hours for nodes)
    mig_convention: str = "compute"


def reserved_price_per_gpu_hour(
    gpu_model: str, on_demand_price: float, committed_prices: Mapping[str, float]
) -> tuple[float, str]:
    """The reserved (1-year commitment) price per GPU-hour and where it comes from: the price
    books' committed-1yr price where they have one, else an estimate from the on-demand price."""
    committed = committed_prices.get(gpu_model)
    if committed is not None and committed > 0:
        return float(committed), "price book"
    return on_demand_price * (1 - RESERVED_DISCOUNT_ESTIMATE), "estimate"


def _pod_name(pods: pd.DataFrame) -> pd.Series:
    name = pods["pod"].where(pods["pod"].fillna("") != "", pods["pod_uid"])
    return pods["namespace"] + "/" + name


def _monthly(facts: RoiFacts) -> float:
    return MONTH_DAYS / facts.covered_days if facts.covered_minutes else 0.0


def assess_pods(pods: pd.DataFrame, settings: RecommendationSettings) -> pd.DataFrame:
    """Every (pod, node) row with its measured utilization and, vectorized: the smallest slice
    that fits its highest utilization (name, share), whether it is idle or underutilized, what
    to do, and the cost at stake."""
    pods = pods[~pods["is_idle"].astype(bool)].copy()
    share = pods["gpu_share"].to_numpy(dtype="float64")
    measured = pods["measured_gpu_hours"].to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        utilization = np.where(measured > 0, pods["used_gpu_hours"] / measured, np.nan)
        measured_hours = np.where(share > 0, measured / share, 0.0)
    peak = pods["max_utilization"].to_numpy(dtype="float64")
    long_enough = measured_hours >= settings.min_hours

    # The smallest slice whose share of the GPU covers the highest utilization seen.
    fraction = np.ones(len(pods))
    slice_name = np.full(len(pods), "", dtype=object)
    whole_single = (
        (pods["sharing_mode"] == "exclusive").to_numpy() & (np.abs(share - 1) < 1e-9) & long_enough
    )
    memory = pods["gpu_model"].map(MIG_CAPABLE_MEMORY_GB).to_numpy(dtype="float64")
    mig_capable = ~np.isnan(memory)
    convention = MigConvention(settings.mig_convention)
    for g in reversed(MIG_SLICES):  # largest first, so the smallest that fits wins
        fits = whole_single & mig_capable & (peak <= g / 7)
        for gpu_memory in np.unique(memory[fits]):
            rows = fits & (memory == gpu_memory)
            profile_gb = round(gpu_memory * _MIG_MEMORY_SLICES[g] / 8)
            fraction[rows] = MigProfile(g, profile_gb).fraction(int(gpu_memory), convention)
            slice_name[rows] = f"MIG {g}g.{profile_gb}gb"
    for replicas in reversed(TIME_SLICING_REPLICAS):
        fits = whole_single & ~mig_capable & (peak <= 1 / replicas)
        fraction[fits] = 1 / replicas
        slice_name[fits] = f"time-slicing, {replicas} replicas"
    idle = long_enough & (utilization < settings.idle_utilization)
    fits_slice = (slice_name != "") & ~idle  # an idle pod should stop, not shrink
    slice_name[~fits_slice] = ""
    underutilized = long_enough & (utilization < settings.underutilized_utilization)
    kind = np.select([idle, underutilized], ["idle", "underutilized"], "")
    action = np.select(
        [fits_slice, idle, underutilized],
        [
            "move to " + slice_name.astype(str),
            "stop it or scale to zero",
            "share the GPU or request fewer",
        ],
        "",
    )
    measured_cost = pods["measured_cost_usd"].to_numpy(dtype="float64")
    return pods.assign(
        name=_pod_name(pods),
        utilization=utilization,
        measured_hours=measured_hours,
        gpus=np.where(pods["hours"] > 0, pods["gpu_hours"] / pods["hours"], share),
        kind=kind,
        slice=slice_name,
        slice_fraction=fraction,
        fits_slice=fits_slice,
        action=action,
        wasted_usd=pods["unused_cost_usd"].to_numpy(dtype="float64"),
        slice_saving_usd=np.where(fits_slice, measured_cost * (1 - fraction), 0.0),
    )


def idle_node_gpus(summary: pd.DataFrame, settings: RecommendationSettings) -> pd.DataFrame:
    """Nodes whose GPUs sat held by no pod for at least ``min_hours`` GPU-hours."""
    idle = summary[summary["is_idle"].astype(bool)]
    idle = idle.groupby(["node", "gpu_model", "capacity_type"], as_index=False)[
        ["hours", "gpu_hours", "cost_usd"]
    ].sum()
    idle = idle[idle["gpu_hours"] >= settings.min_hours]
    return idle.assign(
        gpus=np.where(idle["hours"] > 0, idle["gpu_hours"] / idle["hours"], 0.0),
        wasted_usd=idle["cost_usd"],
    )


def _top(values: pd.Series, weights: pd.Series) -> list[str]:
    ranked = weights.groupby(values.to_numpy()).sum().sort_values(ascending=False)
    return [str(v) for v in ranked.index[:MAX_SUBJECTS]]


def _recommendation(
    kind: str,
    title: str,
    action: str,
    period_savings: float,
    monthly: float,
    rows: pd.DataFrame,
    weights: pd.Series,
    evidence: dict,
) -> dict:
    subjects = {}
    for column, key in (("name", "pods"), ("node", "nodes"), ("team", "teams")):
        if column in rows and not rows.empty:
            values = rows[column].fillna("").astype(str)
            present = values != ""
            subjects[key] = _top(values[present], weights[present])
        else:
            subjects[key] = []
    return {
        "kind": kind,
        "title": title,
        "action": action,
        "estimated_monthly_savings_usd": float(period_savings * monthly),
        "period_savings_usd": float(period_savings),
        "evidence": evidence,
        **subjects,
    }


def _spot_prices(summary: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Spot price per GPU-hour seen in the period, per (provider, GPU model)."""
    spot = summary[summary["capacity_type"] == SPOT].groupby(["provider", "gpu_model"])
    sums = spot[["cost_usd", "gpu_hours"]].sum()
    sums = sums[sums["gpu_hours"] > 0]
    return (sums["cost_usd"] / sums["gpu_hours"]).to_dict()


def recommend(facts: RoiFacts, settings: RecommendationSettings) -> list[dict]:
    """Every recommendation with a saving or an owner to find, largest monthly saving first."""
    monthly = _monthly(facts)
    summary = facts.summary
    pods = assess_pods(facts.pods, settings)
    found: list[dict] = []

    nodes = idle_node_gpus(summary, settings)
    if not nodes.empty:
        found.append(
            _recommendation(
                "idle_gpus",
                f"{len(nodes)} nodes had GPUs no pod held",
                "Scale these nodes down or pack their pods onto fewer nodes "
                "(consolidation); the autoscaler's idle GPU detection removes them.",
                nodes["wasted_usd"].sum(),
                monthly,
                nodes,
                nodes["wasted_usd"],
                {
                    "idle_gpu_hours": float(nodes["gpu_hours"].sum()),
                    "idle_cost_usd": float(nodes["wasted_usd"].sum()),
                    "nodes": len(nodes),
                    "min_hours": settings.min_hours,
                },
            )
        )

    sliced = pods[pods["fits_slice"]]
    if not sliced.empty:
        found.append(
            _recommendation(
                "gpu_sharing",
                f"{len(sliced)} whole-GPU pods would fit a MIG slice or time-slicing",
                "Run them on the slice named per pod (their highest measured utilization fits "
                "it): " + ", ".join(sorted(sliced["slice"].unique())) + ".",
                sliced["slice_saving_usd"].sum(),
                monthly,
                sliced,
                sliced["slice_saving_usd"],
                {
                    "pods": len(sliced),
                    "measured_cost_usd": float(sliced["measured_cost_usd"].sum()),
                    "max_utilization": float(sliced["max_utilization"].max()),
                    "by_slice": sliced.groupby("slice")["slice_saving_usd"].sum().to_dict(),
                },
            )
        )

    low = pods[(pods["kind"] != "") & ~pods["fits_slice"]]
    if not low.empty:
        found.append(
            _recommendation(
                "underutilized_gpus",
                f"{len(low)} pods used their GPUs below "
                f"{settings.underutilized_utilization:.0%} on average",
                "Stop the idle ones; share or shrink the others (see `gpu-autoscaler optimize`).",
                low["wasted_usd"].sum(),
                monthly,
                low,
                low["wasted_usd"],
                {
                    "pods": len(low),
                    "idle_pods": int((low["kind"] == "idle").sum()),
                    "allocated_unused_cost_usd": float(low["wasted_usd"].sum()),
                    "mean_utilization": float(
                        low["used_gpu_hours"].sum() / low["measured_gpu_hours"].sum()
                    ),
                    "threshold": settings.underutilized_utilization,
                    "min_hours": settings.min_hours,
                },
            )
        )

    found += _spot_candidates(pods, summary, monthly)
    found += _reserve_baseline(facts)
    found += _unlabelled_team(facts, monthly)
    found.sort(key=lambda r: (-r["estimated_monthly_savings_usd"], r["kind"]))
    return found


def _unlabelled_team(facts: RoiFacts, monthly: float) -> list[dict]:
    pod_rows = facts.summary[~facts.summary["is_idle"].astype(bool)]
    unlabelled = pod_rows[pod_rows["team"] == ""]
    if unlabelled.empty:
        return []
    cost = float(unlabelled["cost_usd"].sum())
    top = facts.unlabelled.assign(name=_pod_name(facts.unlabelled), team="")
    return [
        {
            **_recommendation(
                "unlabelled_team",
                f"{int(unlabelled['pod_days'].sum())} pod-days carry no team label",
                "Add the `team` label to these pods (or their namespaces' workloads) so "
                "their cost has an owner and budgets see it.",
                0.0,
                monthly,
                top,
                top["cost_usd"],
                {
                    "unattributed_cost_usd": cost,
                    "unattributed_monthly_usd": cost * monthly,
                    "share_of_pod_cost": cost / float(pod_rows["cost_usd"].sum())
                    if pod_rows["cost_usd"].sum() > 0
                    else 0.0,
                    "pod_days": int(unlabelled["pod_days"].sum()),
                },
            ),
            "namespaces": _top(unlabelled["namespace"], unlabelled["cost_usd"]),
        }
    ]


def _spot_candidates(pods: pd.DataFrame, summary: pd.DataFrame, monthly: float) -> list[dict]:
    candidates = pods[
        pods["interruptible"].fillna(False).astype(bool) & (pods["capacity_type"] != SPOT)
    ]
    if candidates.empty:
        return []
    seen = _spot_prices(summary)
    estimates = EstimateSettings()
    spot_price, sources = [], []
    for row in candidates.itertuples(index=False):
        price = seen.get((row.provider, row.gpu_model))
        if price is None:
            on_demand = row.on_demand_cost_usd / row.gpu_hours if row.gpu_hours else 0.0
            price = on_demand * capacity_price_ratio(row.provider, SPOT, estimates)
        spot_price.append(price)
        sources.append("seen" if (row.provider, row.gpu_model) in seen else "estimate")
    candidates = candidates.assign(
        spot_price=spot_price,
        saving=(candidates["cost_usd"] - candidates["gpu_hours"] * np.asarray(spot_price)).clip(
            lower=0
        ),
    )
    return [
        _recommendation(
            "spot_candidates",
            f"{len(candidates)} interruptible pods ran on on-demand capacity",
            "Schedule them on spot nodes (they are labelled as tolerating interruption).",
            candidates["saving"].sum(),
            monthly,
            candidates,
            candidates["saving"],
            {
                "pods": len(candidates),
                "on_demand_cost_usd": float(candidates["cost_usd"].sum()),
                "spot_price_source": "seen in the period"
                if set(sources) == {"seen"}
                else "estimated from typical spot discounts where not seen",
            },
        )
    ]


def _reserve_baseline(facts: RoiFacts) -> list[dict]:
    if facts.covered_minutes < RESERVE_MIN_COVERED_MINUTES:
        return []
    steady = facts.capacity[
        (facts.capacity["capacity_type"] == ON_DEMAND) & (facts.capacity["min_gpus"] > 0)
    ]
    if steady.empty:
        return []
    on_demand = facts.summary[facts.summary["capacity_type"] == ON_DEMAND]
    cost = on_demand.groupby("gpu_model")["cost_usd"].sum()
    pools, saving = [], 0.0
    for row in steady.itertuples(index=False):
        on_demand = float(cost.get(row.gpu_model, 0.0)) / row.gpu_hours if row.gpu_hours else 0.0
        reserved, source = reserved_price_per_gpu_hour(
            row.gpu_model, on_demand, facts.committed_prices
        )
        monthly_saving = row.min_gpus * HOURS_PER_MONTH * (on_demand - reserved)
        saving += monthly_saving
        pools.append(
            {
                "gpu_model": row.gpu_model,
                "steady_gpus": float(row.min_gpus),
                "peak_gpus": float(row.peak_gpus),
                "on_demand_price_per_gpu_hour": on_demand,
                "reserved_price_per_gpu_hour": reserved,
                "reserved_price_source": source,
                "monthly_savings_usd": monthly_saving,
            }
        )
    return [
        {
            "kind": "reserve_baseline",
            "title": "A steady on-demand baseline of "
            + ", ".join(f"{p['steady_gpus']:g} {p['gpu_model']}" for p in pools)
            + " GPUs ran all period",
            "action": "Reserve that baseline (1-year reserved instances or a savings plan); "
            "keep the rest on demand or spot.",
            "estimated_monthly_savings_usd": saving,
            "period_savings_usd": saving / _monthly(facts),
            "evidence": {"covered_days": facts.covered_days, "pools": pools},
            "pods": [],
            "nodes": [],
            "teams": [],
        }
    ]


def optimize_rows(facts: RoiFacts, settings: RecommendationSettings) -> pd.DataFrame:
    """Idle and underutilized GPUs for `gpu-autoscaler optimize`, worst (most cost wasted)
    first: GPUs no pod held (per node) and pods below the utilization thresholds."""
    monthly = _monthly(facts)
    columns = [
        "kind",
        "pod",
        "namespace",
        "team",
        "node",
        "gpu_model",
        "capacity_type",
        "gpus",
        "utilization",
        "hours",
        "cost_usd",
        "wasted_usd",
        "monthly_wasted_usd",
        "action",
    ]
    pods = assess_pods(facts.pods, settings)
    pods = pods[pods["kind"] != ""].assign(pod=lambda p: p["name"])
    nodes = idle_node_gpus(facts.summary, settings).assign(
        kind="unallocated",
        pod="",
        namespace="",
        team="",
        utilization=np.nan,
        action="consolidate or scale down",
    )
    found = [frame for frame in (nodes, pods) if not frame.empty]
    if not found:
        return pd.DataFrame(columns=columns)
    rows = pd.concat(found, ignore_index=True)
    rows["monthly_wasted_usd"] = rows["wasted_usd"] * monthly
    rows = rows.sort_values(["wasted_usd", "node", "pod"], ascending=[False, True, True])
    return rows[columns].reset_index(drop=True)
