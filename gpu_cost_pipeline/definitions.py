"""The one Definitions object of the gpu_cost_pipeline code location."""

from __future__ import annotations

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)  # backfill_policy is beta in 1.13

from gpu_cost_pipeline.defs.attribution.assets import cost_attributions
from gpu_cost_pipeline.defs.budgets.alerts import (
    budget_alerts,
    send_budget_alerts,
    send_pod_cost_alerts,
)
from gpu_cost_pipeline.defs.budgets.assets import budget_status
from gpu_cost_pipeline.defs.budgets.enforcement import budget_enforcement, enforce_budget
from gpu_cost_pipeline.defs.budgets.jobs import (
    budget_status_after_costs,
    budget_status_after_history,
    budget_status_job,
    cost_attributions_every_5_minutes,
    cost_attributions_job,
)
from gpu_cost_pipeline.defs.catch_up import build_catch_up_sensor
from gpu_cost_pipeline.defs.costs.assets import gpu_cost
from gpu_cost_pipeline.defs.history.assets import gpu_cost_history, gpu_cost_history_job
from gpu_cost_pipeline.defs.jobs import gpu_cost_every_minute, gpu_cost_job
from gpu_cost_pipeline.defs.maintenance import retention_daily, retention_job
from gpu_cost_pipeline.defs.pricing.assets import gpu_prices
from gpu_cost_pipeline.defs.pricing.books import PRICE_BOOK_SCHEDULES, PRICE_BOOKS
from gpu_cost_pipeline.defs.resources import build_resources
from gpu_cost_pipeline.defs.roi.assets import roi_job, roi_report, roi_report_daily
from gpu_cost_pipeline.defs.usage.assets import gpu_usage
from gpu_cost_pipeline.settings import load_settings

defs = dg.Definitions(
    assets=[gpu_usage, gpu_prices, gpu_cost, *PRICE_BOOKS, roi_report],
    jobs=[gpu_cost_job, retention_job, roi_job],
    schedules=[gpu_cost_every_minute, retention_daily, *PRICE_BOOK_SCHEDULES, roi_report_daily],
    sensors=[build_catch_up_sensor(load_settings().catch_up_hours)],
    resources=build_resources(),
    # Every job here (the cost job, retention, and the asset jobs the UI builds for backfills)
    # runs its steps one after another anyway: one process saves a Python start-up per step,
    # which matters when a run must finish well inside its minute.
    executor=dg.in_process_executor,
)

# Attribution, budgets, alerts and enforcement.
defs = dg.Definitions.merge(
    defs,
    dg.Definitions(
        assets=[cost_attributions, budget_status],
        jobs=[
            budget_status_job,
            cost_attributions_job,
            send_budget_alerts,
            send_pod_cost_alerts,
            enforce_budget,
        ],
        schedules=[cost_attributions_every_5_minutes],
        sensors=[
            budget_status_after_costs,
            budget_status_after_history,
            budget_alerts,
            budget_enforcement,
        ],
    ),
)

# History older than the minute partitions, and large backfills: one partition per UTC day.
defs = dg.Definitions.merge(
    defs, dg.Definitions(assets=[gpu_cost_history], jobs=[gpu_cost_history_job])
)
