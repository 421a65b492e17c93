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


_WINDOW_KEYS = f"""
    (SELECT DISTINCT {_KEY_LIST} FROM gpu_node_usage
     WHERE cluster = %s AND minute >= %s AND minute < %s) AS k"""
# An override matches a key when provider, GPU model and capacity type agree; an empty region,
# zone or instance type matches any.
_OVERRIDE_MATCHES = """
    o.provider = k.provider AND o.gpu_model = k.gpu_model AND o.capacity_type = k.capacity_type
    AND o.region IN ('', k.region) AND o.zone IN ('', k.zone)
    AND o.instance_type IN ('', k.instance_type)"""


def price_reuse_candidates(
    conn: psycopg.Connection,
    cluster: str,
    start: datetime,
    end: datetime,
    at: datetime,
    ttl: timedelta,
) -> pd.DataFrame:
    """What resolve_prices may reuse at ``at`` for the price keys of the window's nodes: the
    override in effect (the most specific wins, then the latest), and API prices fetched in
    the ``ttl`` before ``at``. Points at ``at`` itself are excluded, so rewriting a window
    resolves exactly as the first time did."""
    columns = ", ".join(PRICE_COLUMNS)
    key_columns = ", ".join(f"k.{column}" for column in PRICE_KEY)
    return read_frame(
        conn,
        f"""
        SELECT {key_columns}, o.price_per_gpu_hour,
               coalesce(o.on_demand_price_per_gpu_hour, 'NaN') AS on_demand_price_per_gpu_hour,
               'override' AS source, o.effective_from AS effective_at
        FROM {_WINDOW_KEYS}
        CROSS JOIN LATERAL
            (SELECT * FROM price_overrides AS o
             WHERE {_OVERRIDE_MATCHES} AND o.effective_from <= %s
             ORDER BY (o.zone <> '') DESC, (o.instance_type <> '') DESC,
                      (o.region <> '') DESC, o.effective_from DESC
             LIMIT 1) AS o
        UNION ALL
        SELECT {columns} FROM price_points
        WHERE cluster = %s AND source = 'api' AND effective_at >= %s AND effective_at < %s
        """,
        (cluster, start, end, at, cluster, at - ttl, at),
    )


def override_starts(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> list[datetime]:
    """Times inside the window at which an override for one of its price keys takes effect:
    the window needs a price point there too, so costs change at that minute."""
    rows = conn.execute(
        f"""
        SELECT DISTINCT o.effective_from FROM {_WINDOW_KEYS}
        JOIN price_overrides AS o ON {_OVERRIDE_MATCHES}
        WHERE o.effective_from > %s AND o.effective_from < %s
        ORDER BY 1
        """,
        (cluster, start, end, start, end),
    ).fetchall()
    return [moment for (moment,) in rows]


def pod_minutes(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    return read_frame(
        conn,
        "SELECT minute, pod_uid, node, gpu_share, seconds, gpu_utilization FROM gpu_pod_usage"
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
