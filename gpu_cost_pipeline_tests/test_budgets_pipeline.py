"""Budgets end to end on real parts: cost rows in PostgreSQL, CostBudgets served by the test
Kubernetes API (status subresource, Secrets, Events, admission policies), the real sensors
evaluated on a real Dagster instance and the real jobs, real receivers (HTTP and SMTP).

Spend crosses 50 %, 80 % and 100 % in one month while the sensors tick many times, a channel
fails once, and the process restarts: exactly one notification per threshold per channel.
Next month: the block lifts and alerts fire afresh; raising the limit lifts the block at once.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from gpu_cost_pipeline.defs.attribution.assets import cost_attributions
from gpu_cost_pipeline.defs.budgets import alerts, clock, enforcement, jobs
from gpu_cost_pipeline.defs.budgets.assets import budget_status
from gpu_cost_pipeline.defs.resources import build_resources
from gpu_cost_pipeline.settings import load_settings
from gpu_cost_pipeline.store import budgets as budget_store
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.budget_ticks import tick
from gpu_cost_pipeline_tests.k8s_api_server import FakeKubernetesApi
from gpu_cost_pipeline_tests.receivers import free_port, http_receiver, smtp_receiver
from gpu_cost_pipeline_tests.test_code_location import REPO

CLUSTER = "budget-scenario"
ROUTING_KEY, WEBHOOK_SECRET = "PD-R0UTING-KEY-123", "hmac-s3cret-456"
SLACK, PAGERDUTY, WEBHOOK = "/services/T1/B1/slack-s3cret", "/pagerduty", "/webhook"


def write_spend(store: CostStore, minute: datetime, cost: float, team: str = "vision") -> None:
    """One pod-minute of cost, written as gpu_cost does (window transaction, both rollups)."""
    row = {
        "minute": minute, "pod_uid": f"pod-{team}", "node": "n1", "namespace": "ml", "team": team,
        "project": "img", "experiment_id": "", "cost_center": "", "gpu_model": "H100",
        "capacity_type": "on-demand", "instance_type": "p5.48xlarge", "provider": "aws",
        "region": "us-east-1", "sharing_mode": "none", "is_idle": False, "gpu_share": 1.0,
        "seconds": 60, "price_per_gpu_hour": cost * 60, "on_demand_price_per_gpu_hour": cost * 60,
        "cost_usd": cost, "on_demand_cost_usd": cost, "exclusive_cost_usd": cost,
        "price_source": "estimate",
    }  # fmt: skip
    end = minute + timedelta(minutes=1)
    with store.write_window(CLUSTER, minute, end) as writer:
        writer.replace("gpu_cost", pd.DataFrame([row]))
        writer.refresh_hourly_rollup()


def add_pod_with_cost_limit(store: CostStore, limit: float) -> None:
    now = datetime.now(UTC)
    pod = {
        "pod_uid": "pod-vision", "namespace": "ml", "pod": "vision-trainer", "team": "vision",
        "project": "img", "experiment_id": "", "cost_center": "", "gpu_resource": "nvidia.com/gpu",
        "gpu_requested": 1, "sharing_mode": "none", "labels": json.dumps({"team": "vision"}),
        "cost_limit_usd": limit, "first_seen": now - timedelta(days=1), "last_seen": now,
    }  # fmt: skip
    with store.write_window(CLUSTER, now, now + timedelta(minutes=1)) as writer:
        writer.upsert_pods(pd.DataFrame([pod]))


def budget_object(receiver, smtp_port: int, limit: float) -> dict:
    return {
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "CostBudget",
        "metadata": {"name": "vision-team", "namespace": "ml"},
        "spec": {
            "monthlyLimit": limit,
            "scope": {"teams": ["vision"]},
            "alerts": [
                {"name": "half-budget", "thresholdPercent": 50, "severity": "info", "channels": [
                    {"type": "slack", "config": {"webhook_url": receiver.url(SLACK)}},
                    {"type": "webhook", "config": {"url": receiver.url(WEBHOOK)},
                     "configSecretRefs": {"secret": {"name": "alerting", "key": "webhook-secret"}}},
                ]},
                {"name": "budget-warning", "thresholdPercent": 80, "severity": "warning", "channels": [
                    {"type": "email", "config": {
                        "smtp_host": "127.0.0.1", "smtp_port": smtp_port, "from": "costs@example.com",
                        "to": "vision-leads@example.com", "username": "alerts",
                        "tls_insecure_skip_verify": True},
                     "configSecretRefs": {"password": {"name": "alerting", "key": "smtp-password"}}},
                ]},
                {"name": "budget-exceeded", "thresholdPercent": 100, "severity": "critical", "channels": [
                    {"type": "pagerduty", "config": {"events_url": receiver.url(PAGERDUTY)},
                     "configSecretRefs": {"routing_key": {"name": "alerting", "key": "routing-key"}}},
                    {"type": "slack", "config": {"webhook_url": receiver.url(SLACK)}},
                ]},
            ],
            "enforcement": {"action": "block", "gracePeriodMinutes": 0},
        },
    }  # fmt: skip


def secret() -> dict:
    values = {"routing-key": ROUTING_KEY, "webhook-secret": WEBHOOK_SECRET, "smtp-password": "p4ss"}
    return {
        "kind": "Secret",
        "metadata": {"name": "alerting", "namespace": "ml"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


@pytest.fixture
def scenario(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with FakeKubernetesApi() as api, http_receiver() as receiver:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        home = tmp_path / "dagster_home"
        home.mkdir()
        env = {
            "GPU_COST_DATABASE_URL": database_url,
            "GPU_COST_SOURCE": "kubernetes",
            "GPU_COST_CLUSTER": CLUSTER,
            "KUBECONFIG": str(kubeconfig),
            "GPU_COST_KUBE_IN_CLUSTER": "false",
            "GPU_COST_ALERT_MAX_ATTEMPTS": "2",
            "GPU_COST_PARTITION_START": "2026-01-01-00:00",
            "DAGSTER_HOME": str(home),
        }
        for name, value in env.items():  # secrets reach resources as EnvVars
            monkeypatch.setenv(name, value)
        # The code location's own resource wiring, from these settings (as definitions.py does).
        defs = dg.Definitions(
            assets=[budget_status, cost_attributions],
            jobs=[jobs.budget_status_job, alerts.send_budget_alerts, alerts.send_pod_cost_alerts,
                  enforcement.enforce_budget],
            sensors=[alerts.budget_alerts, enforcement.budget_enforcement],
            resources=build_resources(load_settings(env)),
            executor=dg.in_process_executor,
        )  # fmt: skip
        # Not `with instance:` — entering an instance sets Dagster's process-wide definitions
        # state storage, which would outlive this test.
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            yield api, receiver, defs, instance, env
        finally:
            instance.dispose()


def step(defs, instance, ticks: int = 3) -> list:
    """budget_status after new costs, then several sensor ticks."""
    assert defs.resolve_job_def("budget_status_job").execute_in_process(instance=instance).success
    ran = []
    for _ in range(ticks):
        ran += tick(defs, instance)
    return ran


def sent(receiver, path: str) -> list[dict]:
    return [r.json for r in receiver.to(path)]


def test_thresholds_alert_once_per_channel_across_ticks_failures_restarts_and_months(
    scenario, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    api, receiver, defs, instance, env = scenario
    store = CostStore(database_url=database_url)
    smtp_port = free_port()
    api.put(secret())
    api.put(budget_object(receiver, smtp_port, limit=100))
    november = clock.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    minute = iter(november + timedelta(minutes=i) for i in range(10_000))

    # 30 %: nothing to send; the status reaches the cluster object.
    write_spend(store, next(minute), 30)
    assert step(defs, instance) == []
    status = api.get_object("costbudgets", "ml", "vision-team")["status"]
    assert (status["currentSpend"], status["percentageUsed"]) == (30, 30)
    # $30 in the month's first minute projects far past the limit: a warning already.
    assert status["budgetStatus"] == "warning" and status["projectedMonthlySpend"] > 100

    # 55 %: the 50 % alert, to Slack and to the signed webhook, once.
    write_spend(store, next(minute), 25)
    ran = step(defs, instance)
    assert [r.success for r in ran] == [True]
    assert len(sent(receiver, WEBHOOK)) == 1 and len(sent(receiver, SLACK)) == 1
    signed = receiver.to(WEBHOOK)[0]
    assert any(k.lower() == "x-gpu-autoscaler-signature" for k in signed.headers)
    fired = [e for e in api.objects_of("events") if e["reason"] == "BudgetAlertFired"]
    assert fired and fired[0]["involvedObject"]["name"] == "vision-team"

    # 85 %: the email channel's server is down on the first tick (the run fails, recorded), up
    # on the next; the email goes out once.
    write_spend(store, next(minute), 30)
    first = step(defs, instance, ticks=1)
    assert [r.success for r in first] == [False]
    with smtp_receiver(tmp_path, "alerts", "p4ss", port=smtp_port) as smtp:
        assert [r.success for r in step(defs, instance, ticks=3)] == [True]
        assert step(defs, instance, ticks=2) == []
    (mail,) = smtp.messages
    assert mail["Subject"].startswith("[WARNING] CostBudget ml/vision-team: budget-warning")

    # A fresh process (restart) ticking on the same instance and database sends nothing new.
    done = subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline_tests.budget_ticks", "3"],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("tick: 0 runs") == 3, done.stdout

    # 120 %: PagerDuty (routing key from the Secret) and Slack, once each; the block goes up.
    receiver.script(SLACK, [(429, {"Retry-After": "1"})])
    write_spend(store, next(minute), 35)
    step(defs, instance, ticks=4)
    (trigger,) = sent(receiver, PAGERDUTY)
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["severity"] == "critical"
    assert len(sent(receiver, SLACK)) == 2  # 50 % and 100 %, the second after a 429
    (policy,) = api.objects_of("validatingadmissionpolicies")
    assert "CostBudget ml/vision-team" in policy["spec"]["validations"][0]["message"]
    assert "$120.00" in policy["spec"]["validations"][0]["message"]
    assert len(api.objects_of("validatingadmissionpolicybindings")) == 1
    step(defs, instance, ticks=1)
    status = api.get_object("costbudgets", "ml", "vision-team")["status"]
    assert status["enforcementActive"] is True and status["budgetStatus"] == "exceeded"
    assert {a["name"] for a in status["alertsFired"]} == {
        "half-budget",
        "budget-warning",
        "budget-exceeded",
    }

    # Exactly once per (alert, month) per channel in November, whatever ran.
    with budget_store.session(store) as conn:
        ledger = budget_store.ledger_records(conn, CLUSTER)
    sent_per_key = {(k.alert, k.action): sorted(r.sent_channels) for k, r in ledger.items()}
    assert sent_per_key == {
        ("half-budget", "trigger"): [0, 1],
        ("budget-warning", "trigger"): [0],
        ("budget-exceeded", "trigger"): [0, 1],
    }

    # December: the block lifts, November's alerts resolve (PagerDuty by its dedup key), and
    # December's spend alerts afresh.
    december = (november + timedelta(days=32)).replace(day=1)
    monkeypatch.setattr(clock, "now", lambda: december + timedelta(minutes=30))
    step(defs, instance, ticks=3)
    assert api.objects_of("validatingadmissionpolicies") == []
    resolves = [m for m in sent(receiver, PAGERDUTY) if m["event_action"] == "resolve"]
    assert [r["dedup_key"] for r in resolves] == [trigger["dedup_key"]]
    write_spend(store, december + timedelta(minutes=1), 60)
    step(defs, instance, ticks=2)
    december_key = f"{december:%Y-%m}"
    half = [m for m in sent(receiver, WEBHOOK) if m["details"].get("period") == december_key]
    assert len(half) == 1 and half[0]["action"] == "trigger"

    # Over again (block up), then the limit is raised: the block lifts at the next tick, before
    # any new cost data or status refresh.
    write_spend(store, december + timedelta(minutes=2), 50)
    step(defs, instance, ticks=2)
    assert len(api.objects_of("validatingadmissionpolicies")) == 1
    raised = api.get_object("costbudgets", "ml", "vision-team")
    raised["spec"]["monthlyLimit"] = 1000
    api.put(raised)
    tick(defs, instance)
    assert api.objects_of("validatingadmissionpolicies") == []
    with budget_store.session(store) as conn:
        history = budget_store.enforcement_history(conn, CLUSTER)
    assert list(history["action"]) == ["block", "block"] and history["lifted_at"].notna().all()

    # Secrets never reach the database, run config or the event log.
    everything = json.dumps(
        [list(map(str, row)) for row in store.read_frame("SELECT * FROM alert_ledger").itertuples()]
    )
    logs = " ".join(
        str(e.message) for r in instance.get_runs() for e in instance.all_logs(r.run_id)
    ) + json.dumps([r.run_config for r in instance.get_runs()])
    for value in (ROUTING_KEY, WEBHOOK_SECRET, "p4ss", "slack-s3cret"):
        assert value not in everything and value not in logs


def test_an_invalid_budget_gets_a_condition_and_the_others_go_on(scenario, database_url: str):
    api, receiver, defs, instance, _ = scenario
    store = CostStore(database_url=database_url)
    good = budget_object(receiver, free_port(), limit=100)
    bad = budget_object(receiver, free_port(), limit=100)
    bad["metadata"]["name"] = "broken"
    bad["spec"]["alerts"][0]["thresholdPercent"] = 0
    api.put(good)
    api.put(bad)
    write_spend(store, clock.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0), 60)
    step(defs, instance, ticks=1)
    broken = api.get_object("costbudgets", "ml", "broken")["status"]
    (condition,) = broken["conditions"]
    assert condition["status"] == "False" and condition["reason"] == "InvalidSpec"
    assert "spec.alerts[0].thresholdPercent" in condition["message"]
    assert api.get_object("costbudgets", "ml", "vision-team")["status"]["percentageUsed"] == 60
    assert len(sent(receiver, SLACK)) == 1  # the valid budget's 50 % alert went out


def test_a_pod_past_its_cost_limit_alerts_once_with_an_event(scenario, database_url: str):
    api, receiver, defs, instance, _ = scenario
    store = CostStore(database_url=database_url)
    team_budget = {
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "CostBudget",
        "metadata": {"name": "vision", "namespace": "ml"},
        "spec": {"monthlyLimit": 10_000, "scope": {"teams": ["vision"]}, "alerts": [
            {"name": "warn", "thresholdPercent": 80,
             "channels": [{"type": "webhook", "config": {"url": receiver.url(WEBHOOK)}}]}]},
    }  # fmt: skip
    api.put(team_budget)
    add_pod_with_cost_limit(store, limit=40)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    write_spend(store, start, 30)
    assert step(defs, instance, ticks=2) == []  # $30 of $40: under the limit
    write_spend(store, start + timedelta(minutes=1), 15)
    ran = step(defs, instance, ticks=3)
    assert [r.success for r in ran] == [True]
    (alert,) = sent(receiver, WEBHOOK)  # the budget's channel hears about its pod, once
    assert alert["title"] == "Pod ml/vision-trainer passed its cost limit"
    assert "$45.00" in alert["text"] and "$40.00" in alert["text"]
    (event,) = [e for e in api.objects_of("events") if e["involvedObject"]["kind"] == "Pod"]
    assert event["reason"] == "CostLimitExceeded" and event["type"] == "Warning"
    assert event["involvedObject"]["uid"] == "pod-vision"


@pytest.mark.parametrize(
    ("asset", "partitions"),
    [
        ("gpu_cost", ("2026-11-20-10:00", "2026-11-20-10:01")),
        ("gpu_cost_history", ("2026-11-20", "2026-11-21")),
    ],
)
def test_budget_status_follows_each_cost_materialization(
    tmp_path: Path, asset: str, partitions: tuple[str, str]
):
    """A sensor requests one budget_status refresh per new materialization of the live minutes
    and of the history days."""
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    try:
        sensor = next(
            s
            for s in (jobs.budget_status_after_costs, jobs.budget_status_after_history)
            if s.asset_key == dg.AssetKey(asset)
        )
        cursor = None
        requests = []
        for partition in partitions:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))
            context = dg.build_sensor_context(instance=instance, cursor=cursor)
            data = sensor.evaluate_tick(context)
            cursor = data.cursor
            requests += data.run_requests or []
        idle = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
    finally:
        instance.dispose()
    assert len({r.run_key for r in requests}) == 2
    assert {r.job_name or sensor.job_name for r in requests} == {"budget_status_job"}
    assert not idle.run_requests
