"""The dashboards' hourly rollups (gpu_namespace_cost_hourly, gpu_experiment_cost_hourly) stay
equal to the sums of the minute rows and of gpu_cost_hourly through the store's real write path:
first writes, overlapping rewrites, a rewrite with fewer pods, and retention."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gpu_cost_pipeline.store.cost_store import CostStore, WindowWriter
from gpu_cost_pipeline.store.schema import MODE_TIMESCALE

CLUSTER = "rollups"
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SUMS = ("gpu_hours", "cost_usd", "on_demand_cost_usd", "exclusive_cost_usd", "pod_minutes")
USE_SUMS = ("measured_gpu_hours", "used_gpu_hours", "unused_cost_usd")
NAMESPACE_KEYS = (
    "namespace", "team", "project", "cost_center", "gpu_model", "capacity_type", "is_idle",
    "price_source",
)  # fmt: skip
EXPERIMENT_KEYS = ("namespace", "team", "project", "experiment_id")
# Sums of the minute rows, per hour and the given keys (what every rollup must equal).
MINUTE_SUMS = """
    sum(gpu_share * seconds) / 3600.0 AS gpu_hours, sum(cost_usd) AS cost_usd,
    sum(on_demand_cost_usd) AS on_demand_cost_usd, sum(exclusive_cost_usd) AS exclusive_cost_usd,
    count(*) AS pod_minutes,
    sum(CASE WHEN gpu_utilization IS NOT NULL THEN gpu_share * seconds ELSE 0 END) / 3600.0
        AS measured_gpu_hours,
    sum(coalesce(gpu_utilization, 0) * gpu_share * seconds) / 3600.0 AS used_gpu_hours,
    sum(CASE WHEN is_idle THEN cost_usd ELSE coalesce(cost_usd * (1 - gpu_utilization), 0) END)
        AS unused_cost_usd"""


def pod(index: int) -> dict:
    """Pods spread over namespaces, teams, experiments, nodes, GPU models and capacity types:
    pods i and i + 6 share a namespace row (other nodes and experiments), so namespace rows sum
    several gpu_cost_hourly rows."""
    team = ("nlp", "vision", "")[index % 3]
    return {
        "pod_uid": f"pod-{index}",
        "node": f"node-{index % 4}",
        "namespace": ("ml-training", "research")[index % 2],
        "team": team,
        "project": f"project-{team or 'none'}",
        "experiment_id": f"exp-{index % 5}" if index % 4 else "",
        "cost_center": "research" if team else "",
        "gpu_model": ("H100-80GB", "A100-40GB")[index % 2],
        "capacity_type": ("on-demand", "spot")[index % 2],
        "price_source": ("api", "estimate")[index % 7 == 0],
    }


def cost_rows(start: datetime, minutes: int, pods: int, seed: int) -> pd.DataFrame:
    """Pod-minute rows of ``pods`` pods plus one idle row per node-minute, as gpu_cost holds."""
    random = np.random.default_rng(seed)
    frame = pd.DataFrame(
        [
            {**pod(i), "minute": start + timedelta(minutes=m), "is_idle": False}
            for m in range(minutes)
            for i in range(pods)
        ]
        + [
            {
                **pod(n), "pod_uid": f"idle:node-{n}", "namespace": "", "team": "", "project": "",
                "experiment_id": "", "cost_center": "", "minute": start + timedelta(minutes=m),
                "is_idle": True,
            }
            for m in range(minutes)
            for n in range(4)
        ]
    )  # fmt: skip
    size = len(frame)
    cost = random.uniform(0.01, 0.2, size)
    utilization = random.uniform(0, 1, size)
    utilization[(random.uniform(0, 1, size) < 0.3) | frame["is_idle"].to_numpy()] = np.nan
    return frame.assign(
        instance_type="p5.48xlarge", provider="aws", region="us-east-1", sharing_mode="none",
        gpu_share=random.choice([0.5, 1.0, 2.0], size), seconds=60,
        price_per_gpu_hour=cost * 60, on_demand_price_per_gpu_hour=cost * 90,
        cost_usd=cost, on_demand_cost_usd=cost * 1.5, exclusive_cost_usd=cost * 1.2,
        gpu_utilization=utilization,
    )  # fmt: skip


def write(store: CostStore, start: datetime, minutes: int, pods: int, seed: int) -> None:
    """One cost window through the store's write path, as the gpu_cost asset writes it."""
    with store.write_window(CLUSTER, start, start + timedelta(minutes=minutes)) as writer:
        writer.replace("gpu_cost", cost_rows(start, minutes, pods, seed))
        writer.refresh_hourly_rollup()


def grouped(store: CostStore, query: str, keys: tuple[str, ...]) -> pd.DataFrame:
    frame = store.read_frame(query, (CLUSTER,))
    assert not frame.duplicated(["hour", *keys]).any(), f"duplicate groups from: {query}"
    return frame.sort_values(["hour", *keys]).reset_index(drop=True)


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame, keys: tuple[str, ...]) -> None:
    assert len(actual) == len(expected) > 0
    pd.testing.assert_frame_equal(
        actual[["hour", *keys]], expected[["hour", *keys]], check_dtype=False
    )
    for column in expected.columns.difference(["hour", *keys]):
        assert actual[column].to_numpy() == pytest.approx(expected[column].to_numpy()), column


def assert_rollups_match(store: CostStore, with_hourly: bool = True) -> None:
    """Both dashboard rollups equal the minute rows' sums and (``with_hourly``) those of
    gpu_cost_hourly."""
    sums = ", ".join(f"sum({column}) AS {column}" for column in SUMS + USE_SUMS)
    keys = ", ".join(NAMESPACE_KEYS)
    namespace = grouped(
        store,
        f"SELECT hour, {keys}, {', '.join(SUMS + USE_SUMS)} FROM gpu_namespace_cost_hourly"
        " WHERE cluster = %s",
        NAMESPACE_KEYS,
    )
    for expected in (
        f"SELECT date_trunc('hour', minute) AS hour, {keys}, {MINUTE_SUMS} FROM gpu_cost"
        f" WHERE cluster = %s GROUP BY 1, {keys}",
        f"SELECT hour, {keys}, {sums} FROM gpu_cost_hourly WHERE cluster = %s GROUP BY 1, {keys}",
    )[: 2 if with_hourly else 1]:
        assert_same(namespace, grouped(store, expected, NAMESPACE_KEYS), NAMESPACE_KEYS)

    sums = ", ".join(f"sum({column}) AS {column}" for column in SUMS)
    keys = ", ".join(EXPERIMENT_KEYS)
    pods = "NOT is_idle AND experiment_id <> ''"
    experiment = grouped(
        store,
        f"SELECT hour, {keys}, {', '.join(SUMS)} FROM gpu_experiment_cost_hourly"
        " WHERE cluster = %s",
        EXPERIMENT_KEYS,
    )
    for expected in (
        f"SELECT date_trunc('hour', minute) AS hour, {keys}, {MINUTE_SUMS} FROM gpu_cost"
        f" WHERE cluster = %s AND {pods} GROUP BY 1, {keys}",
        f"SELECT hour, {keys}, {sums} FROM gpu_cost_hourly WHERE cluster = %s AND {pods}"
        f" GROUP BY 1, {keys}",
    )[: 2 if with_hourly else 1]:
        expected_frame = grouped(store, expected, EXPERIMENT_KEYS)
        assert_same(experiment, expected_frame[experiment.columns], EXPERIMENT_KEYS)


def test_dashboard_rollups_equal_the_minute_rows_through_rewrites(store: CostStore):
    # Windows that start and end inside hours, so each write rewrites hours other windows
    # also wrote (the rollups are recomputed for whole hours from the minute rows).
    write(store, T0, 90, pods=12, seed=1)  # 10:00–11:30
    assert_rollups_match(store)
    write(store, T0 + timedelta(minutes=75), 90, pods=12, seed=2)  # 11:15–12:45, overlapping
    assert_rollups_match(store)
    write(store, T0 + timedelta(minutes=75), 90, pods=12, seed=2)  # the same window again
    assert_rollups_match(store)
    write(store, T0 + timedelta(minutes=30), 60, pods=3, seed=3)  # 10:30–11:30, fewer pods
    assert_rollups_match(store)
    with store.connection() as conn:
        teams = conn.execute(
            "SELECT count(DISTINCT team), max(pod_minutes) FROM gpu_namespace_cost_hourly"
            " WHERE cluster = %s AND hour = %s AND NOT is_idle",
            (CLUSTER, T0 + timedelta(hours=1)),
        ).fetchone()
        experiments = conn.execute(
            "SELECT count(*) FROM gpu_experiment_cost_hourly WHERE cluster = %s AND hour = %s",
            (CLUSTER, T0 + timedelta(hours=1)),
        ).fetchone()
    # 11:00–11:30 now holds pods 0–2 (teams nlp, vision, none), 11:30–12:00 pods 0–11: the
    # row of pods 0 and 6 sums 30 + 2 × 30 pod-minutes.
    assert teams == (3, 90)
    assert experiments is not None and experiments[0] > 0
    # Another cluster's writes leave these rows alone.
    with store.write_window("other", T0, T0 + timedelta(minutes=30)) as writer:
        writer.replace("gpu_cost", cost_rows(T0, 30, 2, seed=4))
        writer.refresh_hourly_rollup()
    assert_rollups_match(store)


def test_on_timescaledb_the_dashboard_rollups_are_written_in_the_window(store: CostStore):
    """In TimescaleDB mode gpu_cost_hourly is a continuous aggregate the store refreshes after
    the commit; the dashboard rollups are plain tables written in the window's transaction.
    TimescaleDB cannot be installed here, so the mode's statement runs on plain PostgreSQL:
    gpu_cost_hourly (a table here) must be left alone and its refresh requested."""
    write(store, T0, 90, pods=12, seed=1)
    every_row = "SELECT * FROM gpu_cost_hourly ORDER BY hour, node, pod_minutes, cost_usd"
    hourly = store.read_frame(every_row)
    start = T0 + timedelta(minutes=45)
    with store.connection() as conn, conn.transaction():
        writer = WindowWriter(conn, CLUSTER, start, start + timedelta(minutes=30), MODE_TIMESCALE)
        writer.replace("gpu_cost", cost_rows(start, 30, pods=5, seed=5))
        assert writer.refresh_hourly_rollup() == 0
    assert writer.aggregate_refresh == (T0, T0 + timedelta(hours=2))
    assert_rollups_match(store, with_hourly=False)
    pd.testing.assert_frame_equal(store.read_frame(every_row), hourly)


def test_retention_deletes_old_dashboard_rollup_rows(database_url: str):
    store = CostStore(database_url=database_url, retention_days=30, rollup_retention_days=60)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for days_ago in (90, 45, 1):  # beyond both retentions; minute rows only; neither
        write(store, now - timedelta(days=days_ago), 10, pods=4, seed=days_ago)
    deleted = store.apply_retention(CLUSTER)
    assert deleted["gpu_cost"] == 2 * 10 * (4 + 4)
    for table in ("gpu_cost_hourly", "gpu_namespace_cost_hourly", "gpu_experiment_cost_hourly"):
        assert deleted[table] > 0, table
        with store.connection() as conn:
            hours = conn.execute(f"SELECT DISTINCT hour FROM {table} ORDER BY 1").fetchall()
        assert [hour for (hour,) in hours] == [now - timedelta(days=45), now - timedelta(days=1)]


def attribution(index: int, first: datetime, last: datetime, team: str) -> dict:
    """A gpu_pods row of ``pod(index)``, seen from ``first`` to ``last``."""
    row = {key: pod(index)[key] for key in ("pod_uid", "namespace", "project", "experiment_id")}
    return {
        **row, "pod": row["pod_uid"], "team": team, "cost_center": "", "labels": "{}",
        "gpu_resource": "nvidia.com/gpu", "gpu_requested": 1, "sharing_mode": "exclusive",
        "cost_limit_usd": float("nan"), "first_seen": first, "last_seen": last,
    }  # fmt: skip


def test_day_runs_write_the_same_pods_and_totals_at_the_same_time(store: CostStore):
    """Two day-runs of one cluster hold their transactions open at once while both write cost
    rows (the cluster's running total) and the same pods' attribution: those shared rows are
    written just before each commit, so neither waits for the other's whole transaction (had
    one waited, the barrier would time out). Totals and attribution come out as if the days
    had been written one after the other, and again after a rewrite of the first day."""
    both_inside = threading.Barrier(2, timeout=10)

    def write_day(day: int, seed: int, barrier: threading.Barrier | None) -> None:
        start = T0 + timedelta(days=day)
        with store.write_window(CLUSTER, start, start + timedelta(minutes=30)) as writer:
            writer.replace("gpu_cost", cost_rows(start, 30, pods=6, seed=seed))
            team = f"team-of-day-{day}"
            for minute in (10, 29):  # two chunks' sightings of each pod
                writer.upsert_pods(
                    pd.DataFrame(
                        [
                            attribution(i, start, start + timedelta(minutes=minute), team)
                            for i in range(6)
                        ]
                    )
                )
            writer.refresh_hourly_rollup()
            if barrier is not None:
                barrier.wait()

    errors: list[Exception] = []

    def run(day: int) -> None:
        try:
            write_day(day, seed=day, barrier=both_inside)
        except Exception as error:  # asserted on below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(day,)) for day in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    def assert_totals() -> None:
        cluster = store.read_frame(
            "SELECT t.cost_usd, s.rows_cost FROM gpu_cluster_cost_totals AS t JOIN"
            " (SELECT cluster, sum(cost_usd) AS rows_cost FROM gpu_cost GROUP BY 1) AS s"
            " USING (cluster) WHERE cluster = %s",
            (CLUSTER,),
        )
        assert cluster["cost_usd"].to_numpy() == pytest.approx(cluster["rows_cost"].to_numpy())
        pods = store.read_frame(
            "SELECT t.cost_usd, s.cost_usd AS rows_cost, t.last_minute, s.last_minute AS rows_last"
            " FROM gpu_pod_cost_totals AS t FULL JOIN"
            " (SELECT cluster, pod_uid, sum(cost_usd) AS cost_usd, max(minute) AS last_minute"
            "  FROM gpu_cost WHERE NOT is_idle GROUP BY 1, 2) AS s USING (cluster, pod_uid)"
            " WHERE cluster = %s",
            (CLUSTER,),
        )
        assert len(pods) == 6
        assert pods["cost_usd"].to_numpy() == pytest.approx(pods["rows_cost"].to_numpy())
        assert (pods["last_minute"] == pods["rows_last"]).all()

    assert_totals()
    write_day(1, seed=7, barrier=None)  # a rewrite: subtracts what it deletes
    assert_totals()
    seen = store.read_frame(
        "SELECT DISTINCT team, first_seen, last_seen FROM gpu_pods WHERE cluster = %s",
        (CLUSTER,),
    )
    # One row per pod: the latest sighting's attribution, the widest span.
    assert seen.to_dict("records") == [
        {
            "team": "team-of-day-2",
            "first_seen": T0 + timedelta(days=1),
            "last_seen": T0 + timedelta(days=2, minutes=29),
        }
    ]
    assert_rollups_match(store)
