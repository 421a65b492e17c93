"""The reads the assets make, one function each, over a connection (so a window's reads and
writes can share one transaction)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import psycopg

from gpu_cost_pipeline.core.pricing import PRICE_COLUMNS, PRICE_KEY
from gpu_cost_pipeline.store.cost_store import read_frame

_KEY_LIST = ", ".join(PRICE_KEY)


def price_keys(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """The distinct price keys of the nodes seen in the window."""
    return read_frame(
        conn,
        f"SELECT DISTINCT {_KEY_LIST} FROM gpu_node_usage"
        " WHERE cluster = %s AND minute >= %s AND minute < %s",
        (cluster, start, end),
    )


def price_points(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime, lookback: timedelta
) -> pd.DataFrame:
    """Price points in effect during the window: every point inside it, plus the latest point
    per key up to ``lookback`` before it (the one still in effect at the window start)."""
    columns = ", ".join(PRICE_COLUMNS)
    return read_frame(
        conn,
        f"""
        (SELECT {columns} FROM price_points
         WHERE cluster = %s AND effective_at >= %s AND effective_at < %s)
        UNION ALL
        (SELECT DISTINCT ON ({_KEY_LIST}) {columns} FROM price_points
         WHERE cluster = %s AND effective_at < %s AND effective_at >= %s
         ORDER BY {_KEY_LIST}, effective_at DESC)
        """,
        (cluster, start, end, cluster, start, start - lookback),
    )


def pod_minutes(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    return read_frame(
        conn,
        "SELECT minute, pod_uid, node, gpu_share, seconds FROM gpu_pod_usage"
        " WHERE cluster = %s AND minute >= %s AND minute < %s",
        (cluster, start, end),
    )


def pods_seen(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """Attribution of the pods that ran at some point in the window."""
    return read_frame(
        conn,
        "SELECT pod_uid, namespace, team, project, experiment_id, cost_center, sharing_mode"
        " FROM gpu_pods"
        " WHERE cluster = %s AND first_seen < %s AND last_seen >= %s",
        (cluster, end, start),
    )


def node_minutes(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    return read_frame(
        conn,
        "SELECT * FROM gpu_node_usage WHERE cluster = %s AND minute >= %s AND minute < %s",
        (cluster, start, end),
    )
