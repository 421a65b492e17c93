"""The ROI tables: daily facts derived from gpu_cost and gpu_node_usage, and the stored reports.

A day's facts are derived in the database (INSERT ... SELECT: the minute rows never leave the
server) inside the caller's transaction, after the day is locked and cleared, so rewriting a day
replaces it. Reports for any period read the stored days and derive the rest (days not
materialized yet, today so far, partial days at the edges) the same way, from the minute rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import psycopg
from psycopg import sql

from gpu_cost_pipeline.core.roi import (
    CAPACITY_COLUMNS,
    USAGE_COLUMNS,
    USAGE_KEYS,
    RoiFacts,
    combine_facts,
)
from gpu_cost_pipeline.store.cost_store import read_frame

_KEYS = ", ".join(USAGE_KEYS)

# Per (pod, node) over [start, end) of the minute cost rows; idle rows have their own pod_uid.
_USAGE_FROM_MINUTES = f"""
    SELECT {_KEYS},
           max(gpu_share) AS gpu_share,
           max(gpu_utilization) AS max_utilization,
           count(*) AS minutes,
           sum(seconds) / 3600.0 AS hours,
           sum(gpu_share * seconds) / 3600.0 AS gpu_hours,
           sum(cost_usd) AS cost_usd,
           sum(on_demand_cost_usd) AS on_demand_cost_usd,
           sum(exclusive_cost_usd) AS exclusive_cost_usd,
           coalesce(sum(gpu_share * seconds) FILTER (WHERE gpu_utilization IS NOT NULL), 0)
               / 3600.0 AS measured_gpu_hours,
           coalesce(sum(cost_usd) FILTER (WHERE gpu_utilization IS NOT NULL), 0)
               AS measured_cost_usd,
           coalesce(sum(gpu_utilization * gpu_share * seconds), 0) / 3600.0 AS used_gpu_hours,
           sum(CASE WHEN is_idle THEN cost_usd
                    ELSE coalesce(cost_usd * (1 - gpu_utilization), 0) END) AS unused_cost_usd
    FROM gpu_cost
    WHERE cluster = %(cluster)s AND minute >= %(start)s AND minute < %(end)s
    GROUP BY {_KEYS}"""

# Per (GPU model, capacity type): GPUs present minute by minute, over the minutes that have cost
# rows (a minute whose costs were never derived claims nothing).
_CAPACITY_FROM_MINUTES = """
    WITH covered AS (
        SELECT DISTINCT minute FROM gpu_cost
        WHERE cluster = %(cluster)s AND minute >= %(start)s AND minute < %(end)s),
    per_minute AS (
        SELECT minute, gpu_model, capacity_type, sum(gpu_count) AS gpus, count(*) AS nodes,
               sum(gpu_count * seconds) / 3600.0 AS gpu_hours
        FROM gpu_node_usage
        WHERE cluster = %(cluster)s AND minute >= %(start)s AND minute < %(end)s
          AND minute IN (SELECT minute FROM covered)
        GROUP BY 1, 2, 3)
    SELECT gpu_model, capacity_type,
           max(gpus)::double precision AS peak_gpus,
           (CASE WHEN count(*) < (SELECT count(*) FROM covered) THEN 0 ELSE min(gpus) END)
               ::double precision AS min_gpus,
           max(nodes) AS peak_nodes,
           sum(gpu_hours) AS gpu_hours,
           count(*) AS minutes
    FROM per_minute GROUP BY 1, 2"""

_COVERED_MINUTES = """
    SELECT count(DISTINCT minute) FROM gpu_cost
    WHERE cluster = %(cluster)s AND minute >= %(start)s AND minute < %(end)s"""

# Stored days, summed per (pod, node) in the database.
_USAGE_FROM_DAYS = f"""
    SELECT {_KEYS},
           max(gpu_share) AS gpu_share, max(max_utilization) AS max_utilization,
           sum(minutes) AS minutes, sum(hours) AS hours, sum(gpu_hours) AS gpu_hours,
           sum(cost_usd) AS cost_usd, sum(on_demand_cost_usd) AS on_demand_cost_usd,
           sum(exclusive_cost_usd) AS exclusive_cost_usd,
           sum(measured_gpu_hours) AS measured_gpu_hours,
           sum(measured_cost_usd) AS measured_cost_usd, sum(used_gpu_hours) AS used_gpu_hours,
           sum(unused_cost_usd) AS unused_cost_usd
    FROM roi_usage_daily
    WHERE cluster = %(cluster)s AND day = ANY(%(days)s)
    GROUP BY {_KEYS}"""

_CAPACITY_FROM_DAYS = """
    SELECT gpu_model, capacity_type, max(peak_gpus) AS peak_gpus, min(min_gpus) AS min_gpus,
           max(peak_nodes) AS peak_nodes, sum(gpu_hours) AS gpu_hours,
           sum(minutes) AS minutes
    FROM roi_capacity_daily
    WHERE cluster = %(cluster)s AND day = ANY(%(days)s)
    GROUP BY 1, 2"""

# Each pod's name, what it requested and whether its labels mark it interruptible.
_WITH_POD_DETAILS = """
    SELECT f.*, coalesce(p.pod, '') AS pod,
           coalesce(lower(p.labels ->> %(interruptible_label)s) IN ('true', 'yes', '1'), false)
               AS interruptible,
           coalesce(p.gpu_resource, '') AS gpu_resource,
           coalesce(p.gpu_requested, 0) AS gpu_requested
    FROM ({facts}) AS f
    LEFT JOIN gpu_pods AS p ON p.cluster = %(cluster)s AND p.pod_uid = f.pod_uid"""


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _lock_day(conn: psycopg.Connection, cluster: str, day: date) -> None:
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"gpu_cost_pipeline:{cluster}:roi:{day.isoformat()}",),
    )


def store_day_facts(conn: psycopg.Connection, cluster: str, day: date) -> int:
    """Replace the day's stored facts with ones derived from its minute rows, in the caller's
    transaction; returns the day's covered minutes."""
    start, end = _day_bounds(day)
    params = {"cluster": cluster, "start": start, "end": end, "day": day}
    _lock_day(conn, cluster, day)
    for table in ("roi_usage_daily", "roi_capacity_daily", "roi_reports"):
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE cluster = %(cluster)s AND day = %(day)s").format(
                sql.Identifier(table)
            ),
            params,
        )
    usage_columns = ", ".join(USAGE_COLUMNS)
    conn.execute(
        f"INSERT INTO roi_usage_daily (day, cluster, {usage_columns})"
        f" SELECT %(day)s, %(cluster)s, {usage_columns} FROM ({_USAGE_FROM_MINUTES}) AS f",
        params,
    )
    capacity_columns = ", ".join(CAPACITY_COLUMNS)
    conn.execute(
        f"INSERT INTO roi_capacity_daily (day, cluster, {capacity_columns})"
        f" SELECT %(day)s, %(cluster)s, {capacity_columns} FROM ({_CAPACITY_FROM_MINUTES}) AS f",
        params,
    )
    row = conn.execute(_COVERED_MINUTES, params).fetchone()
    return int(row[0]) if row else 0


def _facts(
    conn: psycopg.Connection, usage_sql: str, capacity_sql: str, params: dict, covered: int
) -> RoiFacts:
    usage = read_frame(conn, sql.SQL(_WITH_POD_DETAILS.replace("{facts}", usage_sql)), params)
    capacity = read_frame(conn, sql.SQL(capacity_sql), params)
    # Summed over several stretches, a key that missed some covered minute had zero GPUs then.
    capacity.loc[capacity["minutes"] < covered, "min_gpus"] = 0.0
    return RoiFacts(usage=usage, capacity=capacity, covered_minutes=covered)


def stored_facts(
    conn: psycopg.Connection,
    cluster: str,
    days: Sequence[date],
    covered_minutes: int,
    interruptible_label: str,
) -> RoiFacts:
    """The stored facts of ``days``, summed per pod in the database."""
    params = {
        "cluster": cluster,
        "days": list(days),
        "interruptible_label": interruptible_label,
    }
    return _facts(conn, _USAGE_FROM_DAYS, _CAPACITY_FROM_DAYS, params, covered_minutes)


def minute_facts(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime, interruptible_label: str
) -> RoiFacts:
    """Facts of [start, end) derived now from the minute rows (nothing is stored)."""
    params = {
        "cluster": cluster,
        "start": start,
        "end": end,
        "interruptible_label": interruptible_label,
    }
    row = conn.execute(_COVERED_MINUTES, params).fetchone()
    covered = int(row[0]) if row else 0
    return _facts(conn, _USAGE_FROM_MINUTES, _CAPACITY_FROM_MINUTES, params, covered)


def save_report(
    conn: psycopg.Connection, cluster: str, day: date, covered_minutes: int, report: dict
) -> None:
    """Store the day's report (after ``store_day_facts`` in the same transaction)."""
    conn.execute(
        "INSERT INTO roi_reports (day, cluster, covered_minutes, baseline_cost_usd,"
        " actual_cost_usd, total_savings_usd, savings_percent, report)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            day,
            cluster,
            covered_minutes,
            report["baseline_cost_usd"],
            report["actual_cost_usd"],
            report["total_savings_usd"],
            report["savings_percent"],
            json.dumps(report),
        ),
    )


def delete_before(conn: psycopg.Connection, cluster: str, first_kept: date) -> None:
    """Retention: drop the cluster's ROI rows of days before ``first_kept``."""
    for table in ("roi_usage_daily", "roi_capacity_daily", "roi_reports"):
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE cluster = %s AND day < %s").format(sql.Identifier(table)),
            (cluster, first_kept),
        )


def stored_report(conn: psycopg.Connection, cluster: str, day: date) -> dict | None:
    row = conn.execute(
        "SELECT report FROM roi_reports WHERE cluster = %s AND day = %s", (cluster, day)
    ).fetchone()
    return row[0] if row else None


def stored_days(conn: psycopg.Connection, cluster: str, first: date, last: date) -> dict[date, int]:
    """Days in [first, last] with stored facts, and their covered minutes."""
    rows = conn.execute(
        "SELECT day, covered_minutes FROM roi_reports"
        " WHERE cluster = %s AND day >= %s AND day <= %s",
        (cluster, first, last),
    ).fetchall()
    return dict(rows)


def period_facts(
    conn: psycopg.Connection,
    cluster: str,
    start: datetime,
    end: datetime,
    interruptible_label: str,
) -> tuple[RoiFacts, int]:
    """Facts of [start, end): whole UTC days from the stored facts where the roi_report asset
    wrote them, everything else (days not materialized, partial days) derived now from the
    minute rows, one query per contiguous stretch. Returns the facts and how many whole days
    were derived now."""
    whole_first = (start + timedelta(days=1) - timedelta(microseconds=1)).date()
    whole_end = end.date()  # exclusive
    stored = stored_days(conn, cluster, whole_first, whole_end - timedelta(days=1))
    parts: list[RoiFacts] = []
    if stored:
        parts.append(
            stored_facts(conn, cluster, sorted(stored), sum(stored.values()), interruptible_label)
        )
    # The stretches outside the stored days, merged where contiguous.
    cursor, stretches = start, []
    for day in sorted(stored):
        day_start, day_end = _day_bounds(day)
        if cursor < day_start:
            stretches.append((cursor, day_start))
        cursor = day_end
    if cursor < end:
        stretches.append((cursor, end))
    for stretch_start, stretch_end in stretches:
        parts.append(minute_facts(conn, cluster, stretch_start, stretch_end, interruptible_label))
    whole_days = max(0, (whole_end - whole_first).days)
    return combine_facts(parts), whole_days - len(stored)


def rollup_cost(conn: psycopg.Connection, cluster: str, start: datetime, end: datetime) -> float:
    """The hourly rollup's cost over whole hours [start, end) (the roi_report's check)."""
    row = conn.execute(
        "SELECT coalesce(sum(cost_usd), 0) FROM gpu_cost_hourly"
        " WHERE cluster = %s AND hour >= %s AND hour < %s",
        (cluster, start, end),
    ).fetchone()
    return float(row[0]) if row else 0.0
