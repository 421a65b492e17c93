"""roi_report through Dagster against a real PostgreSQL: a hand-computed cluster written by the
store's own write path, backfilled over three days in process and re-materialized by
`dagster asset materialize` in a subprocess; the CLI (a subprocess) prints exactly the stored
report; and the real pipeline's costs feed it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from gpu_cost_pipeline.cli.main import main
from gpu_cost_pipeline.core.costing import cost_rows
from gpu_cost_pipeline.core.pricing import PRICE_COLUMNS
from gpu_cost_pipeline.defs.roi.assets import roi_report
from gpu_cost_pipeline.defs.roi.resources import RoiConfig
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store import roi as roi_store
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.test_code_location import MODULE, dagster
from gpu_cost_pipeline_tests.test_pipeline import ASSETS, range_tags, resources

CLUSTER = "test"
DAYS = [date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)]
MINUTES = 24  # each day, 10:00 to 10:24
HOURS = MINUTES / 60
# Node → (GPU model, capacity type, price, on-demand price, sharing mode, minutes present).
ALL = range(MINUTES)
NODES = {
    "h100-0": ("H100-80GB", "on-demand", 2.0, 2.0, "none", ALL),
    "h100-1": ("H100-80GB", "on-demand", 2.0, 2.0, "none", ALL),
    **{
        f"h100-{n}": ("H100-80GB", "on-demand", 2.0, 2.0, "none", range(10, 14))
        for n in range(2, 10)
    },
    "a100-spot": ("A100-80GB", "spot", 1.2, 4.0, "none", ALL),
    "a100-mig": ("A100-80GB", "on-demand", 4.0, 4.0, "mig", ALL),
    "l4-ts": ("L4", "on-demand", 0.8, 0.8, "time-slicing", ALL),
    "t4-idle": ("T4", "on-demand", 0.5, 0.5, "none", ALL),
}
# Pod → (node, GPU share, sharing mode, team, mean utilization, peak, labels).
PODS = {
    "spot-train": ("a100-spot", 1.0, "exclusive", "nlp-team", 0.9, 0.95, {}),
    "mig-infer": ("a100-mig", 1 / 7, "mig", "vision", None, None, {}),
    "ts-serve": ("l4-ts", 0.25, "time-slicing", "vision", None, None, {}),
    "unlabelled": ("h100-0", 1.0, "exclusive", "", 0.02, 0.03, {}),
    "batch": (
        "h100-1", 1.0, "exclusive", "data-science", 0.6, 0.7,
        {"gpu-autoscaler.io/interruptible": "true"},
    ),
}  # fmt: skip
ROI_ENV = {
    "GPU_COST_WASTE_BASELINE_SHARE": "0.9",
    "GPU_COST_INVESTMENT_MONTHLY_USD": "50",
    "GPU_COST_WASTE_MIN_HOURS": "1",
}
CONFIG = RoiConfig(waste_baseline_share=0.9, investment_monthly_usd=50, waste_min_hours=1)

# Per day, by hand (0.4 h of data):
ACTUAL = (2 * 24 + 8 * 4) / 60 * 2.0 + 1.2 * HOURS + 4.0 * HOURS + 0.8 * HOURS + 0.5 * HOURS
SPOT = (4.0 - 1.2) * HOURS
SHARING = 4.0 * HOURS * (1 - 1 / 7) + 0.8 * HOURS * 0.75
AUTOSCALING = 2.0 * (10 * HOURS - (2 * 24 + 8 * 4) / 60)  # peak 10 H100s, 80 GPU-minutes run
IDLE = 8 * 4 / 60 * 2.0 + 4.0 * HOURS * 6 / 7 + 0.8 * HOURS * 0.75 + 0.5 * HOURS
UNUSED = 1.2 * HOURS * 0.1 + 2.0 * HOURS * 0.98 + 2.0 * HOURS * 0.4
WASTE = 0.9 * ACTUAL - (IDLE + UNUSED)


def scenario_day(day: date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Node minutes, pod minutes, pods and prices of one day, as the usage assets store them."""
    start = datetime(day.year, day.month, day.day, 10, tzinfo=UTC)
    held = {node: 0.0 for node in NODES}
    pod_rows = []
    for minute in range(MINUTES):
        for pod, (node, share, mode, team, utilization, peak, _) in PODS.items():
            pod_rows.append(
                {
                    "minute": start + timedelta(minutes=minute),
                    "cluster": CLUSTER,
                    "pod_uid": f"uid-{pod}",
                    "pod": pod,
                    "node": node,
                    "gpu_share": share,
                    "seconds": 60,
                    # The peak in one minute of the day, the mean over the day.
                    "gpu_utilization": np.nan
                    if utilization is None
                    else (peak if minute == 0 else (utilization * MINUTES - peak) / (MINUTES - 1)),
                    "namespace": "ml",
                    "team": team,
                    "project": "",
                    "experiment_id": "",
                    "cost_center": "",
                    "sharing_mode": mode,
                }
            )
    for node, share, *_ in PODS.values():
        held[node] += share
    node_rows = []
    for node, (model, capacity, _, _, mode, present) in NODES.items():
        for minute in present:
            node_rows.append(
                {
                    "minute": start + timedelta(minutes=minute),
                    "cluster": CLUSTER,
                    "node": node,
                    "gpu_model": model,
                    "gpu_count": 1,
                    "sharing_mode": mode,
                    "capacity_type": capacity,
                    "instance_type": "",
                    "provider": "aws",
                    "region": "us-east-1",
                    "zone": "",
                    "seconds": 60,
                    "gpus_held": held[node],
                    "idle_gpus": 1 - held[node],
                    "gpu_utilization": np.nan,
                }
            )
    nodes = pd.DataFrame(node_rows)
    key = ["provider", "region", "zone", "instance_type", "gpu_model", "capacity_type"]
    pods = pd.DataFrame(pod_rows).merge(nodes[["node", *key]].drop_duplicates(), on="node")
    prices = pd.DataFrame(
        [
            {
                "provider": "aws",
                "region": "us-east-1",
                "zone": "",
                "instance_type": "",
                "gpu_model": model,
                "capacity_type": capacity,
                "price_per_gpu_hour": price,
                "on_demand_price_per_gpu_hour": on_demand,
                "source": "estimate",
                "effective_at": datetime(2026, 11, 1, tzinfo=UTC),
            }
            for (model, capacity), (price, on_demand) in {
                (m, c): (p, o) for m, c, p, o, _, _ in NODES.values()
            }.items()
        ],
        columns=PRICE_COLUMNS,
    )
    attribution = pd.DataFrame(
        [
            {
                "pod_uid": f"uid-{pod}",
                "namespace": "ml",
                "pod": pod,
                "team": team,
                "gpu_resource": "nvidia.com/gpu",
                "gpu_requested": 1,
                "sharing_mode": mode,
                "labels": json.dumps(labels),
                "first_seen": start,
                "last_seen": start + timedelta(minutes=MINUTES),
            }
            for pod, (_, _, mode, team, _, _, labels) in PODS.items()
        ]
    )
    return nodes, pods, attribution, prices


def write_scenario(store: CostStore) -> None:
    """Each day through the store's write path: usage, pods, costs, hourly rollup."""
    for day in DAYS:
        nodes, pods, attribution, prices = scenario_day(day)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        with store.write_window(CLUSTER, start, start + timedelta(days=1)) as writer:
            writer.replace("gpu_node_usage", nodes)
            writer.replace("gpu_pod_usage", pods)
            writer.upsert_pods(attribution)
            writer.replace("gpu_cost", cost_rows(pods, nodes, prices))
            writer.refresh_hourly_rollup()


def roi_resources(database_url: str) -> dict:
    return {
        "store": CostStore(database_url=database_url),
        "usage_source": UsageSource(cluster=CLUSTER),
        "roi": CONFIG,
    }


def stored(store: CostStore, day: date) -> dict:
    with store.connection() as conn:
        report = roi_store.stored_report(conn, CLUSTER, day)
    assert report is not None, day
    return report


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def scenario(store: CostStore) -> CostStore:
    write_scenario(store)
    return store


def test_three_day_backfill_stores_hand_computed_reports(scenario: CostStore, database_url: str):
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: DAYS[0].isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: DAYS[-1].isoformat(),
    }
    result = dg.materialize([roi_report], tags=tags, resources=roi_resources(database_url))
    assert result.success
    events = {e.partition: e.metadata for e in result.asset_materializations_for_node("roi_report")}
    assert sorted(events) == [d.isoformat() for d in DAYS]
    [check] = result.get_asset_check_evaluations()
    assert check.passed

    for day in DAYS:
        report = stored(scenario, day)
        assert report["actual_cost_usd"] == pytest.approx(ACTUAL)
        assert report["savings"]["spot"]["savings_usd"] == pytest.approx(SPOT)
        assert report["savings"]["sharing"]["savings_usd"] == pytest.approx(SHARING)
        assert report["savings"]["autoscaling"]["savings_usd"] == pytest.approx(AUTOSCALING)
        assert report["savings"]["waste_elimination"]["idle_cost_usd"] == pytest.approx(IDLE)
        assert report["savings"]["waste_elimination"]["savings_usd"] == pytest.approx(WASTE)
        total = SPOT + SHARING + AUTOSCALING + WASTE
        assert report["total_savings_usd"] == pytest.approx(total)
        assert report["baseline_cost_usd"] == pytest.approx(ACTUAL + total)
        assert report["payback_days"] == pytest.approx(50 / (total / (MINUTES / 1440)))
        # The UI's figures: numeric per day (money in cents), and the report as markdown.
        metadata = events[day.isoformat()]
        assert metadata["total_savings_usd"].value == pytest.approx(total, abs=0.006)
        assert metadata["autoscaling_savings_usd"].value == pytest.approx(AUTOSCALING, abs=0.006)
        assert "| Autoscaling |" in metadata["report"].value

    # Peak of the 2 → 10 → 2 H100 cluster, from the minute rows.
    h100 = next(
        p
        for p in stored(scenario, DAYS[0])["savings"]["autoscaling"]["by_pool"]
        if p["gpu_model"] == "H100-80GB"
    )
    assert (h100["peak_gpus"], h100["peak_nodes"]) == (10, 10)
    assert h100["gpu_hours"] == pytest.approx(80 / 60)


def test_a_day_rewritten_by_dagster_in_a_subprocess_replaces_it_and_the_cli_prints_it(
    scenario: CostStore,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
):
    env = {
        "GPU_COST_DATABASE_URL": database_url,
        "GPU_COST_CLUSTER": CLUSTER,
        "GPU_COST_PARTITION_START": "2026-11-01-00:00",
        "DAGSTER_HOME": str(tmp_path),
        **ROI_ENV,
    }
    # First in process, then as a deployment loads it: the second run replaces the first.
    roi_only = {**roi_resources(database_url), "roi": RoiConfig(waste_baseline_share=0.1)}
    dg.materialize([roi_report], partition_key=DAYS[1].isoformat(), resources=roi_only)
    done = dagster(
        ["asset", "materialize", "-m", MODULE, "--select", "roi_report", "--partition",
         DAYS[1].isoformat()],
        env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = stored(scenario, DAYS[1])
    assert report["actual_cost_usd"] == pytest.approx(ACTUAL)
    rows = scenario.read_frame(
        "SELECT count(*) AS n FROM roi_usage_daily WHERE cluster = %s AND day = %s",
        (CLUSTER, DAYS[1]),
    )
    assert rows.loc[0, "n"] == len(PODS) + len(NODES) - 3  # pods + the nodes with idle GPUs

    day = ["--from", DAYS[1].isoformat(), "--to", DAYS[2].isoformat()]
    done = cli("cost", "--roi", *day, "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == report

    code, table, _ = run_cli(["cost", "--roi", *day], env, monkeypatch, capsys)
    assert code == 0 and "Autoscaling" in table and f"${AUTOSCALING:,.2f}" in table
    code, detailed, _ = run_cli(
        ["cost", "--roi", *day, "--format", "detailed"], env, monkeypatch, capsys
    )
    assert code == 0 and "Sharing by mode" in detailed and "H100-80GB" in detailed
    code, listed, err = run_cli(["optimize", *day], env, monkeypatch, capsys)
    assert code == 0 and "At stake" in listed, err
    _, flat, _ = run_cli(["cost", "--roi", *day, "--format", "csv"], env, monkeypatch, capsys)
    assert f"savings.spot.savings_usd,{report['savings']['spot']['savings_usd']}" in flat


def run_cli(args: list[str], env: dict, monkeypatch, capsys) -> tuple[int, str, str]:
    """The CLI in process (the subprocess form is tested above)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_three_day_cli_report_mixes_stored_and_derived_days(
    scenario: CostStore, database_url: str, monkeypatch, capsys
):
    """Day 1 stored, days 2-3 derived from the minute rows: the same figures as three stored
    days, and recommendations that need the three days' hours together."""
    dg.materialize(
        [roi_report], partition_key=DAYS[0].isoformat(), resources=roi_resources(database_url)
    )
    env = {"GPU_COST_DATABASE_URL": database_url, "GPU_COST_CLUSTER": CLUSTER, **ROI_ENV}
    period = ["--from", DAYS[0].isoformat(), "--to", (DAYS[-1] + timedelta(days=1)).isoformat()]
    code, out, err = run_cli(
        ["cost", "--roi", *period, "--format", "json"], env, monkeypatch, capsys
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["actual_cost_usd"] == pytest.approx(3 * ACTUAL)
    assert report["savings"]["autoscaling"]["savings_usd"] == pytest.approx(3 * AUTOSCALING)
    assert report["savings"]["sharing"]["savings_usd"] == pytest.approx(3 * SHARING)
    assert any("2 whole days were derived now" in note for note in report["notes"])

    found = {r["kind"]: r for r in report["recommendations"]}
    # 1.2 h measured over the three days: the unlabelled pod at 2 % is idle (stop it).
    assert found["underutilized_gpus"]["pods"] == ["ml/unlabelled"]
    assert found["underutilized_gpus"]["period_savings_usd"] == pytest.approx(
        3 * 2.0 * HOURS * 0.98
    )
    assert found["unlabelled_team"]["evidence"]["unattributed_cost_usd"] == pytest.approx(3 * 0.8)
    # The interruptible H100 pod, priced at the AWS spot estimate (no spot H100 ran).
    assert found["spot_candidates"]["pods"] == ["ml/batch"]
    assert found["spot_candidates"]["period_savings_usd"] == pytest.approx(3 * 0.8 * 0.6)
    # GPUs no pod held for at least 1 GPU-hour in the period: the MIG node's and the T4.
    assert sorted(found["idle_gpus"]["nodes"]) == ["a100-mig", "t4-idle"]
    assert "reserve_baseline" not in found  # 72 minutes are no steady baseline

    code, out, err = run_cli(["optimize", *period, "--format", "json"], env, monkeypatch, capsys)
    assert code == 0, err
    listed = json.loads(out)
    assert [(g["kind"], g["node"]) for g in listed["gpus"]] == [
        ("unallocated", "a100-mig"),
        ("idle", "h100-0"),
        ("unallocated", "t4-idle"),
    ]
    assert listed["wasted_usd"] == pytest.approx(
        3 * (4.0 * HOURS * 6 / 7 + 2.0 * HOURS * 0.98 + 0.5 * HOURS)
    )
    args = ["cost", "--roi", *period, "--team", "vision", "--format", "json"]
    by_team = json.loads(run_cli(args, env, monkeypatch, capsys)[1])
    assert by_team["actual_cost_usd"] == pytest.approx(3 * (4.0 / 7 + 0.8 / 4) * HOURS)
    assert by_team["savings"]["autoscaling"]["included"] is False


def test_the_real_pipelines_costs_feed_the_report(database_url: str, store: CostStore):
    """Ten simulated minutes through the cost assets, then the day's report: its actual cost
    is the stored costs' total, and the check against the hourly rollup passes."""
    tags = range_tags("2026-11-20-09:00", "2026-11-20-09:09")
    assert dg.materialize(ASSETS, tags=tags, resources=resources(database_url)).success
    result = dg.materialize(
        [roi_report], partition_key="2026-11-20", resources=roi_resources(database_url)
    )
    assert result.success and result.get_asset_check_evaluations()[0].passed
    total = store.read_frame("SELECT sum(cost_usd) AS c FROM gpu_cost WHERE cluster = 'test'")
    report = stored(store, date(2026, 11, 20))
    assert report["actual_cost_usd"] == pytest.approx(float(total.loc[0, "c"]), rel=1e-9)
    assert report["covered_hours"] == pytest.approx(10 / 60)
    assert report["savings"]["spot"]["savings_usd"] > 0  # the simulated spot pools
    assert report["savings"]["sharing"]["by_mode"]["mig"]["savings_usd"] > 0


def test_no_cost_data_is_a_clear_message(database_url: str, monkeypatch, capsys):
    env = {"GPU_COST_DATABASE_URL": database_url, "GPU_COST_CLUSTER": "empty"}
    code, _, err = run_cli(["cost", "--roi", "--last", "7d"], env, monkeypatch, capsys)
    assert code == 2 and "No cost data for cluster 'empty'" in err
    code, _, err = run_cli(["optimize", "--from", "2026-11-02"], env, monkeypatch, capsys)
    assert code == 1 and "--from and --to go together" in err


def test_reservations_are_priced_from_the_price_books_committed_prices(
    scenario: CostStore, database_url: str
):
    """The committed-1yr book price in effect at the period's end, for the instance types and
    regions each model ran on demand; a price after the end, another region or another instance
    type does not count, and a model with no committed price gets none (the report estimates)."""
    book = [  # (region, instance type, model, capacity, [(days from DAYS[0], price)])
        ("us-east-1", "", "H100-80GB", "committed-1yr", [(-30, 1.40), (10, 1.00)]),
        ("us-east-1", "p5.48xlarge", "H100-80GB", "committed-1yr", [(-30, 9.0)]),
        ("us-west-2", "", "H100-80GB", "committed-1yr", [(-30, 7.0)]),
        ("us-east-1", "", "T4", "spot", [(-30, 0.2)]),
    ]
    start = datetime.combine(DAYS[0], datetime.min.time(), UTC)
    end = start + timedelta(days=3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        fetch_id = conn.execute(
            "INSERT INTO price_book_fetches (provider, feeds, regions, started_at, finished_at,"
            " status) VALUES ('aws', 'test', 'us-east-1', now(), now(), 'ok') RETURNING fetch_id"
        ).fetchone()[0]
        for region, instance_type, model, capacity, points in book:
            series_id = conn.execute(
                "INSERT INTO price_book_series (provider, region, instance_type, gpu_model,"
                " capacity_type, first_effective_at, last_confirmed_at)"
                " VALUES ('aws', %s, %s, %s, %s, %s, %s) RETURNING series_id",
                (region, instance_type, model, capacity, start - timedelta(days=30), end),
            ).fetchone()[0]
            for days, price in points:
                conn.execute(
                    "INSERT INTO price_book_points (series_id, effective_at, price_per_gpu_hour,"
                    " feed, confirmed_at, fetch_id) VALUES (%s, %s, %s, 'test', %s, %s)",
                    (series_id, start + timedelta(days=days), price, end, fetch_id),
                )
        assert roi_store.committed_prices(conn, CLUSTER, start, end) == {"H100-80GB": 1.40}
