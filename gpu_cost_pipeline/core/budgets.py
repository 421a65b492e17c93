"""CostBudget status for a calendar month, and the decisions the sensors take from it: which
alerts are due (trigger or resolve) and whether enforcement must be applied or lifted.

Pure functions over specs, grouped costs (``ScopedCosts``) and what the ledgers recorded; the
sensors re-read the specs every tick, so raising ``monthlyLimit`` or setting ``enabled: false``
acts on the next tick without waiting for new cost data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from gpu_cost_pipeline.core.attribution import ScopedCosts, money
from gpu_cost_pipeline.core.specs import Budget

OK, WARNING, EXCEEDED = "ok", "warning", "exceeded"
WARNING_PERCENT = 80.0  # budgetStatus turns "warning" here, or when the projection exceeds
TRIGGER, RESOLVE = "trigger", "resolve"
APPLY, LIFT = "apply", "lift"
ENFORCING_ACTIONS = ("block", "throttle")
BREAKDOWN = {
    "namespace": "byNamespace",
    "team": "byTeam",
    "gpu_model": "byGPUModel",
    "capacity_type": "byCapacityType",
}


@dataclass(frozen=True)
class Period:
    """One calendar month in the budgets' time zone, as UTC instants."""

    key: str  # "2026-11"
    start: datetime
    end: datetime

    def hours_left(self, moment: datetime) -> float:
        return max(0.0, (self.end - moment).total_seconds() / 3600)

    def days_remaining(self, now: datetime) -> int:
        """Days until the period ends, a started day counting as one (0 once it is over)."""
        return max(0, math.ceil((self.end - now).total_seconds() / 86400))


def month_period(moment: datetime, timezone: str = "UTC") -> Period:
    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return Period(
        key=f"{start.year:04d}-{start.month:02d}",
        start=start.astimezone(ZoneInfo("UTC")),
        end=following.astimezone(ZoneInfo("UTC")),
    )


def previous_period(period: Period, timezone: str = "UTC") -> Period:
    return month_period(period.start - timedelta(minutes=1), timezone)


@dataclass(frozen=True)
class BurnWindow:
    """The recent cost the projection extrapolates: cost since ``start`` up to ``data_end``."""

    start: datetime
    data_end: datetime | None  # end of the newest minute with cost rows; None: no data

    @property
    def hours(self) -> float:
        if self.data_end is None:
            return 0.0
        return max(0.0, (self.data_end - self.start).total_seconds() / 3600)


@dataclass(frozen=True)
class BudgetState:
    """What budget_status stored for a budget, as the sensors read it back."""

    namespace: str
    name: str
    period: str
    monthly_limit: float
    current_spend: float
    exceeded_since: datetime | None
    computed_at: datetime


def percentage(spend: float, limit: float) -> float:
    return spend / limit * 100 if limit > 0 else 0.0


def classify(spend: float, limit: float, projected: float) -> str:
    used = percentage(spend, limit)
    if used >= 100:
        return EXCEEDED
    if used >= WARNING_PERCENT or projected > limit:
        return WARNING
    return OK


def budget_status(
    budget: Budget,
    costs: ScopedCosts,
    period: Period,
    burn: BurnWindow,
    now: datetime,
) -> dict:
    """The seed's CostBudget status fields computed from the month's costs (``costs`` carries
    ``cost_usd`` for the period and ``recent_cost_usd`` for the burn window). alertsFired and
    enforcementActive come from the ledgers and are filled in by the caller."""
    summary = costs.summary(budget.scope, ("cost_usd", "recent_cost_usd"), BREAKDOWN)
    spend, recent = summary["cost_usd"], summary["recent_cost_usd"]
    rate = recent / burn.hours if burn.hours > 0 else 0.0
    # Spend so far + the recent burn rate × the hours left in the month.
    projected = spend + rate * period.hours_left(burn.data_end or now)
    limit = budget.spec.monthlyLimit
    return {
        "currentSpend": money(spend),
        "percentageUsed": round(percentage(spend, limit), 2),
        "budgetStatus": classify(spend, limit, projected),
        "projectedMonthlySpend": money(projected),
        "daysRemaining": period.days_remaining(now),
        "alertsFired": [],
        "enforcementActive": False,
        "breakdown": {title: summary[title] for title in BREAKDOWN.values()},
        "burnRatePerHour": money(rate),
        "period": period.key,
        "monthlyLimit": limit,
        "scope": budget.scope.describe(),
    }


def exceeded_since(
    spend: float, limit: float, previous: BudgetState | None, period: str, now: datetime
) -> datetime | None:
    """When the budget went over its limit in this period: kept from the previous status while
    it stays over, set to now when it first is, cleared when it falls back under."""
    if spend < limit:
        return None
    if previous is not None and previous.period == period and previous.exceeded_since:
        return previous.exceeded_since
    return now


# --- alerts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertKey:
    namespace: str
    budget: str
    alert: str
    period: str
    action: str  # trigger | resolve

    @property
    def run_key(self) -> str:
        return f"{self.namespace}/{self.budget}/{self.alert}/{self.period}/{self.action}"


@dataclass
class DeliveryRecord:
    """What the alert ledger holds for one AlertKey."""

    done_channels: set[int] = field(default_factory=set)  # sent, or refused for good
    sent_channels: set[int] = field(default_factory=set)
    failed_rounds: int = 0  # job runs that left a channel to retry


MAX_ROUNDS = 20  # job runs per AlertKey before a failing channel is given up (logged)


def alerts_due(
    budget: Budget,
    state: BudgetState | None,
    period: Period,
    ledger: dict[AlertKey, DeliveryRecord],
) -> list[tuple[AlertKey, int]]:
    """(key, round) of each delivery the alert sensor should request now.

    A threshold triggers once per (budget, alert, month); a resolve follows, once, when the
    month it fired in is over, the spend (against the current limit) is back under it, the
    budget is disabled, or the alert was removed.
    """
    ns, name = budget.ref.namespace, budget.ref.name
    spend = state.current_spend if state is not None and state.period == period.key else 0.0
    used = percentage(spend, budget.spec.monthlyLimit)
    due: list[tuple[AlertKey, int]] = []

    def want(key: AlertKey, channels: int) -> None:
        record = ledger.get(key, DeliveryRecord())
        if len(record.done_channels) < channels and record.failed_rounds < MAX_ROUNDS:
            due.append((key, record.failed_rounds))

    for alert in budget.spec.alerts:
        key = AlertKey(ns, name, alert.name, period.key, TRIGGER)
        if budget.spec.enabled and used >= alert.thresholdPercent:
            want(key, len(alert.channels))
    for key, record in ledger.items():
        if (key.namespace, key.budget, key.action) != (
            ns,
            name,
            TRIGGER,
        ) or not record.sent_channels:
            continue
        alert = budget.alert(key.alert)
        if alert is None:
            continue  # removed from the spec: its channels are gone with it
        still_firing = (
            key.period == period.key and budget.spec.enabled and used >= alert.thresholdPercent
        )
        if not still_firing:
            want(
                AlertKey(ns, name, key.alert, key.period, RESOLVE),
                len(record.sent_channels),
            )
    return due


# --- enforcement -------------------------------------------------------------------------------


def enforcement_due(
    budget: Budget,
    state: BudgetState | None,
    period: Period,
    active_action: str | None,
    now: datetime,
) -> str | None:
    """APPLY, LIFT or None for one budget, given the action in force (None when none is)."""
    spec = budget.spec
    spend = state.current_spend if state is not None and state.period == period.key else 0.0
    over = spec.enabled and spend >= spec.monthlyLimit
    wanted = None
    if over and spec.enforcement.action in ENFORCING_ACTIONS:
        since = (state.exceeded_since if state else None) or (state.computed_at if state else now)
        if now - since >= timedelta(minutes=spec.enforcement.gracePeriodMinutes):
            wanted = spec.enforcement.action
        elif active_action == spec.enforcement.action:
            wanted = active_action  # already in force: the grace period is behind us
    if active_action and active_action != wanted:
        return LIFT  # lifted first; a different action is applied on a later tick
    if wanted and active_action is None:
        return APPLY
    return None


def orphaned_enforcements(budgets: list[Budget], active: dict[tuple[str, str], str]) -> list:
    """Enforcements in force whose CostBudget no longer exists: lift them."""
    present = {(b.ref.namespace, b.ref.name) for b in budgets}
    return [key for key in active if key not in present]
