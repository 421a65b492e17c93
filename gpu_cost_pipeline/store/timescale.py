"""TimescaleDB-only policies that depend on configuration (the schema is in
``migrations/timescale/``). TimescaleDB cannot be installed on the build machines, so this module
is small and written against the documented API (2.13+): ``add_retention_policy`` and
``remove_retention_policy`` with ``if_exists``, ``refresh_continuous_aggregate``.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from gpu_cost_pipeline.store.schema import record_setting, recorded_settings

MINUTE_HYPERTABLES = ("gpu_pod_usage", "gpu_node_usage", "gpu_cost")
HOURLY_AGGREGATE = "gpu_cost_hourly"
_RETENTION_LOCK = "gpu_cost_pipeline:retention_policies"


def retention_wanted(minute_days: int, rollup_days: int) -> dict[str, str]:
    """The retention settings as recorded in ``store_settings``."""
    return {"retention_days": str(minute_days), "rollup_retention_days": str(rollup_days)}


def ensure_retention(conn: psycopg.Connection, minute_days: int, rollup_days: int) -> bool:
    """Set the retention policies when the store is set up, and re-set them when the settings
    change; a no-op otherwise. Returns whether the policies were (re)set. Dropping whole
    chunks (of every cluster) is how TimescaleDB retires old rows.

    Processes serialize on a transaction lock and compare with what was last recorded, so
    concurrent runs never race on removing and adding the same policy.
    """
    wanted = retention_wanted(minute_days, rollup_days)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_RETENTION_LOCK,))
        recorded = recorded_settings(conn)
        if all(recorded.get(key) == value for key, value in wanted.items()):
            return False
        for relation, days in [(t, minute_days) for t in MINUTE_HYPERTABLES] + [
            (HOURLY_AGGREGATE, rollup_days)
        ]:
            conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (relation,))
            conn.execute(
                "SELECT add_retention_policy(%s, drop_after => make_interval(days => %s))",
                (relation, days),
            )
        for key, value in wanted.items():
            record_setting(conn, key, value)
    return True


def refresh_hourly(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    """Re-materialize the hourly aggregate over [start, end) (hour-aligned); must run outside
    a transaction block (TimescaleDB refuses CALL refresh_continuous_aggregate inside one)."""
    conn.execute(
        "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
        (HOURLY_AGGREGATE, start, end),
    )
