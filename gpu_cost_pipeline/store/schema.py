"""Versioned SQL migrations, recorded in ``schema_migrations``.

``migrations/NNN_*.sql`` apply everywhere; ``migrations/timescale/NNN_*.sql`` apply in TimescaleDB
mode and ``migrations/plain/NNN_*.sql`` otherwise, so the same tables exist on plain PostgreSQL
and on TimescaleDB. Concurrent processes (Dagster runs start in parallel) serialize on an
advisory lock, and all pending files apply in one transaction: a failure leaves the schema as it
was, never half-migrated.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import psycopg
from dagster import get_dagster_logger

MODE_PLAIN, MODE_TIMESCALE = "plain", "timescale"
_LOCK_KEY = 7_213_004_117  # arbitrary, fixed: the advisory lock id for migrations
# Why the store runs without TimescaleDB although the server has it, kept for `db status`.
MODE_NOTE_KEY = "mode_note"

Connect = Callable[[], psycopg.Connection]


def _migration_files(mode: str) -> list[tuple[str, str]]:
    """(version, sql) in order, e.g. ("001_core_tables", ...), ("plain/002_hourly_rollup", ...)."""
    root = resources.files("gpu_cost_pipeline.store") / "migrations"
    found: list[tuple[str, str, str]] = []
    for folder, prefix in ((root, ""), (root / mode, f"{mode}/")):
        for entry in folder.iterdir():
            if entry.name.endswith(".sql"):
                found.append((entry.name, prefix + entry.name[:-4], entry.read_text()))
    return [(version, sql) for _, version, sql in sorted(found)]


def _choose_mode(conn: psycopg.Connection, connect: Connect) -> tuple[str, str | None]:
    """TimescaleDB only when its extension exists in this database or can be created now;
    else plain PostgreSQL, with a note saying why and how to enable it.

    Being listed in ``pg_available_extensions`` is not enough: a server where the package is
    installed but ``shared_preload_libraries`` lacks it refuses the extension, and TimescaleDB's
    loader does so with FATAL, which ends the connection. Whether the library is preloaded is
    visible to superusers only, so the test is to create the extension on a throwaway
    connection before anything is migrated.
    """
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return MODE_TIMESCALE, None
    if not conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone():
        return MODE_PLAIN, None
    try:
        with connect() as probe:
            probe.autocommit = True
            probe.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return MODE_TIMESCALE, None
    except psycopg.Error as error:
        reason = (error.diag.message_primary if error.diag else None) or str(error)
        note = (
            f"TimescaleDB is installed on this server but cannot be enabled "
            f"({reason.strip().splitlines()[0]}); the store uses plain PostgreSQL tables. "
            "To use TimescaleDB: add 'timescaledb' to shared_preload_libraries in "
            "postgresql.conf, restart the server, and run CREATE EXTENSION timescaledb in this "
            "database as its owner or a superuser, before the pipeline first uses it (the mode "
            "is chosen once, when the store is set up)."
        )
        get_dagster_logger(__name__).warning(note)
        return MODE_PLAIN, note


def migrate(connect: Connect) -> str:
    """Apply pending migrations; returns the store's mode (``plain`` or ``timescale``).

    The mode is chosen once, when the database is first migrated, and kept from then on.
    ``connect`` opens a new connection (the TimescaleDB check may need a throwaway one).
    """
    with connect() as conn:
        conn.autocommit = True
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            return _migrate_locked(conn, connect)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _migrate_locked(conn: psycopg.Connection, connect: Connect) -> str:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, mode text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT mode FROM schema_migrations LIMIT 1").fetchone()
    mode, note = (row[0], None) if row else _choose_mode(conn, connect)
    applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    pending = [(v, sql) for v, sql in _migration_files(mode) if v not in applied]
    if not pending:
        return mode
    with conn.transaction():
        for version, sql in pending:
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, mode) VALUES (%s, %s)", (version, mode)
            )
        if note:
            record_setting(conn, MODE_NOTE_KEY, note)
    return mode


def record_setting(conn: psycopg.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO store_settings (key, value) VALUES (%s, %s) ON CONFLICT (key)"
        " DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        (key, value),
    )


def recorded_settings(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM store_settings").fetchall())
