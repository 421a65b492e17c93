"""budget_status: 1,000 CostBudgets over a month of minute data for 1,000 GPU pods.

The month is loaded into the rollups budget_status reads (the per-pod hourly rollup and the
hourly rollup), as a month of minute rows for the simulated cluster's churn would leave them:
1,000 pod slots running pods of 10 minutes to 6 hours back to back (about 240,000 pods and 1.1
million pod-hours), with teams, namespaces, projects, experiments and labels drawn like the
simulation's. Writing 43 million minute rows first would take most of an hour here and is not
what is measured; the newest minute is there so the status knows where the data ends.

The budgets mix every kind of scope: teams, namespaces, experiments, labels (50 distinct label
selectors) and the whole cluster. Timed: the asset's work (read the grouped month, every status,
write the status table) cold (the first refresh reads the whole month) and warm (every later
refresh: the month's closed hours come from grouped_cost_cache), and the whole budget_status
materialization through Dagster (specs parsed from 1,000 YAML documents).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench._common import (
    BENCH_CLUSTER,
    Stopwatch,
    Target,
    clean_environment,
    embedded_postgres_dir,
    peak_rss_mb,
    progress,
    report,
)

PODS, BUDGETS, LABEL_VALUES = 1_000, 1_000, 50
TARGET = Target("<=", 2, "s")
TEAMS = ["nlp-team", "data-science", "vision", "inference-platform", "ml-engineering"]
NAMESPACES = ["ml-training", "research", "data-science", "vision", "ml-inference"]
MODELS = [("H100", "on-demand", 6.88), ("A100-80GB", "spot", 1.2), ("L4", "on-demand", 0.8),
          ("T4", "spot", 0.16), ("A100-40GB", "on-demand", 2.75)]  # fmt: skip


def month_of_pods(month_start: datetime, rng: np.random.Generator) -> pd.DataFrame:
    """Pods of 1,000 slots over the month: uid, attribution, labels, model, start/end seconds."""
    month_seconds = 30 * 86400
    starts, slots = [], []
    for slot in range(PODS):
        durations = rng.integers(600, 21600, size=400)
        times = np.concatenate([[0], np.cumsum(durations)])
        keep = times[:-1] < month_seconds
        starts.append(np.stack([times[:-1][keep], np.minimum(times[1:][keep], month_seconds)], 1))
        slots.append(np.full(keep.sum(), slot))
    spans = np.concatenate(starts)
    slot = np.concatenate(slots)
    n = len(spans)
    team = rng.integers(0, len(TEAMS), n)
    model = slot % len(MODELS)
    app = rng.integers(0, LABEL_VALUES, n)
    return pd.DataFrame(
        {
            "pod_uid": [f"pod-{i:07d}" for i in range(n)],
            "namespace": np.array(NAMESPACES)[(team + rng.integers(0, 2, n)) % len(NAMESPACES)],
            "team": np.array(TEAMS)[team],
            "project": np.array(["lm", "fc", "img", "serve", "rec"])[team],
            "experiment_id": [f"exp-{e:03d}" for e in rng.integers(0, 997, n)],
            "cost_center": np.array(["research", "analytics", "research", "platform", "product"])[
                team
            ],
            "app": [f"app-{a:02d}" for a in app],
            "gpu_model": np.array([m for m, _, _ in MODELS])[model],
            "capacity_type": np.array([c for _, c, _ in MODELS])[model],
            "price": np.array([p for _, _, p in MODELS])[model],
            "gpu_share": rng.choice([1.0, 2.0, 4.0, 0.25], n),
            "start_s": spans[:, 0] + int(month_start.timestamp()),
            "end_s": spans[:, 1] + int(month_start.timestamp()),
        }
    )


def pod_hours(pods: pd.DataFrame) -> pd.DataFrame:
    """One row per pod per hour it ran, with its cost: what the per-pod rollup holds."""
    first_hour = pods["start_s"].to_numpy() // 3600
    last_hour = (pods["end_s"].to_numpy() - 1) // 3600
    count = last_hour - first_hour + 1
    index = np.repeat(np.arange(len(pods)), count)
    offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    hour = first_hour[index] + offset
    seconds = np.minimum(pods["end_s"].to_numpy()[index], (hour + 1) * 3600) - np.maximum(
        pods["start_s"].to_numpy()[index], hour * 3600
    )
    rows = pods.iloc[index].reset_index(drop=True)
    gpu_hours = rows["gpu_share"].to_numpy() * seconds / 3600
    cost = gpu_hours * rows["price"].to_numpy()
    return pd.DataFrame(
        {
            "hour": pd.to_datetime(hour * 3600, unit="s", utc=True),
            "pod_uid": rows["pod_uid"], "namespace": rows["namespace"], "team": rows["team"],
            "project": rows["project"], "experiment_id": rows["experiment_id"],
            "cost_center": rows["cost_center"], "gpu_model": rows["gpu_model"],
            "capacity_type": rows["capacity_type"], "is_idle": False, "gpu_hours": gpu_hours,
            "cost_usd": cost, "on_demand_cost_usd": cost * 1.4, "exclusive_cost_usd": cost * 1.1,
            "pod_minutes": np.ceil(seconds / 60).astype(int),
        }
    )  # fmt: skip


def load_month(store, month_start: datetime) -> tuple[int, int]:
    from gpu_cost_pipeline.store.budgets import session
    from gpu_cost_pipeline.store.cost_store import copy_frame

    rng = np.random.default_rng(7)
    pods = month_of_pods(month_start, rng)
    hours = pod_hours(pods)
    dims = ["hour", "namespace", "team", "project", "experiment_id", "cost_center", "gpu_model",
            "capacity_type", "is_idle"]  # fmt: skip
    hourly = hours.groupby(dims, as_index=False)[
        ["gpu_hours", "cost_usd", "on_demand_cost_usd", "exclusive_cost_usd", "pod_minutes"]
    ].sum()
    hourly["price_source"] = "estimate"
    pod_rows = pods.assign(
        pod=pods["pod_uid"], gpu_resource="nvidia.com/gpu", gpu_requested=1, sharing_mode="none",
        labels=[json.dumps({"team": t, "app.kubernetes.io/name": a}) for t, a in zip(pods["team"], pods["app"], strict=True)],
        first_seen=pd.to_datetime(pods["start_s"], unit="s", utc=True),
        last_seen=pd.to_datetime(pods["end_s"], unit="s", utc=True),
    )  # fmt: skip
    last = hours["hour"].max() + timedelta(minutes=59)
    newest = pd.DataFrame([{
        "minute": last, "pod_uid": "pod-0000000", "node": "n", "namespace": "vision", "team": "vision",
        "gpu_model": "H100", "capacity_type": "on-demand", "provider": "aws", "sharing_mode": "none",
        "is_idle": False, "gpu_share": 1.0, "seconds": 60, "price_per_gpu_hour": 0.0,
        "on_demand_price_per_gpu_hour": 0.0, "cost_usd": 0.0, "on_demand_cost_usd": 0.0,
        "exclusive_cost_usd": 0.0, "price_source": "estimate",
    }])  # fmt: skip
    with session(store) as conn, conn.transaction():
        for table, frame in (
            ("gpu_pod_cost_hourly", hours),
            ("gpu_cost_hourly", hourly),
            ("gpu_pods", pod_rows),
            ("gpu_cost", newest),
        ):
            copy_frame(conn, table, frame.assign(cluster=BENCH_CLUSTER))
    with session(store) as conn:
        conn.execute("VACUUM ANALYZE")
    return len(pods), len(hours)


def budget_documents(rng: np.random.Generator) -> list[dict]:
    documents = []
    for i in range(BUDGETS):
        kind = i % 20
        if kind < 8:
            scope = {"teams": [TEAMS[i % len(TEAMS)]]}
        elif kind < 14:
            scope = {"namespaces": [str(n) for n in rng.choice(NAMESPACES, 2, replace=False)]}
        elif kind < 17:
            scope = {"labels": {"app.kubernetes.io/name": f"app-{i % LABEL_VALUES:02d}"}}
        elif kind < 19:
            scope = {"experimentID": f"exp-{i % 997:03d}", "teams": [TEAMS[i % 5]]}
        else:
            scope = {}
        documents.append({
            "apiVersion": "gpu-autoscaler.io/v1alpha1", "kind": "CostBudget",
            "metadata": {"name": f"budget-{i:04d}", "namespace": "bench"},
            "spec": {"monthlyLimit": float(rng.integers(1_000, 500_000)), "scope": scope,
                     "alerts": [{"name": "warn", "thresholdPercent": 80, "channels": [
                         {"type": "webhook", "config": {"url": "http://127.0.0.1:9/x"}}]}],
                     "enforcement": {"action": "block" if i % 2 else "alert"}},
        })  # fmt: skip
    return documents


def main() -> None:
    clean_environment()
    with embedded_postgres_dir() as data_dir, tempfile.TemporaryDirectory() as specs_dir:
        os.environ.update(
            GPU_COST_DATA_DIR=str(data_dir), GPU_COST_CLUSTER=BENCH_CLUSTER,
            GPU_COST_SPECS_DIR=specs_dir,
        )  # fmt: skip
        from gpu_cost_pipeline.core.specs import parse_objects
        from gpu_cost_pipeline.defs.budgets.resources import SpecSource
        from gpu_cost_pipeline.defs.budgets.status import budget_statuses
        from gpu_cost_pipeline.defs.resources import kubernetes_from_settings
        from gpu_cost_pipeline.settings import load_settings
        from gpu_cost_pipeline.store import budgets as budget_store
        from gpu_cost_pipeline.store.cost_store import CostStore

        store = CostStore(data_dir=str(data_dir))
        now = datetime.now(UTC)
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        # A whole month of data ending now: the previous month's days are moved into this one.
        month_start = min(month_start, now - timedelta(days=30)).replace(
            minute=0, second=0, microsecond=0
        )
        with Stopwatch() as loading:
            pods, pod_hour_rows = load_month(store, month_start)
        progress(f"loaded {pods} pods, {pod_hour_rows} pod-hours in {loading.seconds:.1f} s")
        documents = budget_documents(np.random.default_rng(3))
        Path(specs_dir, "budgets.yaml").write_text(yaml.safe_dump_all(documents))
        specs = parse_objects(documents, "bench")
        settings = load_settings()
        source = SpecSource.from_settings(settings, kubernetes_from_settings(settings))
        timings = []
        for _ in range(4):  # the first run fills the cache of the month's closed hours
            with Stopwatch() as watch, budget_store.session(store) as conn:
                rows = budget_statuses(conn, BENCH_CLUSTER, specs, source, now)
                budget_store.write_statuses(conn, "cost_budget_status", BENCH_CLUSTER, rows, now)
            timings.append(watch.seconds)
        exceeded = sum(r.status["budgetStatus"] == "exceeded" for r in rows)
        report(
            "budget_status_1000_budgets_month_s", min(timings[1:]), "s",
            [f"every refresh after the first; {pods} pods, {pod_hour_rows} pod-hours, "
             f"{exceeded} exceeded, best of 3 ({', '.join(f'{t:.2f}' for t in timings[1:])} s)"],
            TARGET,
        )  # fmt: skip
        report(
            "budget_status_cold_s",
            timings[0],
            "s",
            ["the whole month read: first refresh, new month, changed specs or a rewritten hour"],
        )

        import dagster as dg

        from gpu_cost_pipeline.definitions import defs

        job = defs.resolve_job_def("budget_status_job")
        with dg.DagsterInstance.ephemeral() as instance:
            job.execute_in_process(instance=instance)  # warm-up: imports, first connection
            with Stopwatch() as run:
                result = job.execute_in_process(instance=instance)
        assert result.success
        report(
            "budget_status_dagster_run_s",
            run.seconds,
            "s",
            ["execute_in_process, specs parsed from 1,000 YAML documents"],
        )
        report("budget_status_peak_rss_mb", peak_rss_mb(), "MB")


if __name__ == "__main__":
    main()
