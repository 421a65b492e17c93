"""roi_report: one report per UTC day, derived from that day's cost rows and stored, with its
headline figures as numeric metadata (the UI plots them across days) and the report as a
markdown table."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from gpu_cost_pipeline.core.roi import Period, headline_figures, report_markdown
from gpu_cost_pipeline.defs.partitions import daily_partitions
from gpu_cost_pipeline.defs.reporting import add_partition_metadata
from gpu_cost_pipeline.defs.roi.resources import RoiConfig
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store import roi as roi_store
from gpu_cost_pipeline.store.cost_store import CostStore

ROLLUP_TOLERANCE = 1e-9  # relative


@dg.asset(
    deps=["gpu_cost"],
    partitions_def=daily_partitions,
    # A backfill is one run that writes each day in its own transaction (a day takes seconds).
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="roi",
    kinds={"postgres"},
    check_specs=[
        dg.AssetCheckSpec(
            "actual_cost_matches_hourly_rollup",
            asset="roi_report",
            description="Each day's actual cost equals the hourly rollup's cost for that day "
            f"(relative tolerance {ROLLUP_TOLERANCE:g}).",
        )
    ],
    description="Savings from spot, sharing, autoscaling and waste elimination, ROI metrics and "
    "recommendations, per UTC day; stored in roi_reports.",
)
def roi_report(
    context: dg.AssetExecutionContext, store: CostStore, usage_source: UsageSource, roi: RoiConfig
) -> dg.MaterializeResult:
    cluster = usage_source.cluster
    by_partition: dict[str, dict] = {}
    worst_gap = 0.0
    for key in context.partition_keys:
        day = date.fromisoformat(key)
        report, rollup_cost = write_day(store, cluster, day, roi)
        worst_gap = max(worst_gap, _relative_gap(report["actual_cost_usd"], rollup_cost))
        by_partition[key] = {
            **headline_figures(report),
            "report": dg.MetadataValue.md(report_markdown(report)),
        }
        context.log.info(
            f"{key}: savings ${report['total_savings_usd']:,.2f} of baseline "
            f"${report['baseline_cost_usd']:,.2f}, {len(report['recommendations'])} recommendations"
        )
    add_partition_metadata(context, "roi_report", by_partition)
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(
                check_name="actual_cost_matches_hourly_rollup",
                passed=worst_gap <= ROLLUP_TOLERANCE,
                metadata={"max_relative_gap": worst_gap},
            )
        ]
    )


def write_day(store: CostStore, cluster: str, day: date, roi: RoiConfig) -> tuple[dict, float]:
    """Derive, report and store one day in one transaction; returns the report and the hourly
    rollup's cost for the day (for the check)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    period = Period(cluster, start, start + timedelta(days=1))
    with store.connection() as conn, conn.transaction():
        roi_store.store_day_facts(conn, cluster, day, roi.interruptible_label)
        # Read back as any report reads a stored day, so `cost --roi` prints the same.
        facts, _ = roi.read_facts(conn, period)
        report = roi.report(facts, period)
        roi_store.save_report(conn, cluster, day, report)
        roi_store.delete_before(
            conn, cluster, datetime.now(UTC).date() - timedelta(days=store.rollup_retention_days)
        )
        rollup_cost = roi_store.rollup_cost(conn, cluster, start, start + timedelta(days=1))
    return report, rollup_cost


def _relative_gap(value: float, reference: float) -> float:
    return abs(value - reference) / max(abs(reference), 1e-12) if value or reference else 0.0


roi_job = dg.define_asset_job(
    "roi_job",
    selection=dg.AssetSelection.assets(roi_report),
    partitions_def=daily_partitions,
    description="The ROI report of a day.",
)

# Half an hour after midnight UTC: the day's last cost minutes are in by then.
roi_report_daily = dg.build_schedule_from_partitioned_job(
    roi_job,
    name="roi_report_daily",
    hour_of_day=0,
    minute_of_hour=30,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
