"""Budget math and decisions (pure): periods, scopes over grouped costs, status, projection,
alerts due, enforcement due; the block policy's CEL evaluated by cel-python; throttle and its
exact restore."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import celpy
import pandas as pd
import pytest

from gpu_cost_pipeline.core import enforcement
from gpu_cost_pipeline.core.attribution import IDLE, ScopedCosts, label_selectors
from gpu_cost_pipeline.core.budgets import (
    APPLY,
    LIFT,
    RESOLVE,
    TRIGGER,
    AlertKey,
    BudgetState,
    BurnWindow,
    DeliveryRecord,
    alerts_due,
    budget_status,
    enforcement_due,
    month_period,
)
from gpu_cost_pipeline.core.specs import Budget, CostBudgetSpec, Scope, SpecRef

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SLACK = {"type": "slack", "config": {"webhook_url": "https://hooks.example/x"}}


def make_budget(limit: float = 100, name: str = "b", **spec) -> Budget:
    spec = {
        "monthlyLimit": limit,
        "alerts": [
            {"name": "half", "thresholdPercent": 50, "channels": [SLACK]},
            {
                "name": "over",
                "thresholdPercent": 100,
                "severity": "critical",
                "channels": [SLACK, SLACK],
            },
        ],
        **spec,
    }
    return Budget(SpecRef("CostBudget", "ml", name, "x.yaml"), CostBudgetSpec.model_validate(spec))


def state(spend: float, period: str = "2026-11", limit: float = 100, since=None) -> BudgetState:
    return BudgetState("ml", "b", period, limit, spend, since, NOW)


def costs(selectors: list[str] | None = None) -> ScopedCosts:
    rows = [
        # namespace, team, project, experiment, cost center, model, capacity, idle, labels, cost, recent
        ("ml", "vision", "img", "", "r", "H100", "on-demand", False, "1", 30.0, 6.0),
        ("ml", "nlp", "lm", "e1", "r", "A100", "spot", False, "0", 20.0, 2.0),
        ("web", "vision", "img", "", "p", "L4", "spot", False, "1", 10.0, 1.0),
        ("", "", "", "", "", "H100", "on-demand", True, "0", 5.0, 0.5),
    ]
    frame = pd.DataFrame(
        rows,
        columns=["namespace", "team", "project", "experiment_id", "cost_center", "gpu_model",
                 "capacity_type", "is_idle", "label_match", "cost_usd", "recent_cost_usd"],
    )  # fmt: skip
    return ScopedCosts(frame, selectors or [json.dumps({"app": "x"})])


def test_month_period_in_utc_and_another_time_zone():
    utc = month_period(NOW)
    assert (utc.key, utc.start, utc.end) == (
        "2026-11",
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    berlin = month_period(datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "Europe/Berlin")
    assert berlin.key == "2026-12" and berlin.start == datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    assert utc.days_remaining(NOW) == 11


@pytest.mark.parametrize(
    ("scope", "spend"),
    [
        (Scope(), 65.0),  # the whole cluster, idle included
        (Scope(teams=("vision",)), 40.0),
        (Scope(namespaces=("ml",)), 50.0),
        (Scope(namespaces=("ml",), teams=("vision",)), 30.0),  # every dimension must match
        (Scope(teams=("vision", "nlp")), 60.0),  # a list matches any of its values
        (Scope(labels=(("app", "x"),)), 40.0),
        (Scope(labels=(("app", "x"),), namespaces=("web",)), 10.0),
        (Scope(experiment_ids=("e1",)), 20.0),
        (Scope(teams=("nobody",)), 0.0),
    ],
)
def test_scope_semantics(scope: Scope, spend: float):
    scoped = costs()
    assert scoped.total(scoped.mask(scope)) == spend


def test_budget_status_fields_and_projection():
    budget = make_budget(limit=50, scope={"teams": ["vision"]})
    period = month_period(NOW)
    data_end = NOW
    burn = BurnWindow(NOW - timedelta(hours=7), data_end)  # 7 h of recent data: $7
    status = budget_status(budget, costs(), period, burn, NOW)
    hours_left = (period.end - data_end).total_seconds() / 3600
    assert status["currentSpend"] == 40.0 and status["percentageUsed"] == 80.0
    assert status["projectedMonthlySpend"] == round(40 + 7 / 7 * hours_left, 2)
    assert status["budgetStatus"] == "warning"
    assert status["breakdown"]["byNamespace"] == {"ml": 30.0, "web": 10.0}
    assert status["breakdown"]["byGPUModel"] == {"H100": 30.0, "L4": 10.0}
    cluster = budget_status(make_budget(limit=60), costs(), period, burn, NOW)
    assert cluster["budgetStatus"] == "exceeded"
    assert cluster["breakdown"]["byTeam"][IDLE] == 5.0


def test_label_selectors_are_distinct_and_stable():
    scopes = [
        Scope(labels=(("a", "1"), ("b", "2"))),
        Scope(labels=(("a", "1"), ("b", "2"))),
        Scope(),
    ]
    assert label_selectors(scopes) == ['{"a": "1", "b": "2"}']


def test_each_threshold_is_due_once_per_period():
    budget, period = make_budget(), month_period(NOW)
    assert alerts_due(budget, state(40), period, {}) == []
    due = alerts_due(budget, state(55), period, {})
    assert due == [(AlertKey("ml", "b", "half", "2026-11", TRIGGER), 0)]
    done = {due[0][0]: DeliveryRecord(done_channels={0}, sent_channels={0})}
    assert alerts_due(budget, state(99), period, done) == []
    over = alerts_due(budget, state(101), period, done)
    assert [key.alert for key, _ in over] == ["over"]
    # One of two channels failed twice: a third round is due for that key.
    partial = {**done, over[0][0]: DeliveryRecord({0}, {0}, failed_rounds=2)}
    assert alerts_due(budget, state(101), period, partial) == [(over[0][0], 2)]


def test_resolves_follow_a_new_month_a_raised_limit_or_disabling():
    budget = make_budget()
    fired = {AlertKey("ml", "b", "over", "2026-11", TRIGGER): DeliveryRecord({0, 1}, {0, 1})}
    december = month_period(datetime(2026, 12, 1, 0, 5, tzinfo=UTC))
    ((resolve, _),) = alerts_due(budget, state(0, "2026-12"), december, fired)
    assert resolve == AlertKey("ml", "b", "over", "2026-11", RESOLVE)
    raised = make_budget(limit=1000)
    assert [k.action for k, _ in alerts_due(raised, state(120), month_period(NOW), fired)] == [
        RESOLVE
    ]
    disabled = make_budget(enabled=False)
    assert [k.action for k, _ in alerts_due(disabled, state(120), month_period(NOW), fired)] == [
        RESOLVE
    ]
    still = alerts_due(budget, state(120), month_period(NOW), fired)
    assert all(k.action == TRIGGER for k, _ in still)


def test_enforcement_waits_for_the_grace_period_and_lifts():
    block = make_budget(enforcement={"action": "block", "gracePeriodMinutes": 30})
    period = month_period(NOW)
    recent = state(150, since=NOW - timedelta(minutes=10))
    assert enforcement_due(block, recent, period, None, NOW) is None
    old = state(150, since=NOW - timedelta(minutes=31))
    assert enforcement_due(block, old, period, None, NOW) == APPLY
    assert enforcement_due(block, old, period, "block", NOW) is None
    assert enforcement_due(block, state(50), period, "block", NOW) == LIFT
    raised = make_budget(limit=500, enforcement={"action": "block"})
    assert enforcement_due(raised, old, period, "block", NOW) == LIFT
    december = month_period(datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    assert enforcement_due(block, old, december, "block", NOW) == LIFT
    alert_only = make_budget()
    assert enforcement_due(alert_only, old, period, None, NOW) is None


# --- the block policy, evaluated as the API server would (CEL) --------------------------------


def pod(namespace: str, labels: dict, requests: dict, init: dict | None = None) -> dict:
    spec: dict = {"containers": [{"name": "c", "resources": {"requests": requests}}]}
    if init:
        spec["initContainers"] = [{"name": "i", "resources": {"limits": init}}]
    return {"metadata": {"name": "p", "namespace": namespace, "labels": labels}, "spec": spec}


def admitted(policy: dict, binding: dict, candidate: dict) -> bool:
    """Binding selectors first (namespace, labels), then the policy's CEL validation."""
    match = binding["spec"]["matchResources"]
    selector = match.get("namespaceSelector")
    if selector:
        (expression,) = selector["matchExpressions"]
        if candidate["metadata"]["namespace"] not in expression["values"]:
            return True
    labels = match.get("objectSelector", {}).get("matchLabels", {})
    if any(candidate["metadata"].get("labels", {}).get(k) != v for k, v in labels.items()):
        return True
    (validation,) = policy["spec"]["validations"]
    environment = celpy.Environment()
    program = environment.program(environment.compile(validation["expression"]))
    return bool(program.evaluate({"object": celpy.json_to_cel(candidate)}))


GPU, CPU = {"nvidia.com/gpu": "1"}, {"cpu": "2"}


@pytest.mark.parametrize(
    ("candidate", "allowed"),
    [
        (pod("ml", {"team": "vision"}, GPU), False),
        (pod("ml", {"team": "vision"}, {"nvidia.com/gpu.shared": "1"}), False),
        (pod("ml", {"team": "vision"}, {"nvidia.com/mig-1g.10gb": "1"}), False),
        (pod("ml", {"team": "vision"}, CPU, init=GPU), False),  # a GPU init container counts
        (pod("ml", {"gpu-autoscaler.io/team": "vision"}, GPU), False),  # the parser's second key
        (pod("ml", {"team": "vision"}, CPU), True),  # CPU-only pods are unaffected
        (pod("ml", {"team": "nlp"}, GPU), True),  # another team
        (pod("ml", {}, GPU), True),  # no team label
        (pod("web", {"team": "vision"}, GPU), True),  # outside the namespaces
    ],
)
def test_the_block_policy_denies_only_new_gpu_pods_in_scope(candidate: dict, allowed: bool):
    budget = make_budget(scope={"namespaces": ["ml"], "teams": ["vision"]})
    policy, binding = enforcement.block_objects(budget, spend=123.45)
    assert admitted(policy, binding, candidate) == allowed
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE"]
    message = policy["spec"]["validations"][0]["message"]
    assert "CostBudget ml/b" in message and "$123.45" in message


def test_label_scopes_bind_by_object_selector():
    budget = make_budget(scope={"labels": {"app": "trainer"}})
    policy, binding = enforcement.block_objects(budget, 1.0)
    assert binding["spec"]["matchResources"] == {
        "objectSelector": {"matchLabels": {"app": "trainer"}}
    }
    assert admitted(policy, binding, pod("x", {"app": "trainer"}, GPU)) is False
    assert admitted(policy, binding, pod("x", {"app": "web"}, GPU)) is True


def test_quota_fallback_only_for_namespace_scopes():
    assert enforcement.quota_fallback_possible(Scope(namespaces=("a",)))
    assert not enforcement.quota_fallback_possible(Scope(namespaces=("a",), teams=("t",)))
    quotas = enforcement.quota_objects(make_budget(scope={"namespaces": ["a", "b"]}))
    assert [q["metadata"]["namespace"] for q in quotas] == ["a", "b"]
    assert quotas[0]["spec"]["hard"]["requests.nvidia.com/gpu"] == "0"


def test_throttle_caps_spot_pools_and_restore_is_exact():
    policy = {
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {"nodePools": [
            {"name": "spot-a", "capacityType": "spot", "maxNodes": 20},
            {"name": "spot-b", "capacityType": "spot"},
            {"name": "spot-small", "capacityType": "spot", "maxNodes": 2},
            {"name": "od", "capacityType": "on-demand", "maxNodes": 10},
        ]},
    }  # fmt: skip
    throttled, previous = enforcement.throttle(policy, cap=5, owner="ml/b")
    pools = {p["name"]: p.get("maxNodes") for p in throttled["spec"]["nodePools"]}
    assert pools == {"spot-a": 5, "spot-b": 5, "spot-small": 2, "od": 10}
    assert previous == {"spot-a": 20, "spot-b": None}
    restored, changed = enforcement.restore(throttled, previous, cap=5)
    assert restored["spec"] == policy["spec"] and changed == []
    assert enforcement.THROTTLE_ANNOTATION not in restored["metadata"].get("annotations", {})
    throttled["spec"]["nodePools"][0]["maxNodes"] = 7  # someone changed it meanwhile
    kept, changed = enforcement.restore(throttled, previous, cap=5)
    assert changed == ["spot-a"] and kept["spec"]["nodePools"][0]["maxNodes"] == 7
