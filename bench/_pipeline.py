"""Running gpu_cost_job in process, the way `gpu-autoscaler materialize` does.

The Definitions read the GPU_COST_* variables when first imported (resources, the partitions'
start), so they are imported lazily, on the first ``run_job`` or ``minute_partitions`` call: call
``configure`` (and set any other variable) before that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from bench._common import BENCH_CLUSTER, Stopwatch, progress, report
from gpu_cost_pipeline.settings import load_settings
from gpu_cost_pipeline.store.cost_store import CostStore

_STEP_MARKS = {
    "STEP_START": "start",
    "STEP_OUTPUT": "result",
    "ASSET_MATERIALIZATION": "result",
    "STEP_SUCCESS": "end",
}
# The loggers as `gpu-autoscaler materialize` sets them: warnings on the console.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def configure(data_dir: Path, pods: int) -> None:
    """Settings for the Definitions; must run before the first import of them."""
    os.environ["GPU_COST_DATA_DIR"] = str(data_dir)
    os.environ["GPU_COST_SIMULATED_PODS"] = str(pods)
    os.environ["GPU_COST_CLUSTER"] = BENCH_CLUSTER
    # Benchmarks pin days (e.g. 2026-11-20, a week of history): minute partitions reach back to
    # GPU_COST_PARTITION_START, as the test session does.
    os.environ["GPU_COST_MINUTE_PARTITION_DAYS"] = "62"


@dataclass
class StepTiming:
    """One step, from the event log's timestamps: the asset function's work up to its first
    result, then the per-partition events Dagster logs for the results."""

    compute_s: float
    events_s: float
    materializations: int

    @property
    def seconds(self) -> float:
        return self.compute_s + self.events_s


@dataclass
class RunFigures:
    seconds: float
    before_steps_s: float  # launch to the first step's start: run creation and planning
    rows: dict[str, int]  # the "rows" metadata per asset
    steps: dict[str, StepTiming]
    failed_checks: list[str]


def prepare_store() -> float:
    """Start the embedded server and migrate (both cached per process); returns seconds."""
    with Stopwatch() as watch:
        CostStore.from_settings(load_settings()).mode()
    return watch.seconds


def _job(name: str) -> dg.JobDefinition:
    from gpu_cost_pipeline.definitions import defs

    return defs.resolve_job_def(name)


def run_job(
    partition_key: str | None = None,
    key_range: tuple[str, str] | None = None,
    job_name: str = "gpu_cost_job",
) -> RunFigures:
    """One run of a job (gpu_cost_job by default) for one partition or one partition range
    (what the backfill policy launches), in a fresh ephemeral instance; raises if it fails."""
    job = _job(job_name)
    tags = (
        {ASSET_PARTITION_RANGE_START_TAG: key_range[0], ASSET_PARTITION_RANGE_END_TAG: key_range[1]}
        if key_range
        else None
    )
    with dg.DagsterInstance.ephemeral() as instance:
        launched = time.time()  # event log timestamps are epoch seconds
        with Stopwatch() as watch:
            result = job.execute_in_process(
                run_config=RUN_CONFIG,
                instance=instance,
                partition_key=partition_key,
                tags=tags,
                raise_on_error=False,
            )
        if not result.success:
            failures = [e.message for e in result.all_events if e.is_failure]
            raise RuntimeError(f"run failed: {failures[-1] if failures else 'see the log above'}")
        logs = instance.all_logs(result.run_id)
        return RunFigures(
            seconds=watch.seconds,
            before_steps_s=_first_step_start(logs) - launched,
            rows=_rows_by_asset(result),
            steps=_step_timings(logs),
            failed_checks=_failed_checks(result),
        )


def _rows_by_asset(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    rows: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        name = materialization.asset_key.to_user_string()
        if "rows" in materialization.metadata:  # each partition's own rows
            rows[name] = rows.get(name, 0) + int(materialization.metadata["rows"].value)  # type: ignore[arg-type]
    return rows


def _first_step_start(logs: Sequence[dg.EventLogEntry]) -> float:
    return min(entry.timestamp for entry in logs if _event_type(entry) == "STEP_START")


def _event_type(entry: dg.EventLogEntry) -> str | None:
    return entry.dagster_event.event_type_value if entry.dagster_event else None


def _step_timings(logs: Sequence[dg.EventLogEntry]) -> dict[str, StepTiming]:
    marks: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for entry in logs:
        kind, step = _event_type(entry), entry.step_key
        if step is None or kind not in _STEP_MARKS:
            continue
        mark = _STEP_MARKS[kind]
        marks.setdefault(step, {}).setdefault(mark, entry.timestamp)  # first of each kind
        if kind == "ASSET_MATERIALIZATION":
            counts[step] = counts.get(step, 0) + 1
    return {
        step: StepTiming(
            compute_s=mark["result"] - mark["start"],
            events_s=mark["end"] - mark["result"],
            materializations=counts.get(step, 0),
        )
        for step, mark in marks.items()
        if {"start", "result", "end"} <= mark.keys()
    }


def _failed_checks(result: dg.ExecuteInProcessResult) -> list[str]:
    failed = sorted({e.check_name for e in result.get_asset_check_evaluations() if not e.passed})
    for name in failed:
        progress(f"asset check failed: {name}")
    return failed


def minute_partitions() -> dg.TimeWindowPartitionsDefinition:
    from gpu_cost_pipeline.defs.partitions import minute_partitions

    return minute_partitions


def report_breakdown(prefix: str, run: RunFigures) -> None:
    """Where the run's time went: before the first step, then each step split into the asset
    function's work and the events Dagster logs for its results."""
    report(
        f"{prefix}_before_steps_s",
        run.before_steps_s,
        "s",
        ["run creation, planned-materialization events, resource init"],
    )
    for step, timing in run.steps.items():
        report(
            f"{prefix}_step_{step}_s",
            timing.seconds,
            "s",
            [
                f"compute {timing.compute_s:.2f} s",
                f"then {timing.materializations} materialization event(s) {timing.events_s:.2f} s",
            ],
        )
