"""Gaps fill themselves: after downtime of the daemon, the database or the cluster API, the
minute partitions of gpu_cost left missing are materialized by one range run, or reported.

The every-minute schedule only requests the minute just closed (Dagster: "has no partition
set, so not trying to catch up"). This sensor looks back ``GPU_COST_CATCH_UP_HOURS`` and:
- with a source that sees the past (prometheus, simulated): requests one run of gpu_cost_job
  over the oldest missing stretch (at most a day of minutes), one at a time;
- minutes of days materialized as gpu_cost_history count as present (same tables);
- with the live kubernetes source, which cannot see the past: reports the gaps (the sensor's
  tick in the UI says which minutes are missing, `gpu-autoscaler cost` says how much of a
  period has no data), never fills them with the present.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from gpu_cost_pipeline.defs.jobs import gpu_cost_job
from gpu_cost_pipeline.defs.partitions import minute_partitions
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.settings import PARTITION_FORMAT

CATCH_UP_TAG = "gpu_cost/catch_up"
# The schedule's own minutes: the one just closed (and the one before, still running).
SCHEDULE_GRACE = timedelta(minutes=3)
MAX_MINUTES_PER_RUN = 1440  # as the backfill policy: one run per day of minutes
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def missing_stretches(
    materialized: set[str], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The [first, last] minute starts of each run of missing minute partitions in
    [start, end), oldest first."""
    stretches: list[tuple[datetime, datetime]] = []
    minute = start
    open_start: datetime | None = None
    while minute < end:
        missing = minute.strftime(PARTITION_FORMAT) not in materialized
        if missing and open_start is None:
            open_start = minute
        if not missing and open_start is not None:
            stretches.append((open_start, minute - timedelta(minutes=1)))
            open_start = None
        minute += timedelta(minutes=1)
    if open_start is not None:
        stretches.append((open_start, end - timedelta(minutes=1)))
    return stretches


def minutes_of_days(days: set[str], start: datetime, end: datetime) -> set[str]:
    """The minute keys in [start, end) of the days gpu_cost_history wrote (same tables)."""
    keys = set()
    day = start.replace(hour=0, minute=0)
    while day < end:
        if day.strftime("%Y-%m-%d") in days:
            minutes = range(int((min(day + timedelta(days=1), end) - day).total_seconds() // 60))
            keys.update((day + timedelta(minutes=m)).strftime(PARTITION_FORMAT) for m in minutes)
        day += timedelta(days=1)
    return keys


def describe(stretches: list[tuple[datetime, datetime]]) -> str:
    shown = ", ".join(f"{a:%Y-%m-%d %H:%M}–{b:%H:%M}" for a, b in stretches[:5])
    more = f" and {len(stretches) - 5} more" if len(stretches) > 5 else ""
    minutes = sum(int((b - a).total_seconds() // 60) + 1 for a, b in stretches)
    return f"{minutes} missing minutes of gpu_cost ({shown}{more} UTC)"


def catch_up_request(
    context: dg.SensorEvaluationContext, usage_source: UsageSource, hours: int
) -> dg.RunRequest | dg.SkipReason:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first = minute_partitions.start.astimezone(UTC) if minute_partitions.start else now
    start = max(now - timedelta(hours=hours), first)
    end = now - SCHEDULE_GRACE
    if end <= start:
        return dg.SkipReason("nothing old enough to check yet")
    active = context.instance.get_runs(
        filters=dg.RunsFilter(tags={CATCH_UP_TAG: "true"}, statuses=_ACTIVE), limit=1
    )
    if active:
        return dg.SkipReason(f"catch-up run {active[0].run_id} is still going")
    materialized = context.instance.get_materialized_partitions(dg.AssetKey("gpu_cost"))
    materialized |= minutes_of_days(
        context.instance.get_materialized_partitions(dg.AssetKey("gpu_cost_history")), start, end
    )
    stretches = missing_stretches(materialized, start, end)
    if not stretches:
        return dg.SkipReason(f"no gaps in the last {hours} h")
    if not usage_source.sees_the_past:
        return dg.SkipReason(
            f"gap: {describe(stretches)}; the kubernetes source sees only the present, so they "
            "stay missing (set GPU_COST_SOURCE=prometheus to fill gaps from history)"
        )
    first_missing, last_missing = stretches[0]
    last_missing = min(last_missing, first_missing + timedelta(minutes=MAX_MINUTES_PER_RUN - 1))
    keys = (first_missing.strftime(PARTITION_FORMAT), last_missing.strftime(PARTITION_FORMAT))
    context.log.info(f"filling {keys[0]} … {keys[1]}; {describe(stretches)}")
    return dg.RunRequest(
        run_key=f"catch-up:{keys[0]}:{keys[1]}",
        tags={
            ASSET_PARTITION_RANGE_START_TAG: keys[0],
            ASSET_PARTITION_RANGE_END_TAG: keys[1],
            CATCH_UP_TAG: "true",
        },
    )


def build_catch_up_sensor(hours: int) -> dg.SensorDefinition:
    @dg.sensor(
        job=gpu_cost_job,
        minimum_interval_seconds=120,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Materializes missing minutes of the last {hours} h in one range run "
        "(sources that see the past), or reports them as gaps (the live kubernetes source).",
    )
    def gpu_cost_gap_catch_up(context: dg.SensorEvaluationContext, usage_source: UsageSource):
        return catch_up_request(context, usage_source, hours)

    return gpu_cost_gap_catch_up
