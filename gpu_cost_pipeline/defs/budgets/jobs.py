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


@dg.asset_sensor(
    asset_key=dg.AssetKey("gpu_cost"),
    job=budget_status_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes budget_status after each gpu_cost materialization.",
)
def budget_status_after_costs(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest:
    # One refresh per materialization (a range run's newest event stands for the whole run).
    return dg.RunRequest(run_key=f"gpu_cost:{asset_event.run_id}:{asset_event.timestamp}")


cost_attributions_every_5_minutes = dg.ScheduleDefinition(
    job=cost_attributions_job,
    cron_schedule="*/5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
