"""budget_status refreshed after every gpu_cost materialization (a sensor, so it follows within
seconds, not on a slow cron), and cost_attributions every five minutes."""

import dagster as dg

budget_status_job = dg.define_asset_job(
    "budget_status_job", selection=["budget_status"], description="Refresh every budget's status."
)
cost_attributions_job = dg.define_asset_job(
    "cost_attributions_job",
    selection=["cost_attributions"],
    description="Refresh every CostAttribution's status.",
)


def _refresh_budgets_after(asset: str, name: str) -> dg.SensorDefinition:
    @dg.asset_sensor(
        asset_key=dg.AssetKey(asset),
        name=name,
        job=budget_status_job,
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Refreshes budget_status after each {asset} materialization.",
    )
    def refresh(
        context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
    ) -> dg.RunRequest:
        # One refresh per materialization (a range run's newest event stands for the whole run).
        return dg.RunRequest(run_key=f"{asset}:{asset_event.run_id}:{asset_event.timestamp}")

    return refresh


# Live minutes, and days rewritten by a history backfill (their spend counts this month too).
budget_status_after_costs = _refresh_budgets_after("gpu_cost", "budget_status_after_costs")
budget_status_after_history = _refresh_budgets_after(
    "gpu_cost_history", "budget_status_after_history"
)


cost_attributions_every_5_minutes = dg.ScheduleDefinition(
    job=cost_attributions_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
