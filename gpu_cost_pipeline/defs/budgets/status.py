"""Statuses of every CostBudget and CostAttribution, from the store and the specs: the plain
functions behind the budget_status and cost_attributions assets."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

import pandas as pd
import psycopg

from gpu_cost_pipeline.core import budgets as core_budgets
from gpu_cost_pipeline.core.attribution import (
    BREAKDOWN_COLUMNS,
    AttributionWindows,
    ScopedCosts,
    attribution_status,
    grouping_for,
)
from gpu_cost_pipeline.core.budgets import BREAKDOWN as BUDGET_BREAKDOWN_TITLES
from gpu_cost_pipeline.core.budgets import BurnWindow, Period, month_period
from gpu_cost_pipeline.core.specs import ATTRIBUTION_KIND, BUDGET_KIND, SpecRef, Specs
from gpu_cost_pipeline.defs.budgets.resources import SpecSource, condition
from gpu_cost_pipeline.store import budgets as budget_store
from gpu_cost_pipeline.store.cost_store import CostStore

MAX_LOGGED_PROBLEMS = 50
STATUS_TABLES = {BUDGET_KIND: "cost_budget_status", ATTRIBUTION_KIND: "cost_attribution_status"}
BUDGET_BREAKDOWN = tuple(BUDGET_BREAKDOWN_TITLES)


def log_problems(log: logging.Logger | logging.LoggerAdapter, specs: Specs, kind: str) -> None:
    problems = [p for p in specs.problems if p.ref.kind in (kind, "file", "object")]
    for problem in problems[:MAX_LOGGED_PROBLEMS]:
        log.warning(f"invalid spec: {problem}")
    if len(problems) > MAX_LOGGED_PROBLEMS:
        log.warning(f"... and {len(problems) - MAX_LOGGED_PROBLEMS} more invalid specs")


def _problem_rows(specs: Specs, kind: str) -> list[budget_store.StatusRow]:
    """One status row per invalid object, all its problems in one message."""
    by_ref: dict[SpecRef, list[str]] = defaultdict(list)
    for problem in specs.problems:
        if problem.ref.kind == kind:
            by_ref[problem.ref].append(f"{problem.field}: {problem.message}")
    return [
        budget_store.StatusRow(
            ref.namespace,
            ref.name,
            ref.source,
            {"conditions": [condition(False, "InvalidSpec", "; ".join(msgs), ref.generation)]},
            problem="; ".join(msgs),
        )
        for ref, msgs in by_ref.items()
    ]


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def budget_statuses(
    conn: psycopg.Connection, cluster: str, specs: Specs, source: SpecSource, now: datetime
) -> list[budget_store.StatusRow]:
    period = month_period(now, source.timezone)
    last = budget_store.last_cost_minute(conn, cluster)
    data_end = last + timedelta(minutes=1) if last else None
    recent_start = max(
        _hour(data_end or now) - timedelta(hours=source.burn_rate_hours), period.start
    )
    grouping = grouping_for([budget.scope for budget in specs.budgets], BUDGET_BREAKDOWN)
    frame = budget_store.month_costs(
        conn, cluster, period.start, period.end, grouping, recent_start, now
    )
    costs = ScopedCosts(frame, grouping.selectors)
    # Extrapolate from the data there is: a pipeline running for 1 hour has a 1-hour window.
    burn = BurnWindow(
        budget_store.first_cost_minute(conn, cluster, recent_start) or recent_start, data_end
    )
    previous = budget_store.budget_states(conn, cluster)
    fired = alerts_fired_by_budget(budget_store.alerts_fired(conn, cluster, period.key))
    active = budget_store.active_enforcements(conn, cluster)
    rows = []
    for budget in specs.budgets:
        key = (budget.ref.namespace, budget.ref.name)
        status = core_budgets.budget_status(budget, costs, period, burn, now)
        status["alertsFired"] = fired.get(key, [])
        status["enforcementActive"] = key in active
        if key in active:
            status["enforcement"] = {
                "action": active[key]["action"],
                "since": active[key]["applied_at"].isoformat(),
            }
        status["lastUpdated"] = now.isoformat()
        state = "Disabled" if not budget.spec.enabled else "StatusComputed"
        status["conditions"] = [
            condition(
                True,
                state,
                f"spend for {period.key} as of {status['lastUpdated']}",
                budget.ref.generation,
            )
        ]
        spend, limit = status["currentSpend"], budget.spec.monthlyLimit
        rows.append(
            budget_store.StatusRow(
                budget.ref.namespace,
                budget.ref.name,
                budget.ref.source,
                status,
                period=period.key,
                monthly_limit=limit,
                current_spend=spend,
                exceeded_since=core_budgets.exceeded_since(
                    spend, limit, previous.get(key), period.key, now
                ),
            )
        )
    return rows + _problem_rows(specs, BUDGET_KIND)


def alerts_fired_by_budget(ledger: pd.DataFrame) -> dict[tuple[str, str], list[dict]]:
    """The status's alertsFired: per alert of the period, when it fired and each channel's
    outcome (sent, failed, rejected), and whether it has been resolved."""
    result: dict[tuple[str, str], list[dict]] = defaultdict(list)
    if ledger.empty:
        return result
    triggers = ledger[ledger["action"] == core_budgets.TRIGGER]
    resolved = set(
        map(
            tuple,
            ledger.loc[
                ledger["sent"] & (ledger["action"] == core_budgets.RESOLVE),
                ["namespace", "name", "alert"],
            ].to_numpy(),
        )
    )
    for (namespace, name, alert), rows in triggers.groupby(["namespace", "name", "alert"]):
        sent_at = rows["sent_at"].dropna()
        result[(namespace, name)].append(
            {
                "name": alert,
                "firedAt": sent_at.min().isoformat() if len(sent_at) else None,
                "channels": [
                    {"type": r.channel_type, "status": "sent" if r.sent else r.last_outcome}
                    for r in rows.sort_values("channel_index").itertuples()
                ],
                "resolved": (namespace, name, alert) in resolved,
            }
        )
    return result


def attribution_statuses(
    conn: psycopg.Connection, cluster: str, specs: Specs, timezone: str, now: datetime
) -> list[budget_store.StatusRow]:
    rows = _problem_rows(specs, ATTRIBUTION_KIND)
    attributions = specs.attributions
    last = budget_store.last_cost_minute(conn, cluster)
    if last is None or not attributions:
        for attribution in attributions:
            ref = attribution.ref
            rows.append(
                budget_store.StatusRow(
                    ref.namespace,
                    ref.name,
                    ref.source,
                    {
                        "conditions": [
                            condition(False, "NoCostData", "no cost rows yet", ref.generation)
                        ]
                    },
                )
            )
        return rows
    windows = AttributionWindows(last, month_period(last, timezone).start)
    grouping = grouping_for([a.scope for a in attributions], tuple(BREAKDOWN_COLUMNS))
    measures = {
        "day": budget_store.Measure(windows.day_start),
        "month": budget_store.Measure(windows.month_start),
    }
    for days in {a.spec.retentionDays for a in attributions}:
        since = windows.total_start(days)
        measures[f"total_{days}d"] = budget_store.Measure(since)
        measures[f"total_{days}d_gpu_hours"] = budget_store.Measure(since, "gpu_hours")
        measures[f"total_{days}d_on_demand"] = budget_store.Measure(since, "on_demand_cost_usd")
        measures[f"total_{days}d_exclusive"] = budget_store.Measure(since, "exclusive_cost_usd")
    earliest = min(m.since for m in measures.values())
    costs = ScopedCosts(
        budget_store.grouped_costs(conn, cluster, earliest, windows.data_end, grouping, measures),
        grouping.selectors,
    )
    active = ScopedCosts(
        budget_store.minute_costs(conn, cluster, last, windows.data_end, grouping),
        grouping.selectors,
    )
    hour_start = windows.data_end - timedelta(hours=1)
    hour = ScopedCosts(
        budget_store.minute_costs(conn, cluster, hour_start, windows.data_end, grouping),
        grouping.selectors,
    )
    for attribution in attributions:
        ref = attribution.ref
        status = attribution_status(attribution, costs, active, hour)
        status["lastUpdated"] = now.isoformat()
        status["dataThrough"] = windows.data_end.isoformat()
        status["conditions"] = [
            condition(
                True, "StatusComputed", f"costs through {status['dataThrough']}", ref.generation
            )
        ]
        rows.append(budget_store.StatusRow(ref.namespace, ref.name, ref.source, status))
    return rows


def publish(source: SpecSource, rows: list[budget_store.StatusRow], kind: str, log) -> int:
    """Statuses of cluster specs onto their status subresource; problems logged."""
    written = 0
    for row in rows:
        ref = SpecRef(kind, row.namespace, row.name, row.source)
        problem = source.publish_status(ref, row.status)
        if problem:
            log.warning(problem)
        elif row.source == "cluster":
            written += 1
    return written


def period_of(source: SpecSource, now: datetime) -> Period:
    return month_period(now, source.timezone)


def refresh_statuses(
    log,
    store: CostStore,
    cluster: str,
    source: SpecSource,
    kind: str,
    compute: Callable[[psycopg.Connection, Specs, datetime], list[budget_store.StatusRow]],
    now: datetime,
) -> tuple[list[budget_store.StatusRow], int]:
    """What both status assets do: read the specs (problems logged), compute every status,
    replace the status table's rows, write the cluster's status subresources. Returns the rows
    and how many statuses reached the cluster."""
    specs = source.load()
    log_problems(log, specs, kind)
    with budget_store.session(store) as conn:
        rows = compute(conn, specs, now)
        budget_store.write_statuses(conn, STATUS_TABLES[kind], cluster, rows, now)
    return rows, publish(source, rows, kind, log)
