"""CostStore against a real PostgreSQL: migrations, window-idempotent writes, reads, retention."""

from __future__ import annotations

import shutil
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from gpu_cost_pipeline.store.cost_store import CostStore, StoreError, copy_frame, redact_url
from gpu_cost_pipeline.store.embedded import (
    SERVER_SETTINGS,
    embedded_database_url,
    embedded_server_running,
    stop_embedded_server,
)
from gpu_cost_pipeline.store.schema import _migration_files, migrate

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def node_rows(start: datetime, minutes: int, node: str = "n1", gpus: int = 8) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "minute": pd.date_range(start, periods=minutes, freq="min", tz="UTC"),
            "node": node,
            "gpu_model": "H100-80GB",
            "gpu_count": gpus,
            "sharing_mode": "exclusive",
            "capacity_type": "on-demand",
            "instance_type": "p5.48xlarge",
            "provider": "aws",
            "region": "us-east-1",
            "zone": "",
            "seconds": 60,
            "gpus_held": 2.0,
            "idle_gpus": gpus - 2.0,
        }
    )


def count(store: CostStore, table: str, cluster: str = "c1") -> int:
    with store.connection() as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {table} WHERE cluster = %s", (cluster,)
        ).fetchone()
    return row[0] if row else 0


def test_migrations_are_recorded_once_and_tables_exist(store: CostStore):
    assert store.mode() == "plain"
    with store.connection() as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        # Every file, each once (the list grows with each issue's migrations).
        assert versions == sorted(v for v, _ in _migration_files("plain"))
        assert {"001_core_tables", "005_store_settings", "plain/002_hourly_rollup"} <= set(versions)
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
    assert {"gpu_pods", "gpu_pod_usage", "gpu_node_usage", "price_points", "gpu_cost"} <= tables
    assert "gpu_cost_hourly" in tables
    assert {"roi_usage_daily", "roi_summary_daily", "roi_capacity_daily", "roi_reports"} <= tables
    assert migrate(lambda: psycopg.connect(store.database_url or "")) == "plain"  # no-op
    with psycopg.connect(store.database_url or "") as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(_migration_files("plain")),
        )


def test_the_embedded_server_runs_with_the_pipelines_settings(server_url: str):
    """The session's server was started by embedded_database_url, as every command starts it."""
    with psycopg.connect(server_url) as conn:
        for name, value in SERVER_SETTINGS.items():
            assert conn.execute(f"SHOW {name}").fetchone() == (value,), name


def test_an_embedded_server_stopped_by_this_process_starts_again_with_its_settings():
    # Not under pytest's tmp_path, for the reason in conftest's pg_data_dir.
    data_dir = Path(tempfile.mkdtemp(prefix="gpu-cost-tests-restart-"))
    try:
        for _ in range(2):
            url = embedded_database_url(data_dir)
            assert embedded_database_url(data_dir) == url  # attaches, starts nothing new
            with psycopg.connect(url) as conn:
                assert conn.execute("SHOW shared_buffers").fetchone() == (
                    SERVER_SETTINGS["shared_buffers"],
                )
            assert stop_embedded_server(data_dir)
            assert not embedded_server_running(data_dir)
    finally:
        stop_embedded_server(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def run_concurrently(work, copies: int) -> list[Exception]:
    """Run ``work`` in ``copies`` threads at once; the exceptions they raised."""
    errors: list[Exception] = []

    def guarded() -> None:
        try:
            work()
        except Exception as error:  # collected for the caller to assert on
            errors.append(error)

    threads = [threading.Thread(target=guarded) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_concurrent_processes_migrate_once(database_url: str):
    def run() -> None:
        migrate(lambda: psycopg.connect(database_url))

    assert run_concurrently(run, 4) == []
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(_migration_files("plain")),
        )


def test_rewriting_a_window_replaces_it_and_touches_nothing_else(store: CostStore):
    end = T0 + timedelta(minutes=10)
    with store.write_window("c1", T0 - timedelta(minutes=10), T0) as writer:
        writer.replace("gpu_node_usage", node_rows(T0 - timedelta(minutes=10), 10))
    with store.write_window("c2", T0, end) as writer:
        writer.replace("gpu_node_usage", node_rows(T0, 10))
    for _ in range(3):
        with store.write_window("c1", T0, end) as writer:
            writer.replace("gpu_node_usage", node_rows(T0, 10))
    assert count(store, "gpu_node_usage", "c1") == 20
    assert count(store, "gpu_node_usage", "c2") == 10


def test_chunks_of_one_window_accumulate_and_the_delete_happens_once(store: CostStore):
    with store.write_window("c1", T0, T0 + timedelta(minutes=10)) as writer:
        writer.replace("gpu_node_usage", node_rows(T0, 5))
        writer.replace("gpu_node_usage", node_rows(T0 + timedelta(minutes=5), 5))
    assert count(store, "gpu_node_usage") == 10


def test_a_failed_write_leaves_the_previous_window_intact(store: CostStore):
    end = T0 + timedelta(minutes=10)
    with store.write_window("c1", T0, end) as writer:
        writer.replace("gpu_node_usage", node_rows(T0, 10))
    bad = node_rows(T0, 10)
    bad.loc[3, "gpu_count"] = 0  # violates CHECK (gpu_count > 0)
    with pytest.raises(psycopg.errors.CheckViolation), store.write_window("c1", T0, end) as writer:
        writer.replace("gpu_node_usage", node_rows(T0, 5))
        writer.replace("gpu_node_usage", bad)
    assert count(store, "gpu_node_usage") == 10


def test_copy_keeps_instants_whatever_the_session_time_zone(store: CostStore):
    # Timestamps are COPYed as UTC wall time (fast to encode); a session in another zone must
    # not shift them.
    with store.connection() as conn, conn.transaction():
        conn.execute("SET TIME ZONE 'America/New_York'")
        copy_frame(conn, "gpu_node_usage", node_rows(T0, 2).assign(cluster="c1"))
    frame = store.read_frame("SELECT minute FROM gpu_node_usage ORDER BY minute")
    assert list(frame["minute"]) == [T0, T0 + timedelta(minutes=1)]


def test_hours_are_utc_hours_whatever_the_server_time_zone(store: CostStore, database_url: str):
    # A server in a half-hour zone would otherwise cut the hourly rollups at :30 UTC.
    database = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{database}\" SET TimeZone = 'Asia/Kolkata'")
    with store.connection() as conn:
        row = conn.execute(
            "SELECT date_trunc('hour', %s::timestamptz)", (T0 + timedelta(minutes=15),)
        ).fetchone()
    assert row and row[0] == T0


def test_read_frame_keeps_types_including_empty_results(store: CostStore):
    with store.write_window("c1", T0, T0 + timedelta(minutes=3)) as writer:
        writer.replace("gpu_node_usage", node_rows(T0, 3))
    frame = store.read_frame("SELECT minute, gpu_count, gpu_model, zone FROM gpu_node_usage")
    assert list(frame["minute"]) == list(pd.date_range(T0, periods=3, freq="min", tz="UTC"))
    assert frame["gpu_count"].tolist() == [8, 8, 8]
    assert frame["zone"].tolist() == ["", "", ""]  # empty strings stay strings, not NULL
    empty = store.read_frame("SELECT minute, gpu_count FROM gpu_node_usage WHERE false")
    assert empty.empty and str(empty["minute"].dtype).startswith("datetime64")


def test_pod_attributes_upsert_widens_seen_range_without_adding_rows(store: CostStore):
    pods = pd.DataFrame(
        {
            "pod_uid": ["u1"],
            "namespace": ["ml"],
            "pod": ["train"],
            "team": [""],
            "project": ["p"],
            "experiment_id": [""],
            "cost_center": [""],
            "gpu_resource": ["nvidia.com/gpu"],
            "gpu_requested": [1],
            "sharing_mode": ["exclusive"],
            "labels": ['{"project":"p"}'],
            "cost_limit_usd": [float("nan")],
            "first_seen": [T0],
            "last_seen": [T0 + timedelta(minutes=5)],
        }
    )
    # A live window, then a backfill of older minutes with other labels: the newer sighting's
    # attribution stays.
    for first, last, team in ((0, 5, "old"), (10, 20, "new"), (0, 5, "old")):
        window = pods.assign(
            first_seen=T0 + timedelta(minutes=first),
            last_seen=T0 + timedelta(minutes=last),
            team=team,
        )
        with store.write_window("c1", T0, T0 + timedelta(hours=1)) as writer:
            writer.upsert_pods(window)
    rows = store.read_frame(
        "SELECT first_seen, last_seen, cost_limit_usd, labels, team FROM gpu_pods"
    )
    assert len(rows) == 1
    assert rows.loc[0, "first_seen"] == T0
    assert rows.loc[0, "last_seen"] == T0 + timedelta(minutes=20)
    assert rows.loc[0, "team"] == "new"
    assert pd.isna(rows.loc[0, "cost_limit_usd"])


def test_retention_deletes_only_old_minute_rows(store: CostStore):
    old = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=120)
    recent = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    for start in (old, recent):
        with store.write_window("c1", start, start + timedelta(minutes=2)) as writer:
            writer.replace("gpu_node_usage", node_rows(start, 2))
    with store.write_window("c2", old, old + timedelta(minutes=2)) as writer:
        writer.replace("gpu_node_usage", node_rows(old, 2))
    with store.connection() as conn, conn.transaction():  # budgets: per-pod hours, cache
        for cluster in ("c1", "c2"):
            for hour in (old, recent):
                conn.execute(
                    "INSERT INTO pod_hourly_changes (cluster, hour) VALUES (%s, %s)",
                    (cluster, hour.replace(minute=0)),
                )
            conn.execute(
                "INSERT INTO grouped_cost_cache (cluster, fingerprint, through_hour, computed_at,"
                " frame) VALUES (%s, 'old', %s, %s, ''), (%s, 'new', %s, %s, '')",
                (cluster, old, old, cluster, recent, recent),
            )
    deleted = store.apply_retention("c1")
    assert deleted["gpu_node_usage"] == 2
    assert count(store, "gpu_node_usage") == 2
    assert count(store, "gpu_node_usage", "c2") == 2  # another cluster's rows are its own
    assert (deleted["pod_hourly_changes"], deleted["grouped_cost_cache"]) == (1, 1)
    for table in ("pod_hourly_changes", "grouped_cost_cache"):
        assert (count(store, table), count(store, table, "c2")) == (1, 2), table


def test_connection_errors_never_show_the_password():
    url = "postgresql://costs:hunter2-secret@127.0.0.1:1/gpu_costs"
    store = CostStore(database_url=url)
    with pytest.raises(StoreError) as raised:
        store.read_frame("SELECT 1")
    assert "hunter2-secret" not in str(raised.value)
    assert "127.0.0.1" in str(raised.value)
    assert "hunter2-secret" not in store.describe()
    assert redact_url(url) == "host=127.0.0.1 port=1 dbname=gpu_costs user=costs"
    for leaky in (
        "postgresql://costs@db.internal/gpu_costs?password=hunter2-secret",
        "host=db.internal user=costs password=hunter2-secret dbname=gpu_costs",
        "postgresql://costs:hunter2-secret@db.internal/gpu_costs?sslmode=require",
    ):
        assert "hunter2" not in redact_url(leaky)
        assert "db.internal" in redact_url(leaky)


def test_concurrent_rewrites_of_one_window_never_double_count(store: CostStore):
    """Two runs rewriting the same window at once (a schedule tick and a backfill, say)."""
    end = T0 + timedelta(minutes=10)
    both_inside = threading.Barrier(2, timeout=10)

    def rewrite() -> None:
        with store.write_window("c1", T0, end) as writer:
            both_inside.wait()  # both transactions are open before either deletes
            writer.replace("gpu_node_usage", node_rows(T0, 10))

    assert run_concurrently(rewrite, 2) == []
    assert count(store, "gpu_node_usage") == 10


def test_windows_of_different_days_are_written_at_the_same_time(store: CostStore):
    """The locks are per day: two day-runs of a backfill hold their transactions open at once
    (each waits inside for the other), which a lock per table would deadlock into a timeout."""
    both_inside = threading.Barrier(2, timeout=10)

    def write(day: int) -> None:
        start = T0 + timedelta(days=day)
        with store.write_window("c1", start, start + timedelta(minutes=10)) as writer:
            writer.replace("gpu_node_usage", node_rows(start, 10))
            both_inside.wait()

    days = iter((1, 2))
    assert run_concurrently(lambda: write(next(days)), 2) == []
    assert count(store, "gpu_node_usage") == 20


def test_window_days_lists_every_utc_day_touched():
    from gpu_cost_pipeline.store.cost_store import window_days

    start = datetime(2026, 11, 19, 23, 0, tzinfo=UTC)
    assert window_days(start, start + timedelta(hours=1)) == ["2026-11-19"]
    assert window_days(start, start + timedelta(hours=2)) == ["2026-11-19", "2026-11-20"]


def test_the_price_in_effect_is_found_however_old_and_points_inside_count(store: CostStore):
    from gpu_cost_pipeline.store import queries

    with store.write_window("c1", T0, T0 + timedelta(minutes=10)) as writer:
        writer.replace("gpu_node_usage", node_rows(T0, 10))
    key = {
        "provider": "aws",
        "region": "us-east-1",
        "zone": "",
        "instance_type": "p5.48xlarge",
        "gpu_model": "H100-80GB",
        "capacity_type": "on-demand",
        "on_demand_price_per_gpu_hour": 6.88,
        "source": "estimate",
    }
    points = pd.DataFrame(
        [
            {**key, "price_per_gpu_hour": 1.0, "effective_at": T0 - timedelta(days=9)},
            {**key, "price_per_gpu_hour": 2.0, "effective_at": T0 - timedelta(days=5)},
            {**key, "price_per_gpu_hour": 3.0, "effective_at": T0 + timedelta(minutes=4)},
            {**key, "price_per_gpu_hour": 9.0, "effective_at": T0 + timedelta(minutes=10)},
            {**key, "zone": "other", "price_per_gpu_hour": 5.0, "effective_at": T0},
        ]
    )
    with store.write_window("c1", T0 - timedelta(days=10), T0 + timedelta(hours=1)) as writer:
        writer.replace("price_points", points, time_column="effective_at")
    with store.connection() as conn:
        found = queries.price_points(conn, "c1", T0, T0 + timedelta(minutes=10))
    assert sorted(found["price_per_gpu_hour"]) == [2.0, 3.0]


def test_price_overrides_match_wildcards_and_the_most_specific_wins(store: CostStore):
    from gpu_cost_pipeline.core.pricing import BOOK_MATCH_COLUMNS, EstimateSettings, resolve_window
    from gpu_cost_pipeline.store import price_book, queries

    with store.write_window("c1", T0, T0 + timedelta(minutes=10)) as writer:
        writer.replace("gpu_node_usage", node_rows(T0, 10).assign(zone="us-east-1a"))
    overrides = [  # (zone, instance type, price, effective days before T0)
        ("", "", 1.25, 30),  # any zone, any instance: matches
        ("us-east-1a", "p5.48xlarge", 1.50, 30),  # more specific: wins
        ("", "", 0.90, 10),  # newer but less specific: does not shadow the negotiated price
        ("us-east-1b", "", 0.10, 1),  # another zone: never matches
        ("", "", 2.00, -1),  # not yet in effect
    ]
    with store.connection() as conn, conn.transaction():
        for zone, instance, price, days in overrides:
            conn.execute(
                "INSERT INTO price_overrides (provider, region, zone, instance_type, gpu_model,"
                " capacity_type, price_per_gpu_hour, effective_from)"
                " VALUES ('aws', '', %s, %s, 'H100-80GB', 'on-demand', %s, %s)",
                (zone, instance, price, T0 - timedelta(days=days)),
            )
    with store.connection() as conn:
        keys = queries.price_keys(conn, "c1", T0, T0 + timedelta(minutes=10))
        offered = price_book.window_overrides(conn, keys, T0 + timedelta(minutes=10))
    resolved = resolve_window(
        node_rows(T0, 1).assign(zone="us-east-1a"),
        T0,
        T0 + timedelta(minutes=10),
        pd.DataFrame(columns=BOOK_MATCH_COLUMNS),
        offered,
        EstimateSettings(),
    ).prices
    assert resolved["source"].tolist() == ["override"]
    assert resolved.loc[0, "price_per_gpu_hour"] == 1.50
    assert resolved.loc[0, "zone"] == "us-east-1a"  # the usage's key
    assert set(offered["zone"]) == {"us-east-1a"}  # rows come keyed by the usage's key
