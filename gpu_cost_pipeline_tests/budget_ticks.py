"""Sensor ticks as the daemon makes them, for tests: evaluate the real sensors with
``build_sensor_context`` on a real instance, skip run requests whose run key already has a run
from that sensor (the daemon's rule), execute the others with the real jobs.

    python -m gpu_cost_pipeline_tests.budget_ticks 3   # 3 ticks in a fresh process
"""

from __future__ import annotations

import sys

import dagster as dg

SENSORS = ("budget_alerts", "budget_enforcement")
RUN_KEY_TAG, SENSOR_TAG = "dagster/run_key", "dagster/sensor_name"


def refresh(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """budget_status, as the sensor after each gpu_cost materialization runs it."""
    result = defs.resolve_job_def("budget_status_job").execute_in_process(instance=instance)
    assert result.success


def tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.ExecuteInProcessResult]:
    results = []
    for name in SENSORS:
        sensor = defs.resolve_sensor_def(name)
        with dg.build_sensor_context(
            instance=instance, definitions=defs, sensor_name=name, resources=defs.resources
        ) as context:
            data = sensor.evaluate_tick(context)
        for request in data.run_requests or []:
            tags = {RUN_KEY_TAG: request.run_key, SENSOR_TAG: name}
            if instance.get_runs_count(dg.RunsFilter(tags=tags)):
                continue
            job = defs.resolve_job_def(request.job_name or sensor.job_name)
            results.append(
                job.execute_in_process(
                    run_config=request.run_config,
                    instance=instance,
                    tags={**request.tags, **tags},
                    raise_on_error=False,
                )
            )
    return results


if __name__ == "__main__":
    from gpu_cost_pipeline.definitions import defs

    with dg.DagsterInstance.get() as instance:
        for _ in range(int(sys.argv[1])):
            refresh(defs, instance)
            ran = tick(defs, instance)
            print(f"tick: {len(ran)} runs, {sum(r.success for r in ran)} succeeded")
