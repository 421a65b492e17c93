"""alert_latency: from the end of the minute whose cost crosses a budget threshold to the alert
arriving at a local receiver, through a running Dagster daemon.

Nothing is called by hand: the daemon's every-minute schedule materializes the minute that just
closed (gpu_cost_job), the budget_status_after_costs sensor refreshes budget_status, the
budget_alerts sensor requests send_budget_alerts, and the job POSTs to a webhook receiver on
127.0.0.1. The budget's limit is a cent, so the first minute materialized crosses its 50 %
threshold. Each run is launched in its own process, as in a deployment with the default run
launcher; the breakdown says where the time goes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from bench._common import (
    Target,
    clean_environment,
    embedded_postgres_dir,
    progress,
    report,
)

ROOT = Path(__file__).resolve().parent.parent
TARGET = Target("<=", 120, "s")
TIMEOUT_S = int(os.environ.get("ALERT_LATENCY_TIMEOUT_S", "420"))


def budget(url: str) -> dict:
    return {
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "CostBudget",
        "metadata": {"name": "latency", "namespace": "bench"},
        "spec": {
            "monthlyLimit": 0.01,
            "alerts": [
                {"name": "half", "thresholdPercent": 50,
                 "channels": [{"type": "webhook", "config": {"url": url}}]}
            ],
        },
    }  # fmt: skip


def main() -> None:
    clean_environment()
    from gpu_cost_pipeline_tests.receivers import http_receiver

    with (
        embedded_postgres_dir() as data_dir,
        tempfile.TemporaryDirectory() as work,
        http_receiver() as receiver,
    ):
        home, specs = Path(work, "dagster_home"), Path(work, "specs")
        home.mkdir()
        specs.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
        (specs / "budget.yaml").write_text(yaml.safe_dump(budget(receiver.url("/alerts"))))
        today = datetime.now(UTC).strftime("%Y-%m-%d-00:00")
        env = {
            **os.environ,
            "GPU_COST_DATA_DIR": str(data_dir),
            "GPU_COST_SPECS_DIR": str(specs),
            "GPU_COST_SIMULATED_PODS": "40",
            "GPU_COST_PARTITION_START": today,
            "DAGSTER_HOME": str(home),
        }
        # Start the embedded server first, so the daemon's processes share it.
        subprocess.run(
            [sys.executable, "-m", "gpu_cost_pipeline.cli.main", "db", "start"],
            env=env, cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        log_file = open(Path(work, "daemon.log"), "w")  # noqa: SIM115 (closed with the folder)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", "-w", "workspace.yaml"],
            env=env,
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = time.monotonic()
        progress("daemon started; waiting for the first scheduled minute and its alert")
        try:
            while not receiver.to("/alerts") and time.monotonic() - started < TIMEOUT_S:
                if daemon.poll() is not None:
                    raise RuntimeError(Path(work, "daemon.log").read_text()[-3000:])
                time.sleep(0.5)
            received_at = datetime.now(UTC)
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
        if not receiver.to("/alerts"):
            shutil.copy(
                Path(work, "daemon.log"), Path(tempfile.gettempdir(), "alert_latency_daemon.log")
            )
            log = Path(work, "daemon.log").read_text().splitlines()
            progress("\n".join(line for line in log if "Sensor" in line or "rror" in line)[-6000:])
            progress(f"runs: {run_steps(home, datetime.now(UTC) - timedelta(hours=1))}")
            report("alert_latency_s", TIMEOUT_S, "s", ["no alert arrived (FAILED)"], TARGET)
            return
        os.environ.update(GPU_COST_DATA_DIR=str(data_dir))
        from gpu_cost_pipeline.store.cost_store import CostStore

        store = CostStore(data_dir=str(data_dir))
        first = store.read_frame("SELECT min(minute) AS first FROM gpu_cost").loc[0, "first"]
        crossed_at = first.to_pydatetime() + timedelta(minutes=1)  # when that minute closed
        latency = (received_at - crossed_at).total_seconds()
        steps = run_steps(home, crossed_at)
        report("alert_latency_s", latency, "s",
               [f"minute {first:%H:%M} UTC closed → webhook received; {steps}"], TARGET)  # fmt: skip


def run_steps(home: Path, since: datetime) -> str:
    """When each run of the chain ended, in seconds after the minute closed."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
    ends: dict[str, float] = {}
    for record in sorted(records, key=lambda r: r.create_timestamp):
        name = record.dagster_run.job_name
        if record.end_time and name not in ends:
            ends[name] = record.end_time - since.timestamp()
    order = ("gpu_cost_job", "budget_status_job", "send_budget_alerts")
    return ", ".join(f"{n} done +{ends[n]:.0f} s" for n in order if n in ends)


if __name__ == "__main__":
    main()
