"""The store against the servers a user may point GPU_COST_DATABASE_URL at: a password-protected
TCP server, one that refuses the connection, a wrong password, and a server where TimescaleDB is
installed but not preloaded (a faithful stand-in, see postgres_servers.py: TimescaleDB itself
cannot be installed on the build machines). Each gets the right mode or one clear message, and
nothing half-written."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from gpu_cost_pipeline.store import timescale
from gpu_cost_pipeline.store.cost_store import CostStore, StoreError
from gpu_cost_pipeline_tests.postgres_servers import (
    create_database,
    free_port,
    install_with_fake_timescaledb,
    tcp_postgres,
)

PASSWORD = "Sup3r-secret-pw"


@pytest.fixture(scope="module")
def tcp_server() -> Iterator[str]:
    with tcp_postgres(PASSWORD) as url:
        yield url


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {name for (name,) in rows}


def test_a_password_protected_tcp_server_gets_the_plain_schema(tcp_server: str):
    url = create_database(tcp_server, "plain_tcp")
    store = CostStore(database_url=url)
    assert store.mode() == "plain"
    assert store.mode_note() is None  # no TimescaleDB on this server: nothing to explain
    assert {"gpu_cost", "gpu_cost_hourly", "store_settings"} <= tables(url)


def test_a_wrong_password_gets_one_clear_message_without_the_password(tcp_server: str):
    wrong = tcp_server.replace(PASSWORD, "not-the-pw").rsplit("/", 1)[0] + "/postgres"
    with pytest.raises(StoreError) as raised:
        CostStore(database_url=wrong).mode()
    message = str(raised.value)
    assert "password authentication failed" in message
    assert "cannot connect to host=127.0.0.1" in message
    assert "not-the-pw" not in message and PASSWORD not in message


def test_a_refused_connection_gets_one_clear_message():
    url = f"postgresql://costs:{PASSWORD}@127.0.0.1:{free_port()}/gpu_costs"
    with pytest.raises(StoreError) as raised:
        CostStore(database_url=url).mode()
    message = str(raised.value)
    assert "Connection refused" in message and "port=" in message
    assert PASSWORD not in message


@pytest.fixture(scope="module")
def fake_timescaledb_install() -> Iterator:
    with install_with_fake_timescaledb() as install:
        yield install


def test_timescaledb_installed_but_not_preloaded_gives_plain_mode_and_says_how_to_fix(
    fake_timescaledb_install,
):
    with tcp_postgres(PASSWORD, install=fake_timescaledb_install) as server:
        url = create_database(server, "ts_not_preloaded")
        # The stand-in behaves as TimescaleDB does: listed as available, and creating it
        # ends the connection with FATAL.
        with psycopg.connect(url) as conn:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
        assert available
        with psycopg.connect(url, autocommit=True) as conn:
            with pytest.raises(psycopg.Error, match="must be preloaded"):
                conn.execute("CREATE EXTENSION timescaledb")
            assert conn.broken  # FATAL: the server ended the session

        store = CostStore(database_url=url)
        assert store.mode() == "plain"
        note = store.mode_note() or ""
        assert "must be preloaded" in note and "shared_preload_libraries" in note
        assert {"gpu_cost", "gpu_cost_hourly", "gpu_pods"} <= tables(url)
        with psycopg.connect(url) as conn:
            versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
            assert "plain/002_hourly_rollup" in versions
            assert not any(v.startswith("timescale/") for v in versions)


def test_a_failing_migration_leaves_no_half_migrated_schema(fake_timescaledb_install):
    """Preloaded, the stand-in can be created, so the TimescaleDB migrations run and fail at
    create_hypertable (the stand-in has none): nothing of the schema may remain."""
    with tcp_postgres(PASSWORD, install=fake_timescaledb_install, preload="timescaledb") as server:
        url = create_database(server, "ts_fails_midway")
        with pytest.raises(psycopg.errors.UndefinedFunction, match="create_hypertable"):
            CostStore(database_url=url).mode()
        assert tables(url) == {"schema_migrations"}
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


RETENTION_STUBS = """
CREATE TABLE policy_calls (call text, relation text, days int);
CREATE FUNCTION remove_retention_policy(relation regclass, if_exists boolean DEFAULT false)
RETURNS void LANGUAGE sql AS $$ INSERT INTO policy_calls VALUES ('remove', relation::text, NULL) $$;
CREATE FUNCTION add_retention_policy(relation regclass, drop_after interval,
                                     if_not_exists boolean DEFAULT false)
RETURNS integer LANGUAGE sql AS $$
  INSERT INTO policy_calls VALUES ('add', relation::text, extract(day FROM drop_after)::int)
  RETURNING 1 $$;
"""


def test_retention_policies_are_set_once_and_reset_when_settings_change(store: CostStore):
    """TimescaleDB's policy functions stood in by SQL functions with the documented signatures
    (relation regclass, drop_after, if_exists): which calls are made, and when."""
    with store.connection() as conn:
        conn.execute(RETENTION_STUBS)
        conn.commit()
        conn.autocommit = True
        assert timescale.ensure_retention(conn, 90, 730) is True
        assert timescale.ensure_retention(conn, 90, 730) is False  # nothing changed
        calls = conn.execute("SELECT call, relation, days FROM policy_calls").fetchall()
        assert sorted(calls) == sorted(
            [("remove", t, None) for t in (*timescale.MINUTE_HYPERTABLES, "gpu_cost_hourly")]
            + [("add", t, 90) for t in timescale.MINUTE_HYPERTABLES]
            + [("add", "gpu_cost_hourly", 730)]
        )
        assert timescale.ensure_retention(conn, 30, 730) is True
        adds = conn.execute(
            "SELECT relation, days FROM policy_calls WHERE call = 'add' ORDER BY ctid DESC LIMIT 4"
        ).fetchall()
        assert sorted(adds) == sorted(
            [(t, 30) for t in timescale.MINUTE_HYPERTABLES] + [("gpu_cost_hourly", 730)]
        )
