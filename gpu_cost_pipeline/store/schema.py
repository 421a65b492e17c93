"""Versioned SQL migrations, recorded in ``schema_migrations``.

``migrations/NNN_*.sql`` apply everywhere; ``migrations/timescale/NNN_*.sql`` apply when the
``timescaledb`` extension is available and ``migrations/plain/NNN_*.sql`` otherwise, so the same
tables exist on plain PostgreSQL and on TimescaleDB. Concurrent processes (Dagster runs start in
parallel) serialize on an advisory lock; each file applies in its own transaction.
"""

from __future__ import annotations

from importlib import resources

import psycopg

MODE_PLAIN, MODE_TIMESCALE = "plain", "timescale"
_LOCK_KEY = 7_213_004_117  # arbitrary, fixed: the advisory lock id for migrations


def _migration_files(mode: str) -> list[tuple[str, str]]:
    """(version, sql) in order, e.g. ("001_core_tables", ...), ("plain/002_hourly_rollup", ...)."""
    root = resources.files("gpu_cost_pipeline.store") / "migrations"
    found: list[tuple[str, str, str]] = []
    for folder, prefix in ((root, ""), (root / mode, f"{mode}/")):
        for entry in folder.iterdir():
            if entry.name.endswith(".sql"):
                found.append((entry.name, prefix + entry.name[:-4], entry.read_text()))
    return [(version, sql) for _, version, sql in sorted(found)]


def timescale_available(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def migrate(conn: psycopg.Connection) -> str:
    """Apply pending migrations; returns the store's mode (``plain`` or ``timescale``).

    The mode is chosen once, when the database is first migrated, and kept from then on.
    Takes a fresh connection and leaves it in autocommit mode.
    """
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, mode text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT mode FROM schema_migrations LIMIT 1").fetchone()
        mode = row[0] if row else (MODE_TIMESCALE if timescale_available(conn) else MODE_PLAIN)
        applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in _migration_files(mode):
            if version in applied:
                continue
            with conn.transaction():
                conn.execute(sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, mode) VALUES (%s, %s)", (version, mode)
                )
        return mode
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
