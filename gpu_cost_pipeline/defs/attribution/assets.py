"""cost_attributions: every CostAttribution's status (the seed's fields) from the rollups, into
the status table and the status subresource."""

import dagster as dg

from gpu_cost_pipeline.core.specs import ATTRIBUTION_KIND
from gpu_cost_pipeline.defs.budgets import clock
from gpu_cost_pipeline.defs.budgets.resources import SpecSource
from gpu_cost_pipeline.defs.budgets.status import attribution_statuses, refresh_statuses
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store.cost_store import CostStore


@dg.asset(
    deps=["gpu_cost"],
    group_name="attribution",
    kinds={"postgres", "kubernetes"},
    description="Per CostAttribution: totalCost (its retentionDays), dailyCost, monthlyCost, "
    "hourlyCost, activePods, activeGPUs, costPerGPUHour, detailedBreakdown, savings "
    "(on-demand and exclusive baselines minus actual).",
)
def cost_attributions(
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
        ATTRIBUTION_KIND,
        lambda conn, loaded, now: attribution_statuses(conn, cluster, loaded, specs.timezone, now),
        clock.now(),
    )
    metadata: dict = {
        "attributions": sum(r.problem is None for r in rows),
        "invalid_specs": sum(r.problem is not None for r in rows),
        "statuses_written_to_cluster": written,
    }
    for row in rows:
        if row.problem is None and "monthlyCost" in row.status:
            metadata[f"{row.namespace}/{row.name} monthly_cost_usd"] = row.status["monthlyCost"]
    return dg.MaterializeResult(metadata=metadata)
