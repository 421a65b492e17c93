"""Each savings component, the ROI metrics and each recommendation against values computed by
hand on small scenarios: a spot pod, a MIG pod, a time-sliced pod, a cluster that scaled from 2 to
10 nodes and back, an idle node, an unlabelled team."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from gpu_cost_pipeline.core.recommendations import (
    HOURS_PER_MONTH,
    RESERVED_DISCOUNT_ESTIMATE,
    RecommendationSettings,
    optimize_rows,
    recommend,
)
from gpu_cost_pipeline.core.roi import (
    CAPACITY_COLUMNS,
    MONTH_DAYS,
    Period,
    RoiFacts,
    RoiSettings,
    autoscaling_savings,
    roi_report,
    sharing_savings,
    spot_savings,
    waste_elimination,
)

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def usage_row(
    pod: str,
    *,
    hours: float,
    share: float = 1.0,
    price: float,
    on_demand: float | None = None,
    model: str = "A100-80GB",
    capacity: str = "on-demand",
    sharing: str = "exclusive",
    team: str = "nlp-team",
    utilization: float | None = None,
    peak: float | None = None,
    node: str = "node-a",
    idle: bool = False,
    interruptible: bool = False,
) -> dict:
    """One (pod, node) fact: ``hours`` wall time holding ``share`` GPUs at ``price``/GPU-hour."""
    gpu_hours = share * hours
    cost = price * gpu_hours
    whole = share if idle or sharing == "exclusive" else 1.0
    measured = utilization is not None
    return {
        "pod_uid": f"idle:{node}" if idle else f"uid-{pod}",
        "node": node,
        "namespace": "" if idle else "ml",
        "team": "" if idle else team,
        "gpu_model": model,
        "capacity_type": capacity,
        "provider": "aws",
        "region": "us-east-1",
        "sharing_mode": sharing,
        "is_idle": idle,
        "pod_days": 1,
        "gpu_share": share,
        "max_utilization": (peak if peak is not None else utilization) if measured else None,
        "hours": hours,
        "gpu_hours": gpu_hours,
        "cost_usd": cost,
        "on_demand_cost_usd": (on_demand if on_demand is not None else price) * gpu_hours,
        "exclusive_cost_usd": price * whole * hours,
        "measured_gpu_hours": gpu_hours if measured else 0.0,
        "measured_cost_usd": cost if measured else 0.0,
        "used_gpu_hours": gpu_hours * utilization if measured else 0.0,
        "unused_cost_usd": cost if idle else (cost * (1 - utilization) if measured else 0.0),
        "unmeasured_cost_usd": 0.0 if idle or measured else cost,
        "pod": "" if idle else pod,
        "interruptible": interruptible,
    }


def facts_of(rows: list[dict], capacity: list[dict] | None = None, minutes: int = 1440) -> RoiFacts:
    """The facts the store would read for these (pod, node) rows over ``minutes`` of data."""
    frame = pd.DataFrame(rows)
    summary = frame.assign(node=frame["node"].where(frame["is_idle"], ""))
    unlabelled = frame[~frame["is_idle"] & (frame["team"] == "")]
    return RoiFacts(
        summary=summary,
        pods=frame,
        unlabelled=unlabelled[["pod_uid", "namespace", "pod", "cost_usd"]],
        capacity=pd.DataFrame(capacity or [], columns=CAPACITY_COLUMNS),
        covered_minutes=minutes,
    )


def pool(
    model: str, capacity: str, peak: float, low: float, gpu_hours: float, minutes: int
) -> dict:
    return {
        "gpu_model": model,
        "capacity_type": capacity,
        "peak_gpus": peak,
        "min_gpus": low,
        "peak_nodes": int(peak),
        "gpu_hours": gpu_hours,
        "minutes": minutes,
    }


# --- savings components -----------------------------------------------------------------------


def test_a_spot_pod_saves_on_demand_minus_spot():
    # 10 h on one spot A100 at $1.20 instead of $4.00 on demand.
    spot = usage_row("train", hours=10, price=1.2, on_demand=4.0, capacity="spot")
    on_demand = usage_row("serve", hours=10, price=4.0)
    result = spot_savings(pd.DataFrame([spot, on_demand]))
    assert result["savings_usd"] == pytest.approx(10 * (4.0 - 1.2))
    assert result["on_demand_cost_usd"] == pytest.approx(40.0)
    assert result["actual_cost_usd"] == pytest.approx(12.0)


def test_idle_gpus_on_a_spot_node_count_as_spot_savings_too():
    idle = usage_row("", hours=2, share=3, price=1.2, on_demand=4.0, capacity="spot", idle=True)
    assert spot_savings(pd.DataFrame([idle]))["savings_usd"] == pytest.approx(2 * 3 * (4.0 - 1.2))


def test_a_mig_pod_and_a_time_sliced_pod_save_exclusive_minus_shared():
    # A 1g slice (1/7 of a $3.50 A100-40GB) for 7 h; a quarter of a $0.80 L4 for 10 h.
    mig = usage_row("mig", hours=7, share=1 / 7, price=3.5, model="A100-40GB", sharing="mig")
    sliced = usage_row("ts", hours=10, share=0.25, price=0.8, model="L4", sharing="time-slicing")
    whole = usage_row("whole", hours=5, price=4.0)
    result = sharing_savings(pd.DataFrame([mig, sliced, whole]))
    assert result["by_mode"]["mig"]["savings_usd"] == pytest.approx(3.5 * 7 - 3.5 * 7 / 7)
    assert result["by_mode"]["time-slicing"]["savings_usd"] == pytest.approx(0.8 * 10 * 0.75)
    assert result["by_mode"]["mps"]["savings_usd"] == 0
    assert result["savings_usd"] == pytest.approx(21.0 + 6.0)
    assert result["by_mode"]["mig"]["pod_days"] == 1


def test_a_cluster_that_scaled_from_2_to_10_nodes_and_back():
    # One-GPU H100 nodes at $2/GPU-hour: 2 nodes for 10 h, 10 for 4 h, 2 for 10 h.
    gpu_hours = 2 * 10 + 10 * 4 + 2 * 10
    rows = [usage_row("p", hours=gpu_hours, price=2.0, model="H100-80GB")]
    facts = facts_of(
        rows, [pool("H100-80GB", "on-demand", 10, 2, gpu_hours, 24 * 60)], minutes=24 * 60
    )
    result = autoscaling_savings(facts)
    # A static cluster of 10 GPUs for the 24 h, at the $2 paid, minus the 80 GPU-hours run.
    assert result["savings_usd"] == pytest.approx(2.0 * (10 * 24 - 80))
    assert result["static_cost_usd"] == pytest.approx(480.0)
    assert result["actual_cost_usd"] == pytest.approx(160.0)
    [h100] = result["by_pool"]
    assert h100["peak_gpus"] == 10 and h100["static_gpu_hours"] == pytest.approx(240.0)


def test_autoscaling_counts_only_covered_hours():
    # Same pool, but only 12 of the day's hours have data: the static cluster runs those only.
    rows = [usage_row("p", hours=24, price=2.0)]
    facts = facts_of(rows, [pool("A100-80GB", "on-demand", 4, 1, 24, 720)], minutes=720)
    assert autoscaling_savings(facts)["savings_usd"] == pytest.approx(2.0 * (4 * 12 - 24))


def test_waste_elimination_against_the_stated_baseline():
    # $100 of spend: an idle node's GPUs cost $10, a pod at 40 % utilization cost $50 (so $30
    # allocated but unused), an unmeasured pod $40 counts as used.
    idle = usage_row("", hours=5, price=2.0, idle=True)
    measured = usage_row("m", hours=25, price=2.0, utilization=0.4)
    unmeasured = usage_row("u", hours=20, price=2.0)
    usage = pd.DataFrame([idle, measured, unmeasured])
    result = waste_elimination(usage, baseline_share=0.5)
    assert result["waste_cost_usd"] == pytest.approx(10 + 30)
    assert result["savings_usd"] == pytest.approx(0.5 * 100 - 40)
    assert result["allocated_unused_cost_usd"] == pytest.approx(30.0)
    assert result["utilization_measured_share"] == pytest.approx(25 / 45)
    assert result["mean_utilization"] == pytest.approx(0.4)
    # A baseline below the current waste claims nothing rather than a negative saving.
    assert waste_elimination(usage, baseline_share=0.1)["savings_usd"] == 0


def test_roi_metrics_payback_and_projections():
    # One day: $28 spot savings on $12 actual; the autoscaler costs $300 a month.
    spot = usage_row("train", hours=10, price=1.2, on_demand=4.0, capacity="spot")
    # Its 10 GPU-hours as a steady 10/24 GPU, so autoscaling saved nothing.
    facts = facts_of([spot], [pool("A100-80GB", "spot", 10 / 24, 10 / 24, 10, 1440)])
    report = roi_report(facts, Period("c", DAY, DAY + timedelta(days=1)), RoiSettings(300.0), [])
    assert report["actual_cost_usd"] == pytest.approx(12.0)
    assert report["total_savings_usd"] == pytest.approx(28.0)
    assert report["baseline_cost_usd"] == pytest.approx(40.0)
    assert report["savings_percent"] == pytest.approx(70.0)
    assert report["payback_days"] == pytest.approx(300 / 28)
    assert report["projected_annual_savings_usd"] == pytest.approx(28 * 365)
    assert report["projected_annual_net_savings_usd"] == pytest.approx(28 * 365 - 12 * 300)
    assert report["monthly_savings_usd"] == pytest.approx(28 * MONTH_DAYS)
    assert report["roi_percent"] == pytest.approx(100 * (28 * MONTH_DAYS - 300) / 300)


def test_no_investment_or_no_savings_gives_no_payback():
    row = usage_row("p", hours=1, price=2.0)
    period = Period("c", DAY, DAY + timedelta(hours=1))
    assert (
        roi_report(facts_of([row], minutes=60), period, RoiSettings(), [])["payback_days"] is None
    )
    assert (
        roi_report(facts_of([row], minutes=60), period, RoiSettings(50.0), [])["payback_days"]
        is None
    )


def test_a_team_report_says_autoscaling_is_left_out():
    # The store gives a team's facts without idle GPUs and capacity; the report says so.
    rows = [usage_row("a", hours=10, price=1.2, on_demand=4.0, capacity="spot", team="vision")]
    period = Period("c", DAY, DAY + timedelta(days=1), team="vision")
    report = roi_report(facts_of(rows), period, RoiSettings(), [])
    assert report["actual_cost_usd"] == pytest.approx(12.0)
    assert report["savings"]["spot"]["savings_usd"] == pytest.approx(28.0)
    assert report["savings"]["autoscaling"]["included"] is False
    assert any("left out" in note for note in report["notes"])


# --- recommendations --------------------------------------------------------------------------

SETTINGS = RecommendationSettings(
    idle_utilization=0.05, underutilized_utilization=0.30, min_hours=1
)


def by_kind(recommendations: list[dict]) -> dict[str, dict]:
    return {r["kind"]: r for r in recommendations}


def test_an_idle_node_is_recommended_for_scale_down_with_its_monthly_cost():
    # Over one covered day: 5 GPUs of node-idle held by no pod for 2 h at $4/GPU-hour.
    idle = usage_row("", hours=2, share=5, price=4.0, idle=True, node="node-idle")
    short = usage_row("", hours=0.5, share=1, price=4.0, idle=True, node="node-short")
    found = by_kind(recommend(facts_of([idle, short]), SETTINGS))
    rec = found["idle_gpus"]
    assert rec["period_savings_usd"] == pytest.approx(2 * 5 * 4.0)
    assert rec["estimated_monthly_savings_usd"] == pytest.approx(40.0 * MONTH_DAYS)
    assert rec["nodes"] == ["node-idle"]  # node-short's 0.5 GPU-hours are under min_hours
    assert rec["evidence"]["idle_gpu_hours"] == pytest.approx(10.0)


def test_a_whole_gpu_whose_peak_fits_a_mig_slice_or_time_slicing():
    # A100-80GB at 25 % peak → 2g (2/7 ≥ 0.25 > 1/7); a T4 at 20 % peak → 4 time-slicing replicas.
    a100 = usage_row("a100", hours=10, price=4.0, utilization=0.2, peak=0.25)
    t4 = usage_row("t4", hours=10, price=0.5, model="T4", utilization=0.15, peak=0.2)
    busy = usage_row("busy", hours=10, price=4.0, utilization=0.8, peak=0.95)
    found = by_kind(recommend(facts_of([a100, t4, busy], minutes=1440), SETTINGS))
    rec = found["gpu_sharing"]
    assert rec["evidence"]["by_slice"] == pytest.approx(
        {"MIG 2g.20gb": 40 * (1 - 2 / 7), "time-slicing, 4 replicas": 5 * 0.75}
    )
    assert rec["period_savings_usd"] == pytest.approx(40 * 5 / 7 + 3.75)
    assert set(rec["pods"]) == {"ml/a100", "ml/t4"}
    # The same pods are not counted again as underutilized.
    assert "underutilized_gpus" not in found


def test_the_mig_memory_convention_prices_the_slice_by_memory_eighths():
    a100 = usage_row("a100", hours=10, price=4.0, utilization=0.2, peak=0.25)
    settings = RecommendationSettings(min_hours=1, mig_convention="memory")
    rec = by_kind(recommend(facts_of([a100]), settings))["gpu_sharing"]
    assert rec["period_savings_usd"] == pytest.approx(40 * (1 - 2 / 8))


def test_idle_and_underutilized_pods_with_their_unused_cost():
    # Two-GPU pods (no single slice fits them): one at 1 % (idle), one at 20 % (underutilized),
    # one at 20 % for only half an hour (too short), one unmeasured.
    idle = usage_row("idle", hours=5, share=2, price=5.0, model="H100-80GB", utilization=0.01)
    low = usage_row("low", hours=4, share=2, price=5.0, model="H100-80GB", utilization=0.2)
    short = usage_row("short", hours=0.4, share=2, price=5.0, model="H100-80GB", utilization=0.2)
    unmeasured = usage_row("dark", hours=9, share=2, price=5.0, model="H100-80GB")
    facts = facts_of([idle, low, short, unmeasured], minutes=720)
    rec = by_kind(recommend(facts, SETTINGS))["underutilized_gpus"]
    wasted = 50 * 0.99 + 40 * 0.8
    assert rec["period_savings_usd"] == pytest.approx(wasted)
    assert rec["estimated_monthly_savings_usd"] == pytest.approx(wasted * MONTH_DAYS / 0.5)
    assert rec["pods"] == ["ml/idle", "ml/low"]
    assert rec["evidence"]["idle_pods"] == 1

    rows = optimize_rows(facts, SETTINGS)
    assert list(rows["pod"]) == ["ml/idle", "ml/low"]  # worst first
    assert list(rows["kind"]) == ["idle", "underutilized"]
    assert rows.loc[0, "action"] == "stop it or scale to zero"
    assert rows["wasted_usd"].tolist() == pytest.approx([49.5, 32.0])
    assert rows.loc[0, "utilization"] == pytest.approx(0.01)
    assert rows.loc[0, "gpus"] == pytest.approx(2.0)


def test_optimize_lists_unallocated_node_gpus_and_pods_worst_first():
    idle_node = usage_row("", hours=3, share=2, price=4.0, idle=True, node="node-idle")
    pod = usage_row("low", hours=4, share=2, price=5.0, model="H100-80GB", utilization=0.2)
    rows = optimize_rows(facts_of([idle_node, pod]), SETTINGS)
    assert list(rows["kind"]) == ["underutilized", "unallocated"]
    assert rows.loc[1, "node"] == "node-idle" and rows.loc[1, "wasted_usd"] == pytest.approx(24.0)
    assert rows["monthly_wasted_usd"].tolist() == pytest.approx([32 * MONTH_DAYS, 24 * MONTH_DAYS])


def test_interruptible_on_demand_pods_are_spot_candidates_at_the_spot_price_seen():
    # A spot A100-80GB ran at $1.20; the interruptible pod paid $4 on demand for 10 GPU-hours.
    spot = usage_row("spot", hours=10, price=1.2, on_demand=4.0, capacity="spot")
    candidate = usage_row("batch", hours=10, price=4.0, interruptible=True)
    not_opted_in = usage_row("web", hours=10, price=4.0)
    rec = by_kind(recommend(facts_of([spot, candidate, not_opted_in]), SETTINGS))["spot_candidates"]
    assert rec["period_savings_usd"] == pytest.approx(40 - 10 * 1.2)
    assert rec["pods"] == ["ml/batch"]
    assert rec["evidence"]["spot_price_source"] == "seen in the period"


def test_spot_price_estimated_where_no_spot_capacity_of_the_model_ran():
    candidate = usage_row("batch", hours=10, price=3.0, model="H100-80GB", interruptible=True)
    rec = by_kind(recommend(facts_of([candidate]), SETTINGS))["spot_candidates"]
    assert rec["period_savings_usd"] == pytest.approx(30 * (1 - 0.40))  # AWS estimate ratio
    assert rec["evidence"]["spot_price_source"].startswith("estimated")


def test_a_steady_on_demand_baseline_is_worth_reserving():
    # Two H100s ran on demand every minute of a day (peak 6), at $2.50/GPU-hour.
    rows = [usage_row("p", hours=24, share=3, price=2.5, model="H100-80GB")]
    facts = facts_of(rows, [pool("H100-80GB", "on-demand", 6, 2, 72, 1440)], minutes=1440)
    rec = by_kind(recommend(facts, SETTINGS))["reserve_baseline"]
    assert rec["estimated_monthly_savings_usd"] == pytest.approx(
        2 * HOURS_PER_MONTH * 2.5 * RESERVED_DISCOUNT_ESTIMATE
    )
    [h100] = rec["evidence"]["pools"]
    assert h100["reserved_price_source"] == "estimate"
    # Where the price books have a committed price for the model, that is the reserved price.
    booked = dataclasses.replace(facts, committed_prices={"H100-80GB": 1.6})
    rec = by_kind(recommend(booked, SETTINGS))["reserve_baseline"]
    assert rec["estimated_monthly_savings_usd"] == pytest.approx(2 * HOURS_PER_MONTH * (2.5 - 1.6))
    [h100] = rec["evidence"]["pools"]
    assert (h100["reserved_price_source"], h100["reserved_price_per_gpu_hour"]) == (
        "price book",
        1.6,
    )
    # Less than a day of data is no evidence of a steady baseline.
    short = facts_of(rows, [pool("H100-80GB", "on-demand", 6, 2, 72, 600)], minutes=600)
    assert "reserve_baseline" not in by_kind(recommend(short, SETTINGS))


def test_cost_with_no_team_label_names_its_namespaces_and_pods():
    labelled = usage_row("a", hours=10, price=2.0)
    unlabelled = usage_row("b", hours=5, price=2.0, team="")
    rec = by_kind(recommend(facts_of([labelled, unlabelled]), SETTINGS))["unlabelled_team"]
    assert rec["estimated_monthly_savings_usd"] == 0
    assert rec["evidence"]["unattributed_cost_usd"] == pytest.approx(10.0)
    assert rec["evidence"]["share_of_pod_cost"] == pytest.approx(1 / 3)
    assert rec["pods"] == ["ml/b"] and rec["namespaces"] == ["ml"]
    assert rec["evidence"]["pod_days"] == 1


def test_recommendations_come_largest_saving_first():
    rows = [
        usage_row("", hours=2, share=5, price=4.0, idle=True, node="n1"),
        usage_row("batch", hours=100, price=4.0, interruptible=True),
        usage_row("b", hours=5, price=2.0, team=""),
    ]
    kinds = [r["kind"] for r in recommend(facts_of(rows), SETTINGS)]
    assert kinds == ["spot_candidates", "idle_gpus", "unlabelled_team"]


def test_an_idle_whole_gpu_is_told_to_stop_not_to_shrink():
    idle = usage_row("idle", hours=10, price=4.0, utilization=0.01, peak=0.02)
    found = by_kind(recommend(facts_of([idle]), SETTINGS))
    assert "gpu_sharing" not in found
    assert found["underutilized_gpus"]["period_savings_usd"] == pytest.approx(40 * 0.99)
    [row] = optimize_rows(facts_of([idle]), SETTINGS).to_dict("records")
    assert row["kind"] == "idle" and row["action"] == "stop it or scale to zero"


def test_nothing_to_optimize_is_an_empty_list():
    busy = usage_row("busy", hours=10, price=4.0, utilization=0.9)
    assert optimize_rows(facts_of([busy]), SETTINGS).empty
