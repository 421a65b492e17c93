"""TimescaleDB-only policies that depend on configuration (the schema is in
``migrations/timescale/``). TimescaleDB cannot be installed on the build machines, so this module
is small and written against the documented API (2.13+): ``add_retention_policy`` and
``remove_retention_policy`` with ``if_exists`` / ``if_not_exists``.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

MINUTE_HYPERTABLES = ("gpu_pod_usage", "gpu_node_usage", "gpu_cost")
HOURLY_AGGREGATE = "gpu_cost_hourly"


def apply_retention(conn: psycopg.Connection, minute_days: int, rollup_days: int) -> None:
    """(Re)set retention policies: dropping whole chunks (of every cluster) is how TimescaleDB
    retires old rows. Runs from the daily retention job, so processes never race on them."""
    with conn.transaction():
        for relation, days in [(t, minute_days) for t in MINUTE_HYPERTABLES] + [
            (HOURLY_AGGREGATE, rollup_days)
        ]:
            conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (relation,))
            conn.execute(
                "SELECT add_retention_policy(%s, drop_after => make_interval(days => %s))",
                (relation, days),
            )


def refresh_hourly(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    """Re-materialize the hourly aggregate over [start, end) (hour-aligned); must run outside
    a transaction block (TimescaleDB refuses CALL refresh_continuous_aggregate inside one)."""
    conn.execute(
        "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)",
        (HOURLY_AGGREGATE, start, end),
    )
