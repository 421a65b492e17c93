"""Gaps fill themselves: the catch-up sensor finds the minutes of gpu_cost nobody materialized
(daemon, database or cluster API down) and requests one range run over them, or, with the live
kubernetes source that cannot see the past, reports them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from gpu_cost_pipeline.defs.catch_up import (
    CATCH_UP_TAG,
    build_catch_up_sensor,
    minutes_of_days,
    missing_stretches,
)
from gpu_cost_pipeline.defs.jobs import gpu_cost_job
from gpu_cost_pipeline.settings import PARTITION_FORMAT
from gpu_cost_pipeline_tests.test_pipeline import ASSETS, resources

T = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)


def key(moment: datetime) -> str:
    return moment.strftime(PARTITION_FORMAT)


def sensor_context(instance: dg.DagsterInstance, defs: dg.Definitions):
    return dg.build_sensor_context(
        instance=instance,
        definitions=defs,
        resources={"usage_source": defs.resources["usage_source"]},
    )


def test_missing_stretches_are_the_runs_of_absent_minutes():
    done = {key(T + timedelta(minutes=m)) for m in (0, 1, 4, 7)}
    stretches = missing_stretches(done, T, T + timedelta(minutes=9))
    minutes = [(int((a - T).seconds / 60), int((b - T).seconds / 60)) for a, b in stretches]
    assert minutes == [(2, 3), (5, 6), (8, 8)]


def test_days_written_by_gpu_cost_history_are_not_gaps():
    """The minutes of a materialized history day count as present; other days' do not."""
    day = T.replace(hour=0)
    start, end = day - timedelta(minutes=30), day + timedelta(days=1, minutes=30)
    present = minutes_of_days({f"{day:%Y-%m-%d}"}, start, end)
    assert len(present) == 1440
    stretches = missing_stretches(present, start, end)
    assert stretches == [
        (start, day - timedelta(minutes=1)),
        (day + timedelta(days=1), end - timedelta(minutes=1)),
    ]


def test_downtime_is_filled_by_one_range_run_then_nothing_is_missing(database_url: str):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    sensor = build_catch_up_sensor(hours=1)
    defs = dg.Definitions(
        assets=ASSETS, jobs=[gpu_cost_job], sensors=[sensor], resources=resources(database_url)
    )
    with dg.instance_for_test() as instance:
        # Up for ten minutes, down for forty (the daemon stopped), up again.
        for first, last in ((60, 51), (10, 4)):
            tags = {
                "dagster/asset_partition_range_start": key(now - timedelta(minutes=first)),
                "dagster/asset_partition_range_end": key(now - timedelta(minutes=last)),
            }
            assert dg.materialize(
                ASSETS, tags=tags, instance=instance, resources=resources(database_url)
            ).success
        evaluate = defs.resolve_sensor_def(sensor.name)
        with sensor_context(instance, defs) as context:
            [request] = evaluate.evaluate_tick(context).run_requests or []
        first = key(now - timedelta(minutes=50))
        last = key(now - timedelta(minutes=11))
        assert request.tags["dagster/asset_partition_range_start"] == first
        assert request.tags["dagster/asset_partition_range_end"] == last
        result = defs.resolve_job_def("gpu_cost_job").execute_in_process(
            instance=instance, tags=request.tags
        )
        assert result.success
        # The gap is gone: at most minutes that aged past the schedule's own since `now`.
        with sensor_context(instance, defs) as context:
            after = evaluate.evaluate_tick(context)
        if after.run_requests:
            start = after.run_requests[0].tags["dagster/asset_partition_range_start"]
            assert start >= key(now - timedelta(minutes=3))
        else:
            assert after.skip_message == "no gaps in the last 1 h"


def test_with_the_live_source_gaps_are_reported_not_filled(database_url: str):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    sensor = build_catch_up_sensor(hours=1)
    live = resources(database_url, source="kubernetes")
    defs = dg.Definitions(assets=ASSETS, jobs=[gpu_cost_job], sensors=[sensor], resources=live)
    with dg.instance_for_test() as instance, sensor_context(instance, defs) as context:
        result = defs.resolve_sensor_def(sensor.name).evaluate_tick(context)
    assert not result.run_requests
    message = result.skip_message or ""
    assert message.startswith("gap: ") and "missing minutes of gpu_cost" in message
    assert f"{now - timedelta(hours=1):%Y-%m-%d %H:%M}" in message
    assert "GPU_COST_SOURCE=prometheus" in message and CATCH_UP_TAG
