"""Cost over an arbitrary time range, for the CLI and other readers.

Whole hours come from the hourly rollup and the partial hours at either edge from the minute
table, so a 30-day report reads ~720 rollup hours instead of 43,200 minutes, and stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from gpu_cost_pipeline.core.costing import ATTRIBUTION_COLUMNS
from gpu_cost_pipeline.store.cost_store import read_frame

DIMENSIONS = [
    *ATTRIBUTION_COLUMNS,
    "gpu_model",
    "capacity_type",
    "is_idle",
    "price_source",
]
MEASURES = ["gpu_hours", "cost_usd", "on_demand_cost_usd", "exclusive_cost_usd"]


@dataclass(frozen=True)
class CostFilter:
    cluster: str
    namespace: str | None = None
    team: str | None = None


def _hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment: datetime) -> datetime:
    floor = _hour_floor(moment)
    return floor if floor == moment else floor + timedelta(hours=1)


def _filters(cost_filter: CostFilter) -> tuple[sql.Composable, list]:
    clauses: list[sql.Composable] = []
    params: list = []
    for column in ("cluster", "namespace", "team"):
        value = getattr(cost_filter, column)
        if value is not None:
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if not clauses:
        return sql.SQL(""), params
    return sql.SQL(" AND ") + sql.SQL(" AND ").join(clauses), params


def cost_breakdown(
    conn: psycopg.Connection, start: datetime, end: datetime, cost_filter: CostFilter
) -> pd.DataFrame:
    """Cost in [start, end) grouped by every DIMENSION (a small frame to slice any way)."""
    full_start, full_end = _hour_ceil(start), _hour_floor(end)
    where, filter_params = _filters(cost_filter)
    dims = sql.SQL(", ").join(map(sql.Identifier, DIMENSIONS))
    parts: list[sql.Composable] = []
    params: list = []
    minute_select = sql.SQL(
        "SELECT {dims}, gpu_share * seconds / 3600.0 AS gpu_hours, cost_usd, on_demand_cost_usd,"
        " exclusive_cost_usd FROM gpu_cost WHERE minute >= %s AND minute < %s{where}"
    )
    if full_start < full_end:
        parts.append(
            sql.SQL(
                "SELECT {dims}, gpu_hours, cost_usd, on_demand_cost_usd, exclusive_cost_usd"
                " FROM gpu_cost_hourly WHERE hour >= %s AND hour < %s{where}"
            ).format(dims=dims, where=where)
        )
        params += [full_start, full_end, *filter_params]
        edges = [(start, full_start), (full_end, end)]
    else:
        edges = [(start, end)]
    for edge_start, edge_end in edges:
        if edge_start < edge_end:
            parts.append(minute_select.format(dims=dims, where=where))
            params += [edge_start, edge_end, *filter_params]
    query = sql.SQL(
        "SELECT {dims}, sum(gpu_hours) AS gpu_hours, sum(cost_usd) AS cost_usd,"
        " sum(on_demand_cost_usd) AS on_demand_cost_usd,"
        " sum(exclusive_cost_usd) AS exclusive_cost_usd"
        " FROM ({union}) AS rows GROUP BY {dims}"
    ).format(dims=dims, union=sql.SQL(" UNION ALL ").join(parts))
    return read_frame(conn, query, params)


def data_coverage(
    conn: psycopg.Connection, cluster: str
) -> tuple[datetime | None, datetime | None]:
    """First and last minute with cost rows (for 'no data yet' and report headers)."""
    row = conn.execute(
        "SELECT min(minute), max(minute) FROM gpu_cost WHERE cluster = %s", (cluster,)
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def hours_with_data(conn: psycopg.Connection, cluster: str, start: datetime, end: datetime) -> int:
    """Hours of [start, end) (whole or partial) that have any cost rows, read from the rollup."""
    row = conn.execute(
        "SELECT count(DISTINCT hour) FROM gpu_cost_hourly"
        " WHERE cluster = %s AND hour >= %s AND hour < %s",
        (cluster, _hour_floor(start), end),
    ).fetchone()
    return int(row[0]) if row else 0


def hours_in(start: datetime, end: datetime) -> int:
    return int((_hour_ceil(end) - _hour_floor(start)).total_seconds() // 3600)


USAGE_MEASURES = [
    "gpu_hours",
    "cost_usd",
    "measured_gpu_hours",
    "used_gpu_hours",
    "unused_cost_usd",
]


def utilization_breakdown(
    conn: psycopg.Connection, start: datetime, end: datetime, cost_filter: CostFilter
) -> pd.DataFrame:
    """Allocated, measured, used and unused per pod (and per node's idle GPUs, pod_uid
    ``idle:<node>``) in [start, end): whole hours from the per-pod hourly rollup, the partial
    hours at the edges from the minute table, as cost_breakdown does. ``pod`` is the pod's name
    ('' for idle GPUs)."""
    full_start, full_end = _hour_ceil(start), _hour_floor(end)
    where, filter_params = _filters(cost_filter)
    keys = "c.pod_uid, c.namespace, c.team, c.node, c.gpu_model, c.is_idle"
    minute_select = sql.SQL(
        "SELECT pod_uid, namespace, team, node, gpu_model, is_idle,"
        " gpu_share * seconds / 3600.0 AS gpu_hours, cost_usd,"
        " CASE WHEN gpu_utilization IS NOT NULL THEN gpu_share * seconds / 3600.0 ELSE 0 END"
        " AS measured_gpu_hours,"
        " coalesce(gpu_utilization, 0) * gpu_share * seconds / 3600.0 AS used_gpu_hours,"
        " CASE WHEN is_idle THEN cost_usd ELSE coalesce(cost_usd * (1 - gpu_utilization), 0)"
        " END AS unused_cost_usd"
        " FROM gpu_cost WHERE minute >= %s AND minute < %s{where}"
    )
    parts: list[sql.Composable] = []
    params: list = []
    edges = [(start, end)]
    if full_start < full_end:
        parts.append(
            sql.SQL(
                "SELECT pod_uid, namespace, team, node, gpu_model, is_idle, gpu_hours, cost_usd,"
                " measured_gpu_hours, used_gpu_hours, unused_cost_usd"
                " FROM gpu_pod_cost_hourly WHERE hour >= %s AND hour < %s{where}"
            ).format(where=where)
        )
        params += [full_start, full_end, *filter_params]
        edges = [(start, full_start), (full_end, end)]
    for edge_start, edge_end in edges:
        if edge_start < edge_end:
            parts.append(minute_select.format(where=where))
            params += [edge_start, edge_end, *filter_params]
    sums = sql.SQL(", ").join(
        sql.SQL("sum({0}) AS {0}").format(sql.Identifier(m)) for m in USAGE_MEASURES
    )
    query = sql.SQL(
        "SELECT {keys}, coalesce(p.pod, '') AS pod, {sums} FROM ({union}) AS c"
        " LEFT JOIN gpu_pods AS p ON p.cluster = %s AND p.pod_uid = c.pod_uid"
        " GROUP BY {keys}, p.pod"
    ).format(keys=sql.SQL(keys), sums=sums, union=sql.SQL(" UNION ALL ").join(parts))
    return read_frame(conn, query, [*params, cost_filter.cluster])
