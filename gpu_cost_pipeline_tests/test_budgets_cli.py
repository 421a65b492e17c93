"""`gpu-autoscaler materialize` with the shipped example specs, then `gpu-autoscaler budgets`
and `attributions` as commands: the statuses agree with the stored cost rows, label scopes
included, and some example budgets cross their thresholds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.test_code_location import REPO

CLUSTER = "examples"


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def examples_env(database_url: str, tmp_path: Path) -> dict:
    env = {
        "GPU_COST_DATABASE_URL": database_url,
        "GPU_COST_CLUSTER": CLUSTER,
        "GPU_COST_SPECS_DIR": str(REPO / "examples/simulated"),
        "DAGSTER_HOME": "",
        "GPU_COST_SIMULATED_PODS": "40",
    }
    done = cli("materialize", "--last", "15m", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "budget_status: {'budgets': 5" in done.stdout
    return env


def cost(store: CostStore, where: str = "true") -> float:
    frame = store.read_frame(
        "SELECT coalesce(sum(c.cost_usd), 0) AS cost FROM gpu_cost AS c LEFT JOIN gpu_pods AS p"
        f" ON p.cluster = c.cluster AND p.pod_uid = c.pod_uid WHERE c.cluster = %s AND {where}",
        (CLUSTER,),
    )
    return float(frame.loc[0, "cost"])


def test_budgets_and_attributions_match_the_cost_rows(examples_env: dict, database_url: str):
    store = CostStore(database_url=database_url)
    done = cli("budgets", "--format", "json", env=examples_env)
    assert done.returncode == 0, done.stderr
    budgets = {row["name"]: row["status"] for row in json.loads(done.stdout)}
    assert budgets["whole-cluster"]["currentSpend"] == pytest.approx(cost(store), abs=0.011)
    assert budgets["vision-team"]["currentSpend"] == pytest.approx(
        cost(store, "c.team = 'vision'"), abs=0.011
    )
    label = 'p.labels @> \'{"app.kubernetes.io/name": "forecasting-train"}\''
    assert budgets["forecasting-training"]["currentSpend"] == pytest.approx(
        cost(store, label), abs=0.011
    )
    namespaces = "c.namespace IN ('ml-training', 'research')"
    assert budgets["ml-training-namespace"]["currentSpend"] == pytest.approx(
        cost(store, namespaces), abs=0.011
    )
    vision_team = budgets["vision-team"]
    assert vision_team["percentageUsed"] == pytest.approx(
        vision_team["currentSpend"] / 40 * 100,
        abs=0.03,  # spend is shown rounded to cents
    )
    assert vision_team["budgetStatus"] in ("warning", "exceeded")  # $40 is under an hour of it
    for status in budgets.values():
        assert set(status) >= {
            "currentSpend", "percentageUsed", "budgetStatus", "projectedMonthlySpend",
            "daysRemaining", "alertsFired", "enforcementActive", "breakdown",
        }  # fmt: skip
    vision = budgets["vision-team"]["breakdown"]["byTeam"]
    assert list(vision) == ["vision"]

    done = cli("attributions", "--format", "json", env=examples_env)
    assert done.returncode == 0, done.stderr
    attributions = {row["name"]: row["status"] for row in json.loads(done.stdout)}
    whole = attributions["whole-cluster"]
    assert whole["monthlyCost"] == pytest.approx(cost(store), abs=0.011)
    assert whole["totalCost"] == whole["monthlyCost"] == whole["dailyCost"]
    od = store.read_frame(
        "SELECT sum(on_demand_cost_usd) AS od, sum(gpu_share * seconds) / 3600 AS gpu_hours"
        " FROM gpu_cost WHERE cluster = %s",
        (CLUSTER,),
    )
    assert whole["savings"]["vsOnDemand"] == pytest.approx(
        float(od.loc[0, "od"]) - cost(store), abs=0.02
    )
    assert whole["costPerGPUHour"] == pytest.approx(
        cost(store) / float(od.loc[0, "gpu_hours"]), abs=0.011
    )
    serving = "c.project = 'recommendations' AND p.labels @> '{\"app.kubernetes.io/name\": \"recommendations-serve\"}'"
    assert attributions["recommendations-serving"]["monthlyCost"] == pytest.approx(
        cost(store, serving), abs=0.011
    )
    assert attributions["bert-training-costs"]["totalCost"] == 0  # no such experiment here
    assert whole["activePods"] > 0 and whole["activeGPUs"] > 0

    table = cli("budgets", env=examples_env)
    assert table.returncode == 0 and "default/vision-team" in table.stdout
    assert vision_team["budgetStatus"] in table.stdout


def test_no_statuses_yet_is_a_clear_message(database_url: str):
    done = cli("budgets", env={"GPU_COST_DATABASE_URL": database_url, "GPU_COST_CLUSTER": "none"})
    assert done.returncode == 2
    assert "No CostBudget statuses for cluster 'none' yet" in done.stderr
