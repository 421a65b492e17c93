"""Alerts: the sensor that requests a send_budget_alerts run per (budget, alert, month, action)
due, and the job that delivers to each channel once, recording every attempt in the ledger.

"Once" rests on the ledger, not on Dagster: a delivery for a key runs under a per-key database
lock and skips every channel that already has a 'sent' (or refused-for-good) row, so repeated
ticks, retried runs and restarts never send twice; a channel that failed is retried by the next
round (a new run key, counted from the ledger's failed rounds), never the ones that succeeded.
"""

import json
from collections.abc import Callable
from datetime import datetime

import dagster as dg

from gpu_cost_pipeline.core.attribution import pod_in_scope
from gpu_cost_pipeline.core.budgets import (
    MAX_ROUNDS,
    RESOLVE,
    TRIGGER,
    AlertKey,
    BudgetState,
    DeliveryRecord,
    alerts_due,
    month_period,
    percentage,
)
from gpu_cost_pipeline.core.specs import Alert, Budget, Channel, Specs
from gpu_cost_pipeline.defs.budgets import clock
from gpu_cost_pipeline.defs.budgets.resources import SpecSource
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.integrations import notify
from gpu_cost_pipeline.integrations.kubernetes import KubernetesSourceError
from gpu_cost_pipeline.integrations.notify.base import FAILED, Delivery
from gpu_cost_pipeline.store import budgets as budget_store
from gpu_cost_pipeline.store.cost_store import CostStore

POD_ALERT = "cost-limit"
POD_PERIOD = "lifetime"


class BudgetAlertConfig(dg.Config):
    namespace: str
    budget: str
    alert: str
    period: str
    action: str = TRIGGER


class PodAlertConfig(dg.Config):
    pod_uid: str


def notification_for(
    cluster: str,
    budget: Budget,
    alert: Alert,
    key: AlertKey,
    state: BudgetState | None,
    now: datetime,
    current_period: str,
) -> notify.Notification:
    ref, limit = budget.ref, budget.spec.monthlyLimit
    spend = state.current_spend if state and state.period == key.period else 0.0
    used = percentage(spend, limit)
    details = {
        "budget": f"{ref.namespace}/{ref.name}",
        "alert": alert.name,
        "threshold": f"{alert.thresholdPercent:g}%",
        "period": key.period,
        "spend": f"${spend:,.2f}",
        "monthly limit": f"${limit:,.2f}",
        "used": f"{used:.1f}%",
        "scope": budget.scope.describe(),
    }
    if key.action == RESOLVE:
        if key.period != current_period:
            why = f"the month {key.period} is over"
        elif not budget.spec.enabled:
            why = "the budget was disabled"
        else:
            why = f"spend is back under {alert.thresholdPercent:g}% of the limit (${limit:,.2f})"
        title = f"CostBudget {ref.namespace}/{ref.name}: {alert.name} resolved"
        text = f"Resolved: {why}."
    else:
        title = (
            f"CostBudget {ref.namespace}/{ref.name}: {alert.name} — {used:.0f}% of "
            f"${limit:,.0f} used"
        )
        text = (
            f"GPU spend for {key.period} is ${spend:,.2f} of the ${limit:,.2f} monthly limit "
            f"({used:.1f}%), past the {alert.thresholdPercent:g}% threshold."
        )
    return notify.Notification(
        title=title,
        text=text,
        severity=alert.severity,
        action=key.action,
        dedup_key=f"gpu-budget/{cluster}/{ref.namespace}/{ref.name}/{alert.name}/{key.period}",
        source=str(ref),
        group=ref.namespace,
        details=details,
        timestamp=now,
    )


def deliver(
    context: dg.OpExecutionContext,
    store: CostStore,
    cluster: str,
    subject_kind: str,
    key: AlertKey,
    channels: list[tuple[int, Channel]],
    settings_for: Callable[[Channel], dict],
    notification: notify.Notification,
    policy: notify.RetryPolicy,
) -> dict[str, int]:
    """Send to every channel not yet done for ``key``, one at a time under the key's lock, and
    record each attempt. Returns counts per outcome (and "skipped")."""
    counts = {"sent": 0, "failed": 0, "rejected": 0, "skipped": 0}
    with budget_store.session(store) as conn:
        for index, channel in channels:
            with conn.transaction():
                budget_store.lock_alert(conn, cluster, subject_kind, key)
                if index in budget_store.channels_done(conn, cluster, subject_kind, key):
                    counts["skipped"] += 1
                    continue
                try:
                    delivery = notify.send(
                        channel.type, settings_for(channel), notification, policy
                    )
                except ValueError as error:  # a Secret that cannot be read
                    delivery = Delivery(FAILED, 0, str(error))
                budget_store.record_attempt(
                    conn,
                    cluster,
                    subject_kind,
                    key,
                    index,
                    channel.type,
                    delivery.outcome,
                    delivery.attempts,
                    delivery.detail,
                    context.run_id,
                )
            counts[delivery.outcome] += 1
            log = context.log.info if delivery.outcome == "sent" else context.log.warning
            log(
                f"{key.action} {notification.source} alert {key.alert} ({key.period}) via "
                f"channel {index} ({channel.type}): {delivery.outcome} after "
                f"{delivery.attempts} attempt(s) — {delivery.detail}"
            )
    return counts


def _finish(counts: dict[str, int], what: str) -> dg.Output:
    metadata = {f"channels_{outcome}": n for outcome, n in counts.items()}
    if counts["failed"]:
        # The run shows red; the next sensor tick requests another round for those channels.
        raise dg.Failure(
            description=f"{counts['failed']} channel(s) failed for {what}; retried next tick",
            metadata=metadata,
        )
    return dg.Output(None, metadata=metadata)


@dg.op(description="Deliver one budget alert (or its resolution) to each of its channels once.")
def deliver_budget_alert(
    context: dg.OpExecutionContext,
    config: BudgetAlertConfig,
    store: CostStore,
    usage_source: UsageSource,
    specs: SpecSource,
) -> dg.Output:
    now = clock.now()
    cluster = usage_source.cluster
    key = AlertKey(config.namespace, config.budget, config.alert, config.period, config.action)
    budget = specs.load().budget(config.namespace, config.budget)
    alert = budget.alert(config.alert) if budget else None
    if budget is None or alert is None:
        context.log.warning(f"{key.run_key}: the budget or alert no longer exists; nothing sent")
        return dg.Output(None, metadata={"channels_sent": 0})
    with budget_store.session(store) as conn:
        state = budget_store.budget_states(conn, cluster).get((config.namespace, config.budget))
        channels = list(enumerate(alert.channels))
        if key.action == RESOLVE:  # only the channels that heard the trigger hear the resolve
            fired = budget_store.channels_done(
                conn,
                cluster,
                budget_store.BUDGET_SUBJECT,
                AlertKey(key.namespace, key.budget, key.alert, key.period, TRIGGER),
                ("sent",),
            )
            channels = [(i, c) for i, c in channels if i in fired]
    current_period = month_period(now, specs.timezone).key
    notification = notification_for(cluster, budget, alert, key, state, now, current_period)
    counts = deliver(
        context,
        store,
        cluster,
        budget_store.BUDGET_SUBJECT,
        key,
        channels,
        lambda channel: specs.channel_settings(budget, channel),
        notification,
        specs.retry_policy(),
    )
    if counts["sent"] and specs.acts_on_cluster:
        problem = specs.record_event(
            budget.ref,
            "BudgetAlertResolved" if key.action == RESOLVE else "BudgetAlertFired",
            notification.title,
            warning=key.action == TRIGGER,
        )
        if problem:
            context.log.warning(problem)
    return _finish(counts, key.run_key)


def covering_channels(
    budgets: list[Budget], pod: dict, labels: dict
) -> list[tuple[Budget, Channel]]:
    """The channels of every alert of every enabled budget whose scope holds the pod, once each."""
    found: list[tuple[Budget, Channel]] = []
    seen: set[str] = set()
    for budget in budgets:
        if not budget.spec.enabled or not pod_in_scope(pod, labels, budget.scope):
            continue
        for alert in budget.spec.alerts:
            for channel in alert.channels:
                identity = channel.model_dump_json()
                if identity not in seen:
                    seen.add(identity)
                    found.append((budget, channel))
    return found


@dg.op(
    description="Alert once for a pod past its gpu-autoscaler.io/cost-limit annotation: a "
    "Kubernetes Event on the pod and the channels of the budgets that cover it."
)
def deliver_pod_cost_alert(
    context: dg.OpExecutionContext,
    config: PodAlertConfig,
    store: CostStore,
    usage_source: UsageSource,
    specs: SpecSource,
) -> dg.Output:
    cluster = usage_source.cluster
    with budget_store.session(store) as conn:
        breaches = budget_store.pod_limit_breaches(conn, cluster)
    found = breaches[breaches["pod_uid"] == config.pod_uid]
    if found.empty:
        context.log.warning(f"pod {config.pod_uid} has no recorded cost-limit breach")
        return dg.Output(None)
    pod = found.iloc[0].to_dict()
    labels = json.loads(pod["labels"])
    key = AlertKey(pod["namespace"], config.pod_uid, POD_ALERT, POD_PERIOD, TRIGGER)
    message = (
        f"Pod {pod['namespace']}/{pod['pod']} has cost ${pod['cost_usd']:,.2f}, past its "
        f"gpu-autoscaler.io/cost-limit of ${pod['cost_limit_usd']:,.2f}."
    )
    targets = covering_channels(specs.load().budgets, pod, labels)
    notification = notify.Notification(
        title=f"Pod {pod['namespace']}/{pod['pod']} passed its cost limit",
        text=message,
        severity="warning",
        action=TRIGGER,
        dedup_key=f"gpu-pod-cost-limit/{cluster}/{config.pod_uid}",
        source=f"Pod {pod['namespace']}/{pod['pod']}",
        group=pod["namespace"],
        details={
            "pod": f"{pod['namespace']}/{pod['pod']}",
            "cost": f"${pod['cost_usd']:,.2f}",
            "cost limit": f"${pod['cost_limit_usd']:,.2f}",
            "team": pod["team"] or "(none)",
        },
    )
    by_channel = {id(channel): budget for budget, channel in targets}
    counts = deliver(
        context,
        store,
        cluster,
        budget_store.POD_SUBJECT,
        key,
        list(enumerate(channel for _, channel in targets)),
        lambda channel: specs.channel_settings(by_channel[id(channel)], channel),
        notification,
        specs.retry_policy(),
    )
    if not pod["event_recorded"]:
        _pod_event(context, specs, pod, message)
        with budget_store.session(store) as conn, conn.transaction():
            budget_store.mark_pod_event_recorded(conn, cluster, config.pod_uid)
    return _finish(counts, f"pod {config.pod_uid}")


def _pod_event(context: dg.OpExecutionContext, specs: SpecSource, pod: dict, message: str) -> None:
    if not specs.acts_on_cluster:
        context.log.info(f"no cluster to record an Event on: {message}")
        return
    involved = {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": pod["namespace"],
        "name": pod["pod"],
        "uid": pod["pod_uid"],
    }
    try:
        specs.kubernetes.create_event(involved, "CostLimitExceeded", message, "Warning")
    except KubernetesSourceError as error:
        context.log.warning(f"Event on pod {pod['namespace']}/{pod['pod']} not recorded: {error}")


@dg.job(description="Send one budget alert or resolution to its channels (once per channel).")
def send_budget_alerts() -> None:
    deliver_budget_alert()


@dg.job(description="Alert once for a pod past its cost-limit annotation.")
def send_pod_cost_alerts() -> None:
    deliver_pod_cost_alert()


def budget_alert_requests(specs: Specs, states: dict, ledger: dict, period) -> list[dg.RunRequest]:
    requests = []
    for budget in specs.budgets:
        state = states.get((budget.ref.namespace, budget.ref.name))
        for key, round_ in alerts_due(budget, state, period, ledger):
            requests.append(
                dg.RunRequest(
                    run_key=f"{key.run_key}#{round_}",
                    job_name=send_budget_alerts.name,
                    run_config={
                        "ops": {
                            "deliver_budget_alert": {
                                "config": {
                                    "namespace": key.namespace,
                                    "budget": key.budget,
                                    "alert": key.alert,
                                    "period": key.period,
                                    "action": key.action,
                                }
                            }
                        }
                    },
                    tags={
                        "gpu-autoscaler/budget": f"{key.namespace}/{key.budget}",
                        "gpu-autoscaler/alert": key.alert,
                        "gpu-autoscaler/period": key.period,
                        "gpu-autoscaler/action": key.action,
                    },
                )
            )
    return requests


def pod_alert_requests(breaches, ledger: dict, budgets: list[Budget]) -> list[dg.RunRequest]:
    """A run per pod past its limit until its Event is recorded and every channel of the
    budgets covering it is done."""
    requests = []
    for pod in breaches.to_dict("records"):
        key = AlertKey(pod["namespace"], pod["pod_uid"], POD_ALERT, POD_PERIOD, TRIGGER)
        record = ledger.get(key, DeliveryRecord())
        channels = covering_channels(budgets, pod, json.loads(pod["labels"]))
        done = pod["event_recorded"] and len(record.done_channels) >= len(channels)
        if done or record.failed_rounds >= MAX_ROUNDS:
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"pod/{pod['pod_uid']}#{record.failed_rounds}",
                job_name=send_pod_cost_alerts.name,
                run_config={
                    "ops": {"deliver_pod_cost_alert": {"config": {"pod_uid": pod["pod_uid"]}}}
                },
                tags={"gpu-autoscaler/pod": f"{pod['namespace']}/{pod['pod']}"},
            )
        )
    return requests


@dg.sensor(
    jobs=[send_budget_alerts, send_pod_cost_alerts],
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads budget state and the alert ledger; requests a delivery run per (budget, "
    "alert, month, trigger|resolve) and per pod past its cost limit.",
)
def budget_alerts(
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
        ledger = budget_store.ledger_records(conn, cluster)
        pod_ledger = budget_store.ledger_records(conn, cluster, budget_store.POD_SUBJECT)
        breaches = budget_store.pod_limit_breaches(conn, cluster)
    requests = budget_alert_requests(loaded, states, ledger, period)
    requests += pod_alert_requests(breaches, pod_ledger, loaded.budgets)
    if not requests:
        return dg.SkipReason(f"no alert due for {len(loaded.budgets)} budgets ({period.key})")
    return dg.SensorResult(run_requests=requests)
