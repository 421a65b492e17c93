"""Running gpu_cost_job in process, the way the CLI and the schedule do.

The Definitions read the GPU_COST_* variables when first imported (resources, the partitions'
start), so they are imported lazily, on the first ``run_job`` or ``minute_partitions`` call: call
``configure`` (and set any other variable) before that.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dagster as dg
import pydantic
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from bench._common import BENCH_CLUSTER, Stopwatch, progress
from gpu_cost_pipeline.defs.resources import store_from_env, usage_source_from_env

# The loggers as `gpu-autoscaler materialize` sets them: warnings on the console.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def configure(data_dir: Path, pods: int) -> None:
    """Settings for the Definitions; must run before the first import of them."""
    os.environ["GPU_COST_DATA_DIR"] = str(data_dir)
    os.environ["GPU_COST_SIMULATED_PODS"] = str(pods)
    os.environ["GPU_COST_CLUSTER"] = BENCH_CLUSTER


@dataclass
class RunFigures:
    seconds: float
    rows: dict[str, int]  # the "rows" metadata per asset
    step_seconds: dict[str, float]
    failed_checks: list[str]


def prepare_store() -> float:
    """Start the embedded server and migrate (both cached per process); returns seconds."""
    with Stopwatch() as watch:
        store_from_env().mode()
    return watch.seconds


# Set when gpu_cost_pipeline.definitions cannot load and the job runs on plain-valued resources.
definitions_note: str | None = None


@cache
def _definitions() -> dg.Definitions:
    """The code location's ``defs``. If they do not load, the same assets and job with the
    resources built from the same variables as plain values (as the CLI builds them): Dagster's
    ``EnvVar.int`` is an int subclass worth 0 until resolved, so a setting validated ``ge=1``
    (GPU_COST_SIMULATED_PODS, GPU_COST_CHUNK_MINUTES) fails when set."""
    global definitions_note
    try:
        from gpu_cost_pipeline.definitions import defs

        return defs
    except pydantic.ValidationError as error:
        fields = ", ".join(str(e["loc"][-1]) for e in error.errors() if e["loc"])
        definitions_note = f"defs fail to load ({fields}), ran gpu_cost_job on plain resources"
        progress(f"gpu_cost_pipeline.definitions failed: {error}")
        progress("running the same gpu_cost_job with plain-valued resources instead")
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    from gpu_cost_pipeline.defs.costs.assets import gpu_cost
    from gpu_cost_pipeline.defs.jobs import gpu_cost_job
    from gpu_cost_pipeline.defs.pricing.assets import gpu_prices
    from gpu_cost_pipeline.defs.pricing.resources import PriceCatalog
    from gpu_cost_pipeline.defs.usage.assets import gpu_usage

    return dg.Definitions(
        assets=[gpu_usage, gpu_prices, gpu_cost],
        jobs=[gpu_cost_job],
        resources={
            "store": store_from_env(),
            "usage_source": usage_source_from_env(),
            "prices": PriceCatalog(),  # clean_environment leaves its one variable unset
        },
    )


def run_notes() -> list[str]:
    return [definitions_note] if definitions_note else []


def run_job(
    partition_key: str | None = None, key_range: tuple[str, str] | None = None
) -> RunFigures:
    """One run of gpu_cost_job for one partition or one partition range (what the backfill
    policy launches), in a fresh ephemeral instance; raises if the run fails."""
    job = _definitions().resolve_job_def("gpu_cost_job")
    tags = (
        {ASSET_PARTITION_RANGE_START_TAG: key_range[0], ASSET_PARTITION_RANGE_END_TAG: key_range[1]}
        if key_range
        else None
    )
    with dg.DagsterInstance.ephemeral() as instance:
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
        return RunFigures(
            seconds=watch.seconds,
            rows=_rows_by_asset(result),
            step_seconds=_step_seconds(result),
            failed_checks=_failed_checks(result),
        )


def _rows_by_asset(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    rows: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        name = materialization.asset_key.to_user_string()
        # A range run repeats the same metadata for every partition: take it once.
        if name not in rows and "rows" in materialization.metadata:
            rows[name] = int(materialization.metadata["rows"].value)  # type: ignore[arg-type]
    return rows


def _step_seconds(result: dg.ExecuteInProcessResult) -> dict[str, float]:
    return {
        event.step_key: event.event_specific_data.duration_ms / 1000  # type: ignore[union-attr]
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS" and event.step_key
    }


def _failed_checks(result: dg.ExecuteInProcessResult) -> list[str]:
    failed = sorted({e.check_name for e in result.get_asset_check_evaluations() if not e.passed})
    for name in failed:
        progress(f"asset check failed: {name}")
    return failed


def minute_partitions() -> dg.TimeWindowPartitionsDefinition:
    from gpu_cost_pipeline.defs.partitions import minute_partitions

    return minute_partitions
