"""Enforcement: the sensor that requests enforce_budget runs when a budget has been over its
limit past its grace period (apply) or no longer is (lift), and the job that blocks or throttles
and records what it created or changed, so that the lift undoes exactly that."""

import dagster as dg

from gpu_cost_pipeline.core import enforcement as plan
from gpu_cost_pipeline.core.budgets import APPLY, LIFT, enforcement_due, month_period
from gpu_cost_pipeline.core.specs import Budget
from gpu_cost_pipeline.defs.budgets import clock
from gpu_cost_pipeline.defs.budgets.resources import SpecSource
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.integrations.kubernetes import KubernetesSourceError
from gpu_cost_pipeline.store import budgets as budget_store
from gpu_cost_pipeline.store.cost_store import CostStore

AUTOSCALING_POLICIES = "autoscalingpolicies"
ENFORCEMENT_TAG = "gpu-autoscaler/enforcement"


class EnforceConfig(dg.Config):
    namespace: str
    budget: str
    decision: str  # apply | lift


def _identity(obj: dict) -> dict:
    metadata = obj["metadata"]
    found = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": metadata["name"]}
    if metadata.get("namespace"):
        found["namespace"] = metadata["namespace"]
    return found


def apply_block(specs: SpecSource, budget: Budget, spend: float) -> dict:
    """The policy and binding; without that API, per-namespace ResourceQuotas when the scope is
    namespaces only. Returns what was created (recorded for the lift)."""
    objects = plan.block_objects(budget, spend)
    details: dict = {"message": plan.block_message(budget, spend), "mechanism": "admission-policy"}
    if not specs.acts_on_cluster:
        return details | {"dryRun": True, "objects": [_identity(o) for o in objects]}
    try:
        for obj in objects:
            specs.kubernetes.apply(obj)
    except KubernetesSourceError as error:
        if error.status != 404:
            raise
        if not plan.quota_fallback_possible(budget.scope):
            raise dg.Failure(
                f"{budget.ref}: cannot block: the cluster serves no ValidatingAdmissionPolicy "
                "API (Kubernetes < 1.30) and the scope is not namespaces only, which is all a "
                "ResourceQuota can express"
            ) from None
        objects = plan.quota_objects(budget)
        for obj in objects:
            specs.kubernetes.apply(obj)
        details["mechanism"] = "resource-quota"
    return details | {"objects": [_identity(o) for o in objects]}


def apply_throttle(specs: SpecSource, budget: Budget) -> dict:
    """Cap the spot pools of the AutoscalingPolicies in scope; keep each previous value."""
    config = budget.spec.enforcement.throttleConfig
    cap = config.maxSpotInstances if config else 0
    details: dict = {"cap": cap, "field": plan.CAP_FIELD, "policies": []}
    if not specs.acts_on_cluster:
        return details | {"dryRun": True}
    owner = f"{budget.ref.namespace}/{budget.ref.name}"
    policies = [
        {"apiVersion": "gpu-autoscaler.io/v1alpha1", "kind": "AutoscalingPolicy", **p}
        for p in specs.kubernetes.list_custom_objects(AUTOSCALING_POLICIES)
    ]
    for policy in plan.policies_in_scope(policies, budget.scope):
        updated, previous = plan.throttle(policy, cap, owner)
        if previous:
            specs.kubernetes.replace_custom_object(AUTOSCALING_POLICIES, updated)
            metadata = policy["metadata"]
            details["policies"].append(
                {"namespace": metadata["namespace"], "name": metadata["name"], "previous": previous}
            )
    return details


def lift(specs: SpecSource, action: str, details: dict) -> list[str]:
    """Undo what the application recorded. Returns notes for the log (values someone changed
    since, which are kept)."""
    notes: list[str] = []
    if details.get("dryRun"):
        return notes
    if action == "block":
        for identity in details.get("objects", []):
            obj = {
                "kind": identity["kind"],
                "metadata": {
                    "name": identity["name"],
                    **({"namespace": identity["namespace"]} if identity.get("namespace") else {}),
                },
            }
            specs.kubernetes.delete(obj)
        return notes
    current = {
        (p["metadata"]["namespace"], p["metadata"]["name"]): p
        for p in specs.kubernetes.list_custom_objects(AUTOSCALING_POLICIES)
    }
    for entry in details.get("policies", []):
        policy = current.get((entry["namespace"], entry["name"]))
        if policy is None:
            notes.append(f"AutoscalingPolicy {entry['namespace']}/{entry['name']} is gone")
            continue
        policy = {"apiVersion": "gpu-autoscaler.io/v1alpha1", "kind": "AutoscalingPolicy", **policy}
        restored, changed = plan.restore(policy, entry["previous"], details["cap"])
        specs.kubernetes.replace_custom_object(AUTOSCALING_POLICIES, restored)
        notes += [
            f"AutoscalingPolicy {entry['namespace']}/{entry['name']} pool {name} was changed "
            "while throttled; its current value is kept"
            for name in changed
        ]
    return notes


@dg.op(description="Apply or lift a budget's block or throttle, and record it.")
def enforce(
    context: dg.OpExecutionContext,
    config: EnforceConfig,
    store: CostStore,
    usage_source: UsageSource,
    specs: SpecSource,
) -> dg.Output:
    now = clock.now()
    cluster = usage_source.cluster
    budget = specs.load().budget(config.namespace, config.budget)
    period = month_period(now, specs.timezone)
    key = (config.namespace, config.budget)
    with budget_store.session(store) as conn:
        state = budget_store.budget_states(conn, cluster).get(key)
        active = budget_store.active_enforcements(conn, cluster).get(key)
        # Decide again: the state may have changed since the sensor asked.
        active_action = active["action"] if active else None
        if budget is None:
            decision = LIFT if active else None
        else:
            decision = enforcement_due(budget, state, period, active_action, now)
        if decision != config.decision:
            context.log.info(f"{config.namespace}/{config.budget}: {config.decision} no longer due")
            return dg.Output(None, metadata={"changed": 0})
        if decision == APPLY and budget is not None:
            spend = state.current_spend if state else 0.0
            action = budget.spec.enforcement.action
            details = (
                apply_block(specs, budget, spend)
                if action == "block"
                else apply_throttle(specs, budget)
            )
            with conn.transaction():
                budget_store.record_enforcement(
                    conn,
                    cluster,
                    config.namespace,
                    config.budget,
                    action,
                    period.key,
                    details,
                    context.run_id,
                )
            summary = (
                f"{action} applied to CostBudget {config.namespace}/{config.budget}: {details}"
            )
            reason, event_reason = summary, "BudgetEnforced"
        else:
            assert active is not None
            notes = lift(specs, active["action"], active["details"])
            reason = _lift_reason(budget, state, period.key)
            with conn.transaction():
                budget_store.record_lift(conn, cluster, config.namespace, config.budget, reason)
            for note in notes:
                context.log.warning(note)
            summary = f"{active['action']} lifted from CostBudget {config.namespace}/{config.budget}: {reason}"
            event_reason = "BudgetEnforcementLifted"
    context.log.info(summary)
    if budget is not None and specs.acts_on_cluster:
        problem = specs.record_event(budget.ref, event_reason, summary, warning=decision == APPLY)
        if problem:
            context.log.warning(problem)
    return dg.Output(None, metadata={"changed": 1, "decision": decision, "summary": summary})


def _lift_reason(budget: Budget | None, state, period: str) -> str:
    if budget is None:
        return "the CostBudget was deleted"
    if not budget.spec.enabled:
        return "the budget was disabled"
    if state is None or state.period != period:
        return f"a new month ({period}) began"
    if budget.spec.enforcement.action not in ("block", "throttle"):
        return f"enforcement action is now {budget.spec.enforcement.action}"
    return f"spend ${state.current_spend:,.2f} is under the monthly limit ${budget.spec.monthlyLimit:,.2f}"


# On Kubernetes (K8sRunLauncher) only this job's pods run as the service account that may
# change admission policies, quotas and autoscaling policies (deploy/k8s/rbac.yaml).
ENFORCEMENT_SERVICE_ACCOUNT = "gpu-cost-enforcement"


@dg.job(
    description="Block or throttle a budget past its grace period, or lift it.",
    tags={
        "dagster-k8s/config": {
            "pod_spec_config": {"service_account_name": ENFORCEMENT_SERVICE_ACCOUNT}
        }
    },
)
def enforce_budget() -> None:
    enforce()


@dg.sensor(
    job=enforce_budget,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests enforce_budget runs: apply after gracePeriodMinutes over the limit, "
    "lift at the next month, when the limit is raised, or when the budget is disabled/deleted.",
)
def budget_enforcement(
    context: dg.SensorEvaluationContext,
    store: CostStore,
    usage_source: UsageSource,
    specs: SpecSource,
) -> dg.SensorResult | dg.SkipReason:
    now = clock.now()
    cluster = usage_source.cluster
    loaded = specs.load()
    period = month_period(now, specs.timezone)
    with budget_store.session(store) as conn:
        states = budget_store.budget_states(conn, cluster)
        active = budget_store.active_enforcements(conn, cluster)
        history = budget_store.enforcement_history(conn, cluster)
    decisions: list[tuple[str, str, str]] = []
    for budget in loaded.budgets:
        key = (budget.ref.namespace, budget.ref.name)
        current = active.get(key)
        decision = enforcement_due(
            budget, states.get(key), period, current["action"] if current else None, now
        )
        if decision:
            decisions.append((*key, decision))
    present = {(b.ref.namespace, b.ref.name) for b in loaded.budgets}
    decisions += [(*key, LIFT) for key in active if key not in present]
    requests = []
    for namespace, name, decision in decisions:
        applied = int(((history["namespace"] == namespace) & (history["name"] == name)).sum())
        base = f"{namespace}/{name}/{decision}/{applied}"
        failed = context.instance.get_runs_count(
            dg.RunsFilter(tags={ENFORCEMENT_TAG: base}, statuses=[dg.DagsterRunStatus.FAILURE])
        )
        requests.append(
            dg.RunRequest(
                run_key=f"{base}#{failed}",
                run_config={
                    "ops": {
                        "enforce": {
                            "config": {"namespace": namespace, "budget": name, "decision": decision}
                        }
                    }
                },
                tags={ENFORCEMENT_TAG: base, "gpu-autoscaler/budget": f"{namespace}/{name}"},
            )
        )
    if not requests:
        return dg.SkipReason(f"no enforcement change due for {len(loaded.budgets)} budgets")
    return dg.SensorResult(run_requests=requests)
