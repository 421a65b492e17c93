"""The price books and overrides in PostgreSQL: writes of a fetch (one transaction), the reads
gpu_prices makes for a window, and the reads and edits of the ``prices`` CLI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
import psycopg

from gpu_cost_pipeline.core.price_book import BOOK_COLUMNS, BookFetch
from gpu_cost_pipeline.core.pricing import PRICE_KEY
from gpu_cost_pipeline.store.cost_store import copy_frame, read_frame

_KEYS = ", ".join(PRICE_KEY)
_SERIES_KEY = "provider, region, capacity_type, zone, instance_type, gpu_model"


def write_fetch(
    conn: psycopg.Connection, fetch: BookFetch, started_at: datetime, fetched_at: datetime
) -> int:
    """Store a fetch's points and its log row in one transaction; returns the fetch id.

    A point already stored for the same series and effective time is updated (the API may
    correct a price) and re-confirmed; new series are created. Nothing else is touched, so a
    fetch that failed half-way (and never got here) leaves the book as it was.
    """
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO price_book_fetches (provider, feeds, regions, started_at, finished_at,"
            " status, skus_read, prices_stored, spot_points, rejected)"
            " VALUES (%s, %s, %s, %s, %s, 'ok', %s, %s, %s, %s) RETURNING fetch_id",
            (
                fetch.provider,
                ",".join(fetch.feeds),
                ",".join(fetch.regions),
                started_at,
                fetched_at,
                fetch.skus_read,
                len(fetch.points),
                fetch.spot_points,
                len(fetch.rejections),
            ),
        ).fetchone()
        fetch_id = int(row[0]) if row else 0
        if fetch.points.empty:
            return fetch_id
        conn.execute(
            "CREATE TEMP TABLE price_book_incoming ("
            " provider text, region text, zone text, instance_type text, gpu_model text,"
            " capacity_type text, price_per_gpu_hour double precision,"
            " price_per_instance_hour double precision, gpu_count integer,"
            " effective_at timestamptz, feed text, sku text, term text) ON COMMIT DROP"
        )
        points = fetch.points[BOOK_COLUMNS].astype({"gpu_count": "Int64"})
        copy_frame(conn, "price_book_incoming", points)
        conn.execute(
            f"""
            INSERT INTO price_book_series ({_SERIES_KEY}, first_effective_at, last_confirmed_at)
            SELECT {_SERIES_KEY}, min(effective_at), %s FROM price_book_incoming
            GROUP BY {_SERIES_KEY}
            ON CONFLICT ({_SERIES_KEY}) DO UPDATE SET
                first_effective_at = LEAST(price_book_series.first_effective_at,
                                           EXCLUDED.first_effective_at),
                last_confirmed_at = GREATEST(price_book_series.last_confirmed_at,
                                             EXCLUDED.last_confirmed_at)
            """,
            (fetched_at,),
        )
        conn.execute(
            f"""
            INSERT INTO price_book_points
            SELECT s.series_id, i.effective_at, i.price_per_gpu_hour, i.price_per_instance_hour,
                   i.gpu_count, i.feed, i.sku, i.term, %s, %s
            FROM price_book_incoming AS i JOIN price_book_series AS s USING ({_SERIES_KEY})
            ON CONFLICT (series_id, effective_at) DO UPDATE SET
                price_per_gpu_hour = EXCLUDED.price_per_gpu_hour,
                price_per_instance_hour = EXCLUDED.price_per_instance_hour,
                gpu_count = EXCLUDED.gpu_count, feed = EXCLUDED.feed, sku = EXCLUDED.sku,
                term = EXCLUDED.term, fetch_id = EXCLUDED.fetch_id,
                confirmed_at = GREATEST(price_book_points.confirmed_at, EXCLUDED.confirmed_at)
            """,
            (fetched_at, fetch_id),
        )
    return fetch_id


def record_failed_fetch(
    conn: psycopg.Connection, provider: str, started_at: datetime, message: str
) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO price_book_fetches (provider, started_at, finished_at, status, message)"
            " VALUES (%s, %s, now(), 'failed', %s)",
            (provider, started_at, message[:2000]),
        )


def delete_points_older_than(conn: psycopg.Connection, provider: str, days: int) -> int:
    """Retention: drop points older than ``days`` that a newer point of their series replaced
    (the latest point of a series is kept however old: it is still the price in effect)."""
    with conn.transaction():
        cursor = conn.execute(
            """
            DELETE FROM price_book_points AS p USING price_book_series AS s
            WHERE p.series_id = s.series_id AND s.provider = %s
              AND p.effective_at < now() - make_interval(days => %s)
              AND EXISTS (SELECT 1 FROM price_book_points AS later
                          WHERE later.series_id = p.series_id
                            AND later.effective_at > p.effective_at
                            AND later.effective_at < now() - make_interval(days => %s))
            """,
            (provider, days, days),
        )
        return cursor.rowcount


def spot_fetched_until(conn: psycopg.Connection, provider: str) -> dict[str, datetime]:
    """Per region, when a fetch last brought spot prices: the next fetch reads from there."""
    rows = conn.execute(
        "SELECT region, max(last_confirmed_at) FROM price_book_series"
        " WHERE provider = %s AND capacity_type = 'spot' GROUP BY region",
        (provider,),
    ).fetchall()
    return {region: moment for region, moment in rows}


def instance_types_in_use(
    conn: psycopg.Connection, cluster: str, since: datetime
) -> dict[str, dict[str, set[str]]]:
    """provider -> region -> instance types of the GPU nodes seen since ``since``."""
    rows = conn.execute(
        "SELECT DISTINCT provider, region, instance_type FROM gpu_node_usage"
        " WHERE cluster = %s AND minute >= %s",
        (cluster, since),
    ).fetchall()
    found: dict[str, dict[str, set[str]]] = {}
    for provider, region, instance_type in rows:
        types = found.setdefault(provider, {}).setdefault(region, set())
        if instance_type:
            types.add(instance_type)
    return found


def uncovered_keys(
    conn: psycopg.Connection, cluster: str, provider: str, since: datetime
) -> pd.DataFrame:
    """Price keys of the provider's GPU nodes seen since ``since`` that no book series covers."""
    return read_frame(
        conn,
        f"""
        SELECT DISTINCT {_KEYS} FROM gpu_node_usage AS k
        WHERE cluster = %s AND minute >= %s AND provider = %s
          AND NOT EXISTS (
            SELECT 1 FROM price_book_series AS s
            WHERE s.provider = k.provider AND s.region = k.region
              AND s.capacity_type = k.capacity_type AND s.zone IN ('', k.zone)
              AND s.instance_type IN ('', k.instance_type) AND s.gpu_model IN ('', k.gpu_model))
        ORDER BY {_KEYS}
        """,
        (cluster, since, provider),
    )


# --- gpu_prices: what a window needs ------------------------------------------------------------

_WINDOW_KEYS = f"""
    k AS (SELECT DISTINCT {_KEYS} FROM gpu_node_usage
          WHERE cluster = %s AND minute >= %s AND minute < %s),
    kk AS (SELECT {_KEYS} FROM k
           UNION SELECT provider, region, zone, instance_type, gpu_model, 'on-demand' FROM k)"""


def window_book(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """Book points for the window's price keys and their on-demand variants: per key its most
    specific series with a point before ``end``, and of it the latest point at or before
    ``start``, the points inside the window and the first one after it (BOOK_MATCH_COLUMNS)."""
    key_columns = ", ".join(f"best.{c}" for c in PRICE_KEY)
    point = "SELECT effective_at, confirmed_at, price_per_gpu_hour FROM price_book_points"
    return read_frame(
        conn,
        f"""
        WITH {_WINDOW_KEYS},
        best AS (
            SELECT DISTINCT ON ({", ".join(f"kk.{c}" for c in PRICE_KEY)})
                   kk.*, s.series_id,
                   (CASE WHEN s.zone <> '' THEN 4 ELSE 0 END
                    + CASE WHEN s.instance_type <> '' THEN 2 ELSE 0 END
                    + CASE WHEN s.gpu_model <> '' THEN 1 ELSE 0 END) AS level
            FROM kk JOIN price_book_series AS s
              ON s.provider = kk.provider AND s.region = kk.region
             AND s.capacity_type = kk.capacity_type AND s.zone IN ('', kk.zone)
             AND s.instance_type IN ('', kk.instance_type) AND s.gpu_model IN ('', kk.gpu_model)
            WHERE s.first_effective_at < %s
            ORDER BY {", ".join(f"kk.{c}" for c in PRICE_KEY)}, level DESC)
        SELECT {key_columns}, best.level, p.effective_at, p.confirmed_at, p.price_per_gpu_hour
        FROM best CROSS JOIN LATERAL (
            ({point} WHERE series_id = best.series_id AND effective_at <= %s
             ORDER BY effective_at DESC LIMIT 1)
            UNION ALL
            ({point} WHERE series_id = best.series_id AND effective_at > %s AND effective_at < %s)
            UNION ALL
            ({point} WHERE series_id = best.series_id AND effective_at >= %s
             ORDER BY effective_at LIMIT 1)
        ) AS p
        """,
        (cluster, start, end, end, start, start, end, end),
    )


# An override matches a key when provider, GPU model and capacity type agree; an empty region,
# zone or instance type matches any. More specific wins: zone, then instance type, then region.
_OVERRIDE_MATCHES = """
    o.provider = kk.provider AND o.gpu_model = kk.gpu_model AND o.capacity_type = kk.capacity_type
    AND o.region IN ('', kk.region) AND o.zone IN ('', kk.zone)
    AND o.instance_type IN ('', kk.instance_type)"""


def window_overrides(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """Overrides matching the window's price keys (and on-demand variants) that start before
    ``end`` (OVERRIDE_MATCH_COLUMNS)."""
    return read_frame(
        conn,
        f"""
        WITH {_WINDOW_KEYS}
        SELECT {", ".join(f"kk.{c}" for c in PRICE_KEY)},
               (CASE WHEN o.zone <> '' THEN 4 ELSE 0 END
                + CASE WHEN o.instance_type <> '' THEN 2 ELSE 0 END
                + CASE WHEN o.region <> '' THEN 1 ELSE 0 END) AS level,
               o.effective_from, o.price_per_gpu_hour,
               coalesce(o.on_demand_price_per_gpu_hour, 'NaN') AS on_demand_price_per_gpu_hour
        FROM kk JOIN price_overrides AS o ON {_OVERRIDE_MATCHES}
        WHERE o.effective_from < %s
        """,
        (cluster, start, end, end),
    )


# --- the prices CLI -----------------------------------------------------------------------------


def book_in_effect(
    conn: psycopg.Connection, at: datetime, provider: str | None = None
) -> pd.DataFrame:
    """Per series, the point in effect at ``at`` with where it came from."""
    return read_frame(
        conn,
        f"""
        SELECT s.provider, s.region, s.zone, s.instance_type, s.gpu_model, s.capacity_type,
               p.price_per_gpu_hour, p.price_per_instance_hour, p.gpu_count, p.feed, p.term,
               p.sku, p.effective_at, p.confirmed_at
        FROM price_book_series AS s CROSS JOIN LATERAL (
            SELECT * FROM price_book_points AS p
            WHERE p.series_id = s.series_id AND p.effective_at <= %s
            ORDER BY p.effective_at DESC LIMIT 1) AS p
        WHERE %s::text IS NULL OR s.provider = %s
        ORDER BY {_KEYS}
        """,
        (at, provider, provider),
    )


def latest_fetches(conn: psycopg.Connection) -> pd.DataFrame:
    """Per provider its latest fetch, and its latest good one."""
    return read_frame(
        conn,
        """
        SELECT DISTINCT ON (provider) provider, status, finished_at, message,
               (SELECT max(finished_at) FROM price_book_fetches AS g
                WHERE g.provider = f.provider AND g.status = 'ok') AS last_ok_at
        FROM price_book_fetches AS f ORDER BY provider, finished_at DESC
        """,
    )


OVERRIDE_COLUMNS = [
    "provider",
    "region",
    "zone",
    "instance_type",
    "gpu_model",
    "capacity_type",
    "price_per_gpu_hour",
    "on_demand_price_per_gpu_hour",
    "price_per_instance_hour",
    "effective_from",
    "note",
    "origin",
]


def list_overrides(conn: psycopg.Connection) -> pd.DataFrame:
    return read_frame(
        conn,
        f"SELECT {', '.join(OVERRIDE_COLUMNS)} FROM price_overrides"
        f" ORDER BY {_KEYS}, effective_from",
    )


def upsert_override(conn: psycopg.Connection, override: dict) -> None:
    columns = [c for c in OVERRIDE_COLUMNS if c in override]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in PRICE_KEY)
    conn.execute(
        f"INSERT INTO price_overrides ({', '.join(columns)})"
        f" VALUES ({', '.join(['%s'] * len(columns))})"
        f" ON CONFLICT ({_KEYS}, effective_from) DO UPDATE SET {updates}",
        [override[c] for c in columns],
    )


def remove_overrides(
    conn: psycopg.Connection, key: dict, effective_from: datetime | None
) -> list[datetime]:
    """Delete the overrides of exactly this key (and start time, when given); returns the
    start times deleted."""
    condition = " AND ".join(f"{c} = %s" for c in PRICE_KEY)
    params: list = [key[c] for c in PRICE_KEY]
    if effective_from is not None:
        condition += " AND effective_from = %s"
        params.append(effective_from)
    rows = conn.execute(
        f"DELETE FROM price_overrides WHERE {condition} RETURNING effective_from", params
    ).fetchall()
    return [moment for (moment,) in rows]


def replace_file_overrides(conn: psycopg.Connection, origin: str, overrides: Sequence[dict]) -> int:
    """Make the overrides of one file exactly ``overrides`` (one transaction)."""
    with conn.transaction():
        conn.execute("DELETE FROM price_overrides WHERE origin = %s", (origin,))
        for override in overrides:
            upsert_override(conn, {**override, "origin": origin})
    return len(overrides)


def estimated_cost(
    conn: psycopg.Connection, cluster: str, start: datetime, end: datetime
) -> pd.DataFrame:
    """Cost priced by estimate per hour and price key, with all cost of those hours beside."""
    return read_frame(
        conn,
        """
        SELECT date_trunc('hour', minute) AS hour, provider, region, instance_type, gpu_model,
               capacity_type, count(DISTINCT minute) AS minutes, sum(cost_usd) AS cost_usd
        FROM gpu_cost
        WHERE cluster = %s AND minute >= %s AND minute < %s AND price_source = 'estimate'
        GROUP BY 1, provider, region, instance_type, gpu_model, capacity_type
        ORDER BY provider, region, instance_type, gpu_model, capacity_type, 1
        """,
        (cluster, start, end),
    )


def total_cost(conn: psycopg.Connection, cluster: str, start: datetime, end: datetime) -> float:
    row = conn.execute(
        "SELECT coalesce(sum(cost_usd), 0) FROM gpu_cost"
        " WHERE cluster = %s AND minute >= %s AND minute < %s",
        (cluster, start, end),
    ).fetchone()
    return float(row[0]) if row else 0.0
