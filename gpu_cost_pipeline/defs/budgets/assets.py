"""budget_status: every CostBudget's spend for its calendar month, refreshed after each
gpu_cost materialization (see sensors.py), into the status table and the status subresource."""

import dagster as dg

from gpu_cost_pipeline.core.specs import BUDGET_KIND
from gpu_cost_pipeline.defs.budgets import clock
from gpu_cost_pipeline.defs.budgets.resources import SpecSource
from gpu_cost_pipeline.defs.budgets.status import budget_statuses, refresh_statuses
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store import budgets as budget_store
from gpu_cost_pipeline.store.cost_store import CostStore

MAX_BUDGETS_IN_METADATA = 100  # the most used ones; every budget is in the status table


@dg.asset(
    deps=["gpu_cost"],
    group_name="budgets",
    kinds={"postgres", "kubernetes"},
    description="Per CostBudget, this month: currentSpend, percentageUsed, budgetStatus, "
    "projectedMonthlySpend (spend so far + recent burn rate × hours left), daysRemaining, "
    "alertsFired, enforcementActive, breakdown. Also records pods past their cost-limit "
    "annotation.",
)
def budget_status(
    context: dg.AssetExecutionContext,
    store: CostStore,
    usage_source: UsageSource,
    specs: SpecSource,
) -> dg.MaterializeResult:
    cluster = usage_source.cluster
    rows, written = refresh_statuses(
        context.log,
        store,
        cluster,
        specs,
        BUDGET_KIND,
        lambda conn, loaded, now: budget_statuses(conn, cluster, loaded, specs, now),
        clock.now(),
    )
    with budget_store.session(store) as conn, conn.transaction():
        breaches = budget_store.record_pod_limit_breaches(conn, cluster)
    return dg.MaterializeResult(metadata=budget_metadata(rows, breaches, written))


def budget_metadata(rows: list[budget_store.StatusRow], breaches: int, written: int) -> dict:
    valid = [r for r in rows if r.problem is None]
    by_use = sorted(valid, key=lambda r: -r.status["percentageUsed"])
    metadata: dict = {
        "budgets": len(valid),
        "invalid_specs": len(rows) - len(valid),
        "exceeded": sum(r.status["budgetStatus"] == "exceeded" for r in valid),
        "warning": sum(r.status["budgetStatus"] == "warning" for r in valid),
        "enforcement_active": sum(bool(r.status["enforcementActive"]) for r in valid),
        "new_pod_cost_limit_breaches": breaches,
        "statuses_written_to_cluster": written,
    }
    for row in by_use[:MAX_BUDGETS_IN_METADATA]:
        name = f"{row.namespace}/{row.name}"
        metadata[f"{name} spend_usd"] = row.status["currentSpend"]
        metadata[f"{name} percent_used"] = row.status["percentageUsed"]
        metadata[f"{name} projected_usd"] = row.status["projectedMonthlySpend"]
    return metadata
