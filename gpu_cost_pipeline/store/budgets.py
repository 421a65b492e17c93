"""Reads and writes of attribution, budgets, alerts and enforcement, over a connection.

Scoped costs are read grouped: one row per combination of attribution columns, GPU model,
capacity type, idle flag and label-match signature (one 0/1 per label selector, computed by the
server with jsonb ``@>``), with one sum per requested period. The coarsest table that has what
the scopes need is read: ``gpu_cost_hourly`` when no scope selects pods by label, else the
per-pod ``gpu_pod_cost_hourly``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql

from gpu_cost_pipeline.core.attribution import LABEL_MATCH, SCOPE_COLUMNS, Grouping
from gpu_cost_pipeline.core.budgets import AlertKey, BudgetState, DeliveryRecord
from gpu_cost_pipeline.store.cost_store import CostStore, copy_frame, read_frame


@contextmanager
def session(store: CostStore) -> Iterator[psycopg.Connection]:
    """A connection in autocommit mode: each statement commits on its own and each
    ``conn.transaction()`` block is a real transaction (not a savepoint of an implicit one)."""
    with store.connection() as conn:
        conn.autocommit = True
        # The grouped month is aggregated in memory; PostgreSQL's default 4 MB spills to disk.
        conn.execute("SET work_mem = '128MB'")
        yield conn


GROUP_COLUMNS = [*SCOPE_COLUMNS, "gpu_model", "capacity_type", "is_idle"]
BUDGET_SUBJECT, POD_SUBJECT = "budget", "pod"


def refresh_pod_hourly(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> int:
    """Rewrite the per-pod hourly rollup for every hour [start, end) touches, from gpu_cost (in
    the cost window's transaction, so both always agree). Returns rows written."""
    hour_start = start.replace(minute=0, second=0, microsecond=0)
    hour_end = end.replace(minute=0, second=0, microsecond=0)
    if hour_end < end:
        hour_end += timedelta(hours=1)
    params = (cluster, hour_start, hour_end)
    conn.execute(
        "DELETE FROM gpu_pod_cost_hourly WHERE cluster = %s AND hour >= %s AND hour < %s", params
    )
    cursor = conn.execute(
        """
        INSERT INTO gpu_pod_cost_hourly (hour, cluster, pod_uid, namespace, team, project,
            experiment_id, cost_center, gpu_model, capacity_type, is_idle, gpu_hours, cost_usd,
            on_demand_cost_usd, exclusive_cost_usd, pod_minutes, node, measured_gpu_hours,
            used_gpu_hours, unused_cost_usd)
        SELECT date_trunc('hour', minute) AS hour, cluster, pod_uid, namespace, team, project,
               experiment_id, cost_center, gpu_model, capacity_type, is_idle,
               sum(gpu_share * seconds) / 3600.0, sum(cost_usd), sum(on_demand_cost_usd),
               sum(exclusive_cost_usd), count(*), min(node),
               sum(CASE WHEN gpu_utilization IS NOT NULL THEN gpu_share * seconds ELSE 0 END)
                   / 3600.0,
               sum(coalesce(gpu_utilization, 0) * gpu_share * seconds) / 3600.0,
               sum(CASE WHEN is_idle THEN cost_usd
                        ELSE coalesce(cost_usd * (1 - gpu_utilization), 0) END)
        FROM gpu_cost
        WHERE cluster = %s AND minute >= %s AND minute < %s
        GROUP BY 1, cluster, pod_uid, namespace, team, project, experiment_id, cost_center,
                 gpu_model, capacity_type, is_idle
        """,
        params,
    )
    conn.execute(
        "INSERT INTO pod_hourly_changes (cluster, hour)"
        " SELECT %s, generate_series(%s::timestamptz, %s::timestamptz - interval '1 hour',"
        " interval '1 hour') ON CONFLICT (cluster, hour) DO UPDATE SET changed_at = clock_timestamp()",
        params,
    )
    return cursor.rowcount


def last_cost_minute(conn: psycopg.Connection, cluster: str) -> datetime | None:
    row = conn.execute("SELECT max(minute) FROM gpu_cost WHERE cluster = %s", (cluster,)).fetchone()
    return row[0] if row else None


def first_cost_minute(conn: psycopg.Connection, cluster: str, since: datetime) -> datetime | None:
    """The first minute with cost rows at or after ``since`` (where a burn window really starts
    when the pipeline has not run that long)."""
    row = conn.execute(
        "SELECT min(minute) FROM gpu_cost WHERE cluster = %s AND minute >= %s", (cluster, since)
    ).fetchone()
    return row[0] if row else None


def _grouped_select(
    grouping: Grouping, alias: str, cluster: str, since: datetime
) -> tuple[sql.Composable, sql.Composable, sql.Composable, list, list]:
    """(CTE prefix, select list of the group columns and the signature, joins, params of the
    prefix, params of the joins). Mapped columns go through a hash join with the values the
    scopes name (far cheaper than comparing every row with a list)."""
    columns, joins, join_params = [], [], []
    for index, column in enumerate(GROUP_COLUMNS):
        name = sql.Identifier(column)
        if column in grouping.keep or column == "is_idle":
            columns.append(sql.SQL("{}.{} AS {}").format(sql.Identifier(alias), name, name))
        elif column in grouping.values:
            wanted = sql.Identifier(f"v{index}")
            columns.append(sql.SQL("coalesce({}.v, '') AS {}").format(wanted, name))
            joins.append(
                sql.SQL(" LEFT JOIN unnest(%s::text[]) AS {w}(v) ON {w}.v = {a}.{c}").format(
                    w=wanted, a=sql.Identifier(alias), c=name
                )
            )
            join_params.append(list(grouping.values[column]))
        else:
            columns.append(sql.SQL("''::text AS {}").format(name))
    if not grouping.selectors:
        columns.append(sql.SQL("''::text AS {}").format(sql.Identifier(LABEL_MATCH)))
        return sql.SQL(""), sql.SQL(", ").join(columns), sql.SQL("").join(joins), [], join_params
    # Pods matching a selector, found through the GIN index on labels, one probe per selector.
    prefix = sql.SQL(
        "WITH selector AS (SELECT s, ord FROM unnest(%s::jsonb[]) WITH ORDINALITY AS t(s, ord)),"
        " matched AS (SELECT p.pod_uid, string_agg(selector.ord::text, ',' ORDER BY selector.ord)"
        " AS signature FROM selector JOIN gpu_pods AS p ON p.labels @> selector.s"
        " WHERE p.cluster = %s AND p.last_seen >= %s GROUP BY p.pod_uid) "
    )
    columns.append(sql.SQL("coalesce(m.signature, '') AS {}").format(sql.Identifier(LABEL_MATCH)))
    joins.append(
        sql.SQL(" LEFT JOIN matched AS m ON m.pod_uid = {}.pod_uid").format(sql.Identifier(alias))
    )
    return (
        prefix,
        sql.SQL(", ").join(columns),
        sql.SQL("").join(joins),
        [grouping.selectors, cluster, since],
        join_params,
    )


# By position: a GROUP BY name would mean the input column, not the mapped output column.
_GROUP_BY = sql.SQL(", ".join(str(i) for i in range(1, len(GROUP_COLUMNS) + 2)))


@dataclass(frozen=True)
class Measure:
    """One sum of the grouped frame: ``column`` of the rows at or after ``since``."""

    since: datetime
    column: str = "cost_usd"


def grouped_costs(
    conn: psycopg.Connection,
    cluster: str,
    start: datetime,
    end: datetime,
    grouping: Grouping,
    measures: Mapping[str, Measure],
) -> pd.DataFrame:
    """Rollup rows of [start, end) (hour resolution) grouped as ``grouping`` says, one column
    per measure. Label scopes need pods: then the per-pod rollup is read, else the hourly one."""
    prefix, columns, joins, prefix_params, join_params = _grouped_select(
        grouping, "h", cluster, start
    )
    table = "gpu_pod_cost_hourly" if grouping.selectors else "gpu_cost_hourly"
    sums, sum_params = [], []
    for name, measure in measures.items():
        sums.append(
            sql.SQL("coalesce(sum(h.{}) FILTER (WHERE h.hour >= %s), 0) AS {}").format(
                sql.Identifier(measure.column), sql.Identifier(name)
            )
        )
        sum_params.append(measure.since)
    query = sql.SQL(
        "{prefix}SELECT {columns}, {sums} FROM {table} AS h{joins}"
        " WHERE h.cluster = %s AND h.hour >= %s AND h.hour < %s GROUP BY {group_by}"
    ).format(
        prefix=prefix,
        columns=columns,
        sums=sql.SQL(", ").join(sums),
        table=sql.Identifier(table),
        joins=joins,
        group_by=_GROUP_BY,
    )
    params = [*prefix_params, *sum_params, *join_params, cluster, start, end]
    return read_frame(conn, query, params)


def minute_costs(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime, grouping: Grouping
) -> pd.DataFrame:
    """Minute rows of [start, end) grouped like ``grouped_costs``: cost, pods and average GPU
    share held (for a one-minute window: the GPUs held in that minute)."""
    prefix, columns, joins, prefix_params, join_params = _grouped_select(
        grouping, "c", cluster, start
    )
    minutes = max(1, int((end - start).total_seconds() // 60))
    query = sql.SQL(
        "{prefix}SELECT {columns}, sum(c.cost_usd) AS cost_usd, count(DISTINCT c.pod_uid) AS pods,"
        " sum(c.gpu_share * c.seconds) / 60.0 / %s AS gpu_share FROM gpu_cost AS c{joins}"
        " WHERE c.cluster = %s AND c.minute >= %s AND c.minute < %s GROUP BY {group_by}"
    ).format(prefix=prefix, columns=columns, joins=joins, group_by=_GROUP_BY)
    params = [*prefix_params, minutes, *join_params, cluster, start, end]
    return read_frame(conn, query, params)


# --- the month's closed hours, cached ----------------------------------------------------------

CACHE_SETTLE = timedelta(minutes=10)  # an hour counts as closed this long after it ends
CACHE_MAX_AGE = timedelta(hours=6)  # recomputed anyway (pod labels can change)
CACHE_RACE_MARGIN = timedelta(minutes=2)  # rewrites committing while the cache is computed


def _fingerprint(grouping: Grouping, start: datetime) -> str:
    document = [
        grouping.keep,
        sorted(grouping.values.items()),
        grouping.selectors,
        start.isoformat(),
    ]
    return hashlib.sha256(json.dumps(document, default=list).encode()).hexdigest()


def _frame_bytes(frame: pd.DataFrame) -> bytes:
    sink = pa.BufferOutputStream()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _regroup(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [*GROUP_COLUMNS, LABEL_MATCH]
    return frame.groupby(keys, as_index=False, dropna=False, sort=False).sum(numeric_only=True)


def month_costs(
    conn: psycopg.Connection,
    cluster: str,
    start: datetime,
    end: datetime,
    grouping: Grouping,
    recent_start: datetime,
    now: datetime,
) -> pd.DataFrame:
    """``grouped_costs`` of [start, end) with ``cost_usd`` and ``recent_cost_usd`` (since
    ``recent_start``), the closed hours served from grouped_cost_cache: a refresh reads the
    hours since the cache (extending it by the hours that closed meanwhile), not the month."""
    closed = min(max((now - CACHE_SETTLE).replace(minute=0, second=0, microsecond=0), start), end)
    fingerprint = _fingerprint(grouping, start)
    cached = conn.execute(
        "SELECT through_hour, computed_at, frame FROM grouped_cost_cache"
        " WHERE cluster = %s AND fingerprint = %s",
        (cluster, fingerprint),
    ).fetchone()
    reading_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    base: pd.DataFrame | None = None
    through = start
    if cached is not None:
        cached_through, computed_at, payload = cached
        rewritten = conn.execute(
            "SELECT 1 FROM pod_hourly_changes WHERE cluster = %s AND hour >= %s AND hour < %s"
            " AND changed_at > %s LIMIT 1",
            (cluster, start, cached_through, computed_at - CACHE_RACE_MARGIN),
        ).fetchone()
        if not rewritten and reading_at - computed_at < CACHE_MAX_AGE and cached_through <= closed:
            base = pa.ipc.open_stream(bytes(payload)).read_all().to_pandas()
            through = cached_through
    if through < closed:
        delta = grouped_costs(
            conn, cluster, through, closed, grouping, {"cost_usd": Measure(through)}
        )
        base = delta if base is None else _regroup(pd.concat([base, delta], ignore_index=True))
        # Everything cached is now as read at reading_at: the older hours were just checked.
        conn.execute(
            "INSERT INTO grouped_cost_cache (cluster, fingerprint, through_hour, computed_at, frame)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (cluster, fingerprint) DO UPDATE SET"
            " through_hour = EXCLUDED.through_hour, computed_at = EXCLUDED.computed_at,"
            " frame = EXCLUDED.frame",
            (cluster, fingerprint, closed, reading_at, _frame_bytes(base)),
        )
        through = closed
    fresh = grouped_costs(
        conn,
        cluster,
        min(through, max(recent_start, start)),
        end,
        grouping,
        {"cost_usd": Measure(through), "recent_cost_usd": Measure(recent_start)},
    )
    if base is None or base.empty:
        return fresh
    return pd.concat([base.assign(recent_cost_usd=0.0), fresh], ignore_index=True)


# --- statuses ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRow:
    namespace: str
    name: str
    source: str
    status: dict
    problem: str | None = None
    period: str = ""
    monthly_limit: float | None = None
    current_spend: float | None = None
    exceeded_since: datetime | None = None


def write_statuses(
    conn: psycopg.Connection, table: str, cluster: str, rows: Iterable[StatusRow], now: datetime
) -> int:
    """Replace the cluster's status rows in ``table`` (specs deleted since go with them), in
    one transaction: a delete and one COPY."""
    frame = pd.DataFrame(
        [
            {
                "namespace": row.namespace,
                "name": row.name,
                "source": row.source,
                "status": json.dumps(row.status),
                "problem": row.problem,
                "computed_at": now,
                "period": row.period,
                "monthly_limit": row.monthly_limit,
                "current_spend": row.current_spend,
                "exceeded_since": row.exceeded_since,
            }
            for row in rows
        ]
    )
    with conn.transaction():
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE cluster = %s").format(sql.Identifier(table)), (cluster,)
        )
        if not frame.empty:
            copy_frame(conn, table, frame.assign(cluster=cluster))
    return len(frame)


def read_statuses(conn: psycopg.Connection, table: str, cluster: str) -> pd.DataFrame:
    return read_frame(
        conn,
        sql.SQL(
            "SELECT namespace, name, source, status::text AS status, problem, computed_at"
            " FROM {} WHERE cluster = %s ORDER BY namespace, name"
        ).format(sql.Identifier(table)),
        (cluster,),
    )


def budget_states(conn: psycopg.Connection, cluster: str) -> dict[tuple[str, str], BudgetState]:
    rows = conn.execute(
        "SELECT namespace, name, period, monthly_limit, current_spend, exceeded_since,"
        " computed_at FROM cost_budget_status"
        " WHERE cluster = %s AND problem IS NULL AND monthly_limit IS NOT NULL",
        (cluster,),
    ).fetchall()
    return {(r[0], r[1]): BudgetState(*r) for r in rows}


# --- the alert ledger --------------------------------------------------------------------------


def ledger_records(
    conn: psycopg.Connection, cluster: str, subject_kind: str = BUDGET_SUBJECT
) -> dict[AlertKey, DeliveryRecord]:
    rows = conn.execute(
        "SELECT namespace, name, alert, period, action, channel_index, outcome, run_id"
        " FROM alert_ledger WHERE cluster = %s AND subject_kind = %s",
        (cluster, subject_kind),
    ).fetchall()
    records: dict[AlertKey, DeliveryRecord] = {}
    failed_runs: dict[AlertKey, set[str]] = {}
    for namespace, name, alert, period, action, channel, outcome, run_id in rows:
        key = AlertKey(namespace, name, alert, period, action)
        record = records.setdefault(key, DeliveryRecord())
        if outcome == "sent":
            record.sent_channels.add(channel)
            record.done_channels.add(channel)
        elif outcome == "rejected":
            record.done_channels.add(channel)
        else:
            failed_runs.setdefault(key, set()).add(run_id)
    for key, runs in failed_runs.items():
        records[key].failed_rounds = len(runs)
    return records


def _key_values(key: AlertKey) -> tuple[str, str, str, str, str]:
    """The ledger's (namespace, name, alert, period, action) of a key."""
    return (key.namespace, key.budget, key.alert, key.period, key.action)


def lock_alert(conn: psycopg.Connection, cluster: str, subject_kind: str, key: AlertKey) -> None:
    """Serialize deliveries of one alert key (in the caller's transaction): two runs for the
    same key can never both find a channel unsent and both send."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))",
        (f"alert:{cluster}:{subject_kind}:{key.run_key}",),
    )


def channels_done(
    conn: psycopg.Connection,
    cluster: str,
    subject_kind: str,
    key: AlertKey,
    outcomes: tuple[str, ...] = ("sent", "rejected"),
) -> set[int]:
    """Channels of ``key`` with an attempt of one of ``outcomes`` (default: nothing left to do)."""
    rows = conn.execute(
        "SELECT channel_index FROM alert_ledger WHERE cluster = %s AND subject_kind = %s"
        " AND namespace = %s AND name = %s AND alert = %s AND period = %s AND action = %s"
        " AND outcome = ANY(%s)",
        (cluster, subject_kind, *_key_values(key), list(outcomes)),
    ).fetchall()
    return {channel for (channel,) in rows}


def record_attempt(
    conn: psycopg.Connection,
    cluster: str,
    subject_kind: str,
    key: AlertKey,
    channel_index: int,
    channel_type: str,
    outcome: str,
    attempts: int,
    detail: str,
    run_id: str,
) -> None:
    conn.execute(
        "INSERT INTO alert_ledger (cluster, subject_kind, namespace, name, alert, period, action,"
        " channel_index, channel_type, outcome, attempts, detail, run_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            cluster,
            subject_kind,
            *_key_values(key),
            channel_index,
            channel_type,
            outcome,
            attempts,
            detail[:2000],
            run_id,
        ),
    )


def alerts_fired(conn: psycopg.Connection, cluster: str, period: str) -> pd.DataFrame:
    """Per budget and alert of the period: when it first reached a channel, and per channel
    type the latest outcome (for the status's alertsFired)."""
    return read_frame(
        conn,
        "SELECT namespace, name, alert, action, channel_index, channel_type,"
        " bool_or(outcome = 'sent') AS sent, min(attempted_at) FILTER (WHERE outcome = 'sent')"
        " AS sent_at, (array_agg(outcome ORDER BY attempted_at DESC))[1] AS last_outcome"
        " FROM alert_ledger WHERE cluster = %s AND subject_kind = 'budget' AND period = %s"
        " GROUP BY namespace, name, alert, action, channel_index, channel_type",
        (cluster, period),
    )


# --- enforcement -------------------------------------------------------------------------------


def active_enforcements(conn: psycopg.Connection, cluster: str) -> dict[tuple[str, str], dict]:
    rows = conn.execute(
        "SELECT namespace, name, id, action, period, applied_at, details FROM budget_enforcements"
        " WHERE cluster = %s AND lifted_at IS NULL",
        (cluster,),
    ).fetchall()
    return {
        (r[0], r[1]): {
            "id": r[2],
            "action": r[3],
            "period": r[4],
            "applied_at": r[5],
            "details": r[6],
        }
        for r in rows
    }


def record_enforcement(
    conn: psycopg.Connection,
    cluster: str,
    namespace: str,
    name: str,
    action: str,
    period: str,
    details: dict,
    run_id: str,
) -> None:
    conn.execute(
        "INSERT INTO budget_enforcements (cluster, namespace, name, action, period, details, run_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (cluster, namespace, name, action, period, json.dumps(details), run_id),
    )


def record_lift(
    conn: psycopg.Connection, cluster: str, namespace: str, name: str, reason: str
) -> None:
    conn.execute(
        "UPDATE budget_enforcements SET lifted_at = now(), lift_reason = %s"
        " WHERE cluster = %s AND namespace = %s AND name = %s AND lifted_at IS NULL",
        (reason, cluster, namespace, name),
    )


def enforcement_history(conn: psycopg.Connection, cluster: str) -> pd.DataFrame:
    return read_frame(
        conn,
        "SELECT namespace, name, action, period, applied_at, lifted_at, lift_reason,"
        " details::text AS details FROM budget_enforcements WHERE cluster = %s ORDER BY id",
        (cluster,),
    )


# --- pod cost limits ---------------------------------------------------------------------------


def record_pod_limit_breaches(conn: psycopg.Connection, cluster: str) -> int:
    """Pods whose accumulated cost (all their hours in the rollup) passed their cost-limit
    annotation, added to the breach table once each (recording them is idempotent). Only pods
    seen in the last two days are checked: older ones were checked while they ran."""
    cursor = conn.execute(
        """
        INSERT INTO pod_cost_limit_breaches (cluster, pod_uid, namespace, pod, cost_limit_usd, cost_usd)
        SELECT p.cluster, p.pod_uid, p.namespace, p.pod, p.cost_limit_usd, sum(h.cost_usd)
        FROM gpu_pods AS p
        JOIN gpu_pod_cost_hourly AS h ON h.cluster = p.cluster AND h.pod_uid = p.pod_uid
        WHERE p.cluster = %s AND p.cost_limit_usd IS NOT NULL
          AND p.last_seen >= now() - interval '2 days'
        GROUP BY p.cluster, p.pod_uid, p.namespace, p.pod, p.cost_limit_usd
        HAVING sum(h.cost_usd) > p.cost_limit_usd
        ON CONFLICT (cluster, pod_uid) DO NOTHING
        """,
        (cluster,),
    )
    return cursor.rowcount


def pod_limit_breaches(conn: psycopg.Connection, cluster: str) -> pd.DataFrame:
    return read_frame(
        conn,
        "SELECT b.pod_uid, b.namespace, b.pod, b.cost_limit_usd, b.cost_usd, b.detected_at,"
        " b.event_recorded, coalesce(p.team, '') AS team, coalesce(p.project, '') AS project,"
        " coalesce(p.experiment_id, '') AS experiment_id,"
        " coalesce(p.cost_center, '') AS cost_center, coalesce(p.labels::text, '{}') AS labels"
        " FROM pod_cost_limit_breaches AS b LEFT JOIN gpu_pods AS p"
        " ON p.cluster = b.cluster AND p.pod_uid = b.pod_uid WHERE b.cluster = %s",
        (cluster,),
    )


def mark_pod_event_recorded(conn: psycopg.Connection, cluster: str, pod_uid: str) -> None:
    conn.execute(
        "UPDATE pod_cost_limit_breaches SET event_recorded = true"
        " WHERE cluster = %s AND pod_uid = %s",
        (cluster, pod_uid),
    )


def delete_older_than(conn: psycopg.Connection, cluster: str, days: int) -> int:
    """Retention for the per-pod rollup (as for the hourly rollup)."""
    cursor = conn.execute(
        "DELETE FROM gpu_pod_cost_hourly WHERE cluster = %s"
        " AND hour < now() - make_interval(days => %s)",
        (cluster, days),
    )
    return cursor.rowcount
