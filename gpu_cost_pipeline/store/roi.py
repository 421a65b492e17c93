"""The ROI tables: daily facts derived from gpu_cost and gpu_node_usage, and the stored reports.

A day's facts are derived in the database (INSERT ... SELECT: the minute rows never leave the
server) inside the caller's transaction, after the day is locked and cleared, so rewriting a day
replaces it. A period's facts are read in the database too, from the stored days plus whatever
is not stored (days not materialized yet, today so far, partial days at the edges) derived the
same way from the minute rows, so that only small frames reach Python: per-key sums, per-model
capacity, and the pods a recommendation may concern.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import psycopg
from psycopg import sql

from gpu_cost_pipeline.core.pricing import CAPACITY_COMMITTED, CAPACITY_ON_DEMAND
from gpu_cost_pipeline.core.recommendations import (
    LARGEST_SLICE,
    MAX_SUBJECTS,
    RecommendationSettings,
)
from gpu_cost_pipeline.core.roi import (
    CAPACITY_COLUMNS,
    FACT_SUMS,
    POD_COLUMNS,
    POD_DETAILS,
    POD_KEYS,
    SUMMARY_COLUMNS,
    SUMMARY_KEYS,
    RoiFacts,
)
from gpu_cost_pipeline.store.cost_store import read_frame

_POD_KEYS = ", ".join(POD_KEYS)
_POD_COLUMNS = ", ".join(POD_COLUMNS)
_SUMMARY_KEYS = ", ".join(SUMMARY_KEYS)
_SUMMARY_COLUMNS = ", ".join(SUMMARY_COLUMNS)
_SUMS = ", ".join(f"sum({c}) AS {c}" for c in FACT_SUMS)

# Per (pod, node) over [start, end) of the minute cost rows; idle rows have their own pod_uid.
_PODS_FROM_MINUTES = f"""
    SELECT {_POD_KEYS},
           max(gpu_share) AS gpu_share,
           max(gpu_utilization) AS max_utilization,
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
                    ELSE coalesce(cost_usd * (1 - gpu_utilization), 0) END) AS unused_cost_usd,
           min(minute) AS first_minute,
           max(minute) AS last_minute
    FROM gpu_cost
    WHERE cluster = %(cluster)s AND minute >= %(start)s AND minute < %(end)s{{filters}}
    GROUP BY {_POD_KEYS}"""

# The same with each pod's name and whether its labels mark it interruptible.
_PODS_WITH_DETAILS = f"""
    SELECT f.*, coalesce(p.pod, '') AS pod,
           coalesce(lower(p.labels ->> %(interruptible_label)s) IN ('true', 'yes', '1'), false)
               AS interruptible,
           coalesce(f.first_minute = %(start)s
                    OR f.last_minute >= %(end)s - interval '1 minute'
                    OR p.first_seen < %(start)s OR p.last_seen >= %(end)s, true) AS spans_days
    FROM ({_PODS_FROM_MINUTES}) AS f
    LEFT JOIN gpu_pods AS p ON p.cluster = %(cluster)s AND p.pod_uid = f.pod_uid"""
_STORED_POD_COLUMNS = ", ".join([*POD_COLUMNS, *POD_DETAILS, "spans_days"])

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

# Per-(pod, node) rows summed per attribution and price key; the node only for idle GPUs.
_SUMMARY_OF_ROWS = f"""
    SELECT namespace, team, gpu_model, capacity_type, provider, sharing_mode, is_idle,
           CASE WHEN is_idle THEN node ELSE '' END AS node, count(*) AS pod_days, {_SUMS},
           sum(CASE WHEN NOT is_idle AND measured_gpu_hours = 0 THEN cost_usd ELSE 0 END)
               AS unmeasured_cost_usd
    FROM ({{rows}}) AS r
    GROUP BY namespace, team, gpu_model, capacity_type, provider, sharing_mode, is_idle,
             CASE WHEN is_idle THEN node ELSE '' END"""


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def store_day_facts(
    conn: psycopg.Connection, cluster: str, day: date, interruptible_label: str
) -> int:
    """Replace the day's stored facts with ones derived from its minute rows, in the caller's
    transaction, and register the day (its report is saved by ``save_report``); returns the
    day's covered minutes."""
    start, end = _day_bounds(day)
    params = {
        "cluster": cluster,
        "start": start,
        "end": end,
        "day": day,
        "interruptible_label": interruptible_label,
    }
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"gpu_cost_pipeline:{cluster}:roi:{day.isoformat()}",),
    )
    for table in ("roi_usage_daily", "roi_summary_daily", "roi_capacity_daily", "roi_reports"):
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE cluster = %(cluster)s AND day = %(day)s").format(
                sql.Identifier(table)
            ),
            params,
        )
    # A pod that ran in the day's first or last minute, or was seen outside the day, may have
    # rows on other days: period reads sum those across days.
    conn.execute(
        f"INSERT INTO roi_usage_daily (day, cluster, {_STORED_POD_COLUMNS})"
        f" SELECT %(day)s, %(cluster)s, {_STORED_POD_COLUMNS}"
        f" FROM ({_PODS_WITH_DETAILS.replace('{filters}', '')}) AS f",
        params,
    )
    day_rows = "SELECT * FROM roi_usage_daily WHERE cluster = %(cluster)s AND day = %(day)s"
    conn.execute(
        f"INSERT INTO roi_summary_daily (day, cluster, {_SUMMARY_COLUMNS})"
        f" SELECT %(day)s, %(cluster)s, {_SUMMARY_COLUMNS}"
        f" FROM ({_SUMMARY_OF_ROWS.replace('{rows}', day_rows)}) AS s",
        params,
    )
    capacity_columns = ", ".join(CAPACITY_COLUMNS)
    conn.execute(
        f"INSERT INTO roi_capacity_daily (day, cluster, {capacity_columns})"
        f" SELECT %(day)s, %(cluster)s, {capacity_columns} FROM ({_CAPACITY_FROM_MINUTES}) AS f",
        params,
    )
    row = conn.execute(_COVERED_MINUTES, params).fetchone()
    covered = int(row[0]) if row else 0
    conn.execute(
        "INSERT INTO roi_reports (day, cluster, covered_minutes, baseline_cost_usd,"
        " actual_cost_usd, total_savings_usd, savings_percent, report)"
        " VALUES (%s, %s, %s, 0, 0, 0, 0, '{}')",
        (day, cluster, covered),
    )
    return covered


def save_report(conn: psycopg.Connection, cluster: str, day: date, report: dict) -> None:
    """Store the day's report (after ``store_day_facts``, in the same transaction)."""
    conn.execute(
        "UPDATE roi_reports SET baseline_cost_usd = %s, actual_cost_usd = %s,"
        " total_savings_usd = %s, savings_percent = %s, report = %s, computed_at = now()"
        " WHERE cluster = %s AND day = %s",
        (
            report["baseline_cost_usd"],
            report["actual_cost_usd"],
            report["total_savings_usd"],
            report["savings_percent"],
            json.dumps(report),
            cluster,
            day,
        ),
    )


def delete_before(conn: psycopg.Connection, cluster: str, first_kept: date) -> None:
    """Retention: drop the cluster's ROI rows of days before ``first_kept``."""
    for table in ("roi_usage_daily", "roi_summary_daily", "roi_capacity_daily", "roi_reports"):
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE cluster = %s AND day < %s").format(sql.Identifier(table)),
            (cluster, first_kept),
        )


def stored_report(conn: psycopg.Connection, cluster: str, day: date) -> dict | None:
    row = conn.execute(
        "SELECT report FROM roi_reports WHERE cluster = %s AND day = %s", (cluster, day)
    ).fetchone()
    return row[0] if row else None


def rollup_cost(conn: psycopg.Connection, cluster: str, start: datetime, end: datetime) -> float:
    """The hourly rollup's cost over whole hours [start, end) (the roi_report's check)."""
    row = conn.execute(
        "SELECT coalesce(sum(cost_usd), 0) FROM gpu_cost_hourly"
        " WHERE cluster = %s AND hour >= %s AND hour < %s",
        (cluster, start, end),
    ).fetchone()
    return float(row[0]) if row else 0.0


@dataclass
class _Period:
    """The SQL pieces of one period read: which days are stored, the stretches derived now."""

    params: dict
    filters: str  # " AND team = ... AND namespace = ..."
    stretches: list[tuple[datetime, datetime]] = field(default_factory=list)

    def stored(self, table: str) -> str:
        return f"SELECT * FROM {table} WHERE cluster = %(cluster)s AND day = ANY(%(days)s)" + (
            self.filters
        )

    def live(self) -> str:
        """Per-(pod, node) rows of the stretches not stored, as roi_usage_daily holds them."""
        parts = [
            _PODS_WITH_DETAILS.replace("{filters}", self.filters)
            .replace("%(start)s", f"%(start{i})s")
            .replace("%(end)s", f"%(end{i})s")
            for i in range(len(self.stretches))
        ]
        if not parts:
            return f"SELECT {_STORED_POD_COLUMNS} FROM roi_usage_daily WHERE false"
        return " UNION ALL ".join(f"SELECT {_STORED_POD_COLUMNS} FROM ({p}) AS s" for p in parts)

    def pieces(self, where: str = "") -> str:
        """Rows of pods that may span days (stored and live), to be summed per pod."""
        return (
            f"SELECT {_STORED_POD_COLUMNS} FROM ({self.stored('roi_usage_daily')}) AS d"
            f" WHERE spans_days AND NOT is_idle{where}"
            f" UNION ALL SELECT {_STORED_POD_COLUMNS} FROM live WHERE NOT is_idle{where}"
        )


_PER_POD = f"""
    SELECT {_POD_KEYS}, max(gpu_share) AS gpu_share, max(max_utilization) AS max_utilization,
           {_SUMS}, max(pod) AS pod, bool_or(interruptible) AS interruptible
    FROM ({{pieces}}) AS pieces GROUP BY {_POD_KEYS}"""

# The pods a recommendation may concern (recommendations decide; this only narrows, with the
# same thresholds): measured long enough and below the utilization threshold or small enough
# for a slice, or opted in to spot while not on spot.
_CANDIDATE = """
    (measured_gpu_hours > 0
     AND measured_gpu_hours >= %(min_hours)s * gpu_share
     AND (used_gpu_hours < %(underutilized)s * measured_gpu_hours
          OR (sharing_mode = 'exclusive' AND abs(gpu_share - 1) < 1e-9
              AND max_utilization <= %(largest_slice)s)))
    OR (capacity_type <> 'spot' AND interruptible)"""


def _period(
    conn: psycopg.Connection,
    cluster: str,
    start: datetime,
    end: datetime,
    team: str | None,
    namespace: str | None,
) -> tuple[_Period, int, int]:
    """Which whole days of [start, end) are stored; the rest becomes stretches derived now.
    Returns the pieces, the covered minutes, and how many whole days were not stored."""
    whole_first = (start + timedelta(days=1) - timedelta(microseconds=1)).date()
    whole_end = end.date()  # exclusive
    stored = dict(
        conn.execute(
            "SELECT day, covered_minutes FROM roi_reports"
            " WHERE cluster = %s AND day >= %s AND day < %s",
            (cluster, whole_first, whole_end),
        ).fetchall()
    )
    params: dict = {"cluster": cluster, "days": sorted(stored), "start": start, "end": end}
    filters = ""
    for column, value in (("team", team), ("namespace", namespace)):
        if value is not None:
            filters += f" AND {column} = %({column})s"
            params[column] = value
    period = _Period(params, filters)
    cursor = start
    for day in sorted(stored):
        day_start, day_end = _day_bounds(day)
        if cursor < day_start:
            period.stretches.append((cursor, day_start))
        cursor = day_end
    if cursor < end:
        period.stretches.append((cursor, end))
    covered = sum(stored.values())
    for i, (stretch_start, stretch_end) in enumerate(period.stretches):
        params[f"start{i}"], params[f"end{i}"] = stretch_start, stretch_end
        row = conn.execute(
            _COVERED_MINUTES, {"cluster": cluster, "start": stretch_start, "end": stretch_end}
        ).fetchone()
        covered += int(row[0]) if row else 0
    return period, covered, max(0, (whole_end - whole_first).days) - len(stored)


def period_facts(
    conn: psycopg.Connection,
    cluster: str,
    start: datetime,
    end: datetime,
    interruptible_label: str,
    thresholds: RecommendationSettings,
    team: str | None = None,
    namespace: str | None = None,
) -> tuple[RoiFacts, int]:
    """Facts of [start, end), optionally of one team and/or namespace (then without idle GPUs
    and capacity: they belong to no team). Returns them and how many whole days were derived
    now from the minute rows because the roi_report asset has not stored them."""
    period, covered, derived_days = _period(conn, cluster, start, end, team, namespace)
    params = {
        **period.params,
        "interruptible_label": interruptible_label,
        "min_hours": thresholds.min_hours,
        "underutilized": thresholds.underutilized_utilization,
        "largest_slice": LARGEST_SLICE,
        "top": MAX_SUBJECTS,
    }
    live = f"WITH live AS MATERIALIZED ({period.live()})"
    # One scan of the stored days: whole pods that are candidates, and every piece of a pod that
    # may span days (summed with the live rows, then judged).
    stored_rows = (
        f"SELECT {_STORED_POD_COLUMNS} FROM ({period.stored('roi_usage_daily')}) AS d"
        f" WHERE NOT is_idle AND (spans_days OR ({_CANDIDATE}))"
    )
    pieces = (
        "SELECT * FROM stored_rows WHERE spans_days"
        f" UNION ALL SELECT {_STORED_POD_COLUMNS} FROM live WHERE NOT is_idle"
    )
    pods_sql = f"""{live}, stored_rows AS MATERIALIZED ({stored_rows})
        SELECT * FROM (
            SELECT {_POD_COLUMNS}, pod, interruptible FROM stored_rows WHERE NOT spans_days
            UNION ALL {_PER_POD.replace("{pieces}", pieces)}) AS c
        WHERE {_CANDIDATE}"""
    whole = (
        f"SELECT {_POD_COLUMNS}, pod, interruptible"
        f" FROM ({period.stored('roi_usage_daily')}) AS d WHERE NOT spans_days AND NOT is_idle"
    )
    summary_sql = f"""{live}
        SELECT {_SUMMARY_KEYS}, sum(pod_days) AS pod_days, {_SUMS},
               sum(unmeasured_cost_usd) AS unmeasured_cost_usd
        FROM (SELECT {_SUMMARY_COLUMNS} FROM ({period.stored("roi_summary_daily")}) AS d
              UNION ALL SELECT {_SUMMARY_COLUMNS}
              FROM ({_SUMMARY_OF_ROWS.replace("{rows}", "SELECT * FROM live")}) AS l) AS s
        GROUP BY {_SUMMARY_KEYS}"""
    no_team = " AND team = ''"
    unlabelled_sql = f"""{live}
        SELECT pod_uid, namespace, pod, cost_usd
        FROM (SELECT pod_uid, namespace, pod, cost_usd FROM ({whole}) AS w WHERE team = ''
              UNION ALL
              SELECT pod_uid, namespace, max(pod), sum(cost_usd)
              FROM ({period.pieces(no_team)}) AS x GROUP BY pod_uid, namespace) AS u
        ORDER BY cost_usd DESC, pod_uid LIMIT %(top)s"""
    capacity = read_frame(conn, sql.SQL(_capacity_sql(period)), params)
    if team is not None or namespace is not None:
        capacity = capacity.iloc[0:0]
    # Summed over several stretches, a key that missed some covered minute had zero GPUs then.
    capacity.loc[capacity["minutes"] < covered, "min_gpus"] = 0.0
    facts = RoiFacts(
        summary=read_frame(conn, sql.SQL(summary_sql), params),
        pods=read_frame(conn, sql.SQL(pods_sql), params),
        unlabelled=read_frame(conn, sql.SQL(unlabelled_sql), params),
        capacity=capacity,
        covered_minutes=covered,
        committed_prices=committed_prices(conn, cluster, start, end),
    )
    return facts, derived_days


def committed_prices(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> dict[str, float]:
    """GPU model → the price books' 1-year committed price per GPU-hour in effect at ``end``,
    averaged over the (provider, region, instance type) the model ran on demand in the last
    hour of data before ``end`` (what a reservation would have to cover). A book series with
    no instance type (GCP's per-GPU SKUs) matches every instance type of its region."""
    rows = conn.execute(
        """
        WITH latest AS (
            SELECT max(minute) AS minute FROM gpu_cost
            WHERE cluster = %(cluster)s AND minute >= %(start)s AND minute < %(end)s
        ), fleet AS (
            SELECT DISTINCT c.provider, c.region, c.instance_type, c.gpu_model
            FROM gpu_cost AS c, latest
            WHERE c.cluster = %(cluster)s AND c.minute > latest.minute - interval '1 hour'
              AND c.minute <= latest.minute AND c.capacity_type = %(on_demand)s
        )
        SELECT f.gpu_model, avg(p.price_per_gpu_hour)
        FROM fleet AS f
        JOIN price_book_series AS s
          ON s.provider = f.provider AND s.region = f.region AND s.gpu_model = f.gpu_model
         AND s.instance_type IN (f.instance_type, '') AND s.capacity_type = %(committed)s
        CROSS JOIN LATERAL (
            SELECT price_per_gpu_hour FROM price_book_points
            WHERE series_id = s.series_id AND effective_at <= %(end)s
            ORDER BY effective_at DESC LIMIT 1
        ) AS p
        GROUP BY f.gpu_model
        """,
        {
            "cluster": cluster,
            "start": start,
            "end": end,
            "on_demand": CAPACITY_ON_DEMAND,
            "committed": CAPACITY_COMMITTED[1],
        },
    ).fetchall()
    return {model: float(price) for model, price in rows}


def _capacity_sql(period: _Period) -> str:
    parts = [
        "SELECT gpu_model, capacity_type, peak_gpus, min_gpus, peak_nodes, gpu_hours, minutes"
        " FROM roi_capacity_daily WHERE cluster = %(cluster)s AND day = ANY(%(days)s)"
    ]
    for i in range(len(period.stretches)):
        parts.append(
            _CAPACITY_FROM_MINUTES.replace("%(start)s", f"%(start{i})s").replace(
                "%(end)s", f"%(end{i})s"
            )
        )
    union = " UNION ALL ".join(f"SELECT * FROM ({p}) AS c{i}" for i, p in enumerate(parts))
    return f"""
        SELECT gpu_model, capacity_type, max(peak_gpus) AS peak_gpus, min(min_gpus) AS min_gpus,
               max(peak_nodes) AS peak_nodes, sum(gpu_hours) AS gpu_hours,
               sum(minutes) AS minutes
        FROM ({union}) AS c GROUP BY 1, 2"""
