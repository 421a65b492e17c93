"""Daily retention: old minute and rollup rows go, so the store stays the size the retention
says (on TimescaleDB, policies drop the hypertables' and the hourly aggregate's old chunks; the
op deletes from the tables that are plain in both modes)."""

import dagster as dg

from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store import budgets as budget_store
from gpu_cost_pipeline.store.cost_store import CostStore


@dg.op(description="Delete this cluster's rows older than the configured retention.")
def apply_retention(
    context: dg.OpExecutionContext, store: CostStore, usage_source: UsageSource
) -> None:
    deleted = store.apply_retention(usage_source.cluster)
    with store.connection() as conn, conn.transaction():
        deleted["gpu_pod_cost_hourly"] = budget_store.delete_older_than(
            conn, usage_source.cluster, store.rollup_retention_days
        )
    context.log.info(f"retention removed {deleted or 'nothing (TimescaleDB policies apply)'}")


@dg.job(description="Retention for the cost store.")
def retention_job() -> None:
    apply_retention()


retention_daily = dg.ScheduleDefinition(
    job=retention_job,
    cron_schedule="17 3 * * *",  # off the hour, when nothing else is due
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
