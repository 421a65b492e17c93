"""The reads the assets make, one function each, over a connection (so a window's reads and
writes can share one transaction)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import psycopg

from gpu_cost_pipeline.core.pricing import PRICE_COLUMNS, PRICE_KEY
from gpu_cost_pipeline.store.cost_store import read_frame

_KEY_LIST = ", ".join(PRICE_KEY)


def price_keys(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """The distinct price keys of the nodes seen in the window (few rows: fetched directly,
    which costs less than a COPY on the every-minute path)."""
    rows = conn.execute(
        f"SELECT DISTINCT {_KEY_LIST} FROM gpu_node_usage"
        " WHERE cluster = %s AND minute >= %s AND minute < %s",
        (cluster, start, end),
    ).fetchall()
    return pd.DataFrame(rows, columns=PRICE_KEY)


def price_points(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """Price points in effect during the window, for the price keys of its nodes: per key the
    latest point at or before the window start (however old), plus every point inside it."""
    columns = ", ".join(PRICE_COLUMNS)
    key_match = " AND ".join(f"p.{column} = k.{column}" for column in PRICE_KEY)
    return read_frame(
        conn,
        f"""
        SELECT latest.* FROM
            (SELECT DISTINCT {_KEY_LIST} FROM gpu_node_usage
             WHERE cluster = %s AND minute >= %s AND minute < %s) AS k
        CROSS JOIN LATERAL
            (SELECT {columns} FROM price_points AS p
             WHERE p.cluster = %s AND {key_match} AND p.effective_at <= %s
             ORDER BY p.effective_at DESC LIMIT 1) AS latest
        UNION ALL
        SELECT {columns} FROM price_points
        WHERE cluster = %s AND effective_at > %s AND effective_at < %s
        """,
        (cluster, start, end, cluster, start, cluster, start, end),
    )


# Node and pod minutes of a window's chunks as just stored, by chunk start: handed from
# write_usage to write_costs within one run instead of read back (gpu_cost_history).
StoredUsage = dict[datetime, tuple[pd.DataFrame, pd.DataFrame]]
# What costing reads of the stored pod minutes.
POD_MINUTE_COLUMNS = ["minute", "pod_uid", "node", "gpu_share", "seconds", "gpu_utilization"]


def pod_minutes(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    return read_frame(
        conn,
        f"SELECT {', '.join(POD_MINUTE_COLUMNS)} FROM gpu_pod_usage"
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
