"""The price books and overrides in PostgreSQL: writes of a fetch (one transaction), the reads
gpu_prices makes for a window, and the reads and edits of the ``prices`` CLI."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import psycopg

from gpu_cost_pipeline.core.price_book import BOOK_COLUMNS, BookFetch
from gpu_cost_pipeline.core.pricing import (
    BOOK_MATCH_COLUMNS,
    OVERRIDE_MATCH_COLUMNS,
    PRICE_KEY,
    key_tuples,
    match_overrides,
    match_series,
)
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


def window_book(
    conn: psycopg.Connection, keys: pd.DataFrame, start: datetime, end: datetime
) -> pd.DataFrame:
    """Book points for ``keys`` and their on-demand variants: per key its most specific series
    with a point before ``end`` (matched in memory: the series table is small, and one index
    probe per series beats a join evaluating every wildcard), and of that series the latest
    point at or before ``start``, the points inside the window and the first one after it
    (BOOK_MATCH_COLUMNS)."""
    wanted = key_tuples(keys)
    if not wanted:
        return pd.DataFrame(columns=BOOK_MATCH_COLUMNS)
    rows = conn.execute(
        f"SELECT {_KEYS}, series_id FROM price_book_series"
        " WHERE provider = ANY(%s) AND region = ANY(%s) AND first_effective_at < %s",
        (sorted({k[0] for k in wanted}), sorted({k[1] for k in wanted}), end),
    ).fetchall()
    matched: dict[int, list[tuple]] = {}
    for key, series_id, level in match_series(wanted, {row[:-1]: row[-1] for row in rows}):
        matched.setdefault(series_id, []).append((*key, level))
    if not matched:
        return pd.DataFrame(columns=BOOK_MATCH_COLUMNS)
    point = (
        "SELECT extract(epoch FROM effective_at)::float8 AS effective_s,"
        " extract(epoch FROM confirmed_at)::float8 AS confirmed_s, price_per_gpu_hour"
        " FROM price_book_points"
    )
    points = conn.execute(
        f"""
        SELECT s.series_id, p.* FROM unnest(%s::bigint[]) AS s(series_id) CROSS JOIN LATERAL (
            ({point} WHERE series_id = s.series_id AND effective_at <= %s
             ORDER BY effective_at DESC LIMIT 1)
            UNION ALL
            ({point} WHERE series_id = s.series_id AND effective_at > %s AND effective_at < %s)
            UNION ALL
            ({point} WHERE series_id = s.series_id AND effective_at >= %s
             ORDER BY effective_at LIMIT 1)
        ) AS p
        """,
        (sorted(matched), start, start, end, end),
    ).fetchall()
    # Built column by column from epoch seconds: far cheaper than inferring datetime objects.
    rows = [(*key, *point[1:]) for point in points for key in matched[point[0]]]
    columns = list(zip(*rows, strict=True)) if rows else [()] * 10
    frame = {name: list(values) for name, values in zip(PRICE_KEY, columns, strict=False)}
    return pd.DataFrame(
        {
            **frame,
            "level": np.asarray(columns[6], dtype=np.int64),
            "effective_at": pd.to_datetime(np.asarray(columns[7], dtype=float), unit="s", utc=True),
            "confirmed_at": pd.to_datetime(np.asarray(columns[8], dtype=float), unit="s", utc=True),
            "price_per_gpu_hour": np.asarray(columns[9], dtype=float),
        },
        columns=BOOK_MATCH_COLUMNS,
    )


def window_overrides(conn: psycopg.Connection, keys: pd.DataFrame, end: datetime) -> pd.DataFrame:
    """Overrides that start before ``end`` matching ``keys`` or their on-demand variants, one
    row per (key, override) keyed by the key (OVERRIDE_MATCH_COLUMNS); matched in memory like
    the book's series (the overrides table is small too)."""
    wanted = key_tuples(keys)
    rows = conn.execute(
        "SELECT provider, region, zone, instance_type, gpu_model, capacity_type, effective_from,"
        " price_per_gpu_hour, coalesce(on_demand_price_per_gpu_hour, 'NaN')"
        " FROM price_overrides WHERE provider = ANY(%s) AND effective_from < %s",
        (sorted({k[0] for k in wanted}), end),
    ).fetchall()
    return pd.DataFrame(match_overrides(wanted, rows), columns=OVERRIDE_MATCH_COLUMNS)


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
