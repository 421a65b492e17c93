"""write: the store's write path against a raw COPY of the same rows into the same table.

The one-day cost frame of `derive` is written with ``CostStore.write_window(...).replace``
(window delete + pyarrow CSV encoding + COPY + commit), then rewritten (the delete now removes
every row), then, after a TRUNCATE, the same rows, CSV-encoded beforehand, are sent with a plain
psycopg ``COPY ... FROM STDIN`` (+ commit): the floor the write path is measured against.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import psycopg
from psycopg import sql

from bench._common import (
    BENCH_CLUSTER,
    SIMULATED_DAY,
    Stopwatch,
    Target,
    clean_environment,
    embedded_postgres_dir,
    peak_rss_mb,
    progress,
    report,
)
from bench.derive import PODS, one_day_costs
from gpu_cost_pipeline.store.cost_store import CostStore, copy_csv, table_columns
from gpu_cost_pipeline.store.embedded import embedded_database_url

TABLE = "gpu_cost"
RATIO_TARGET = Target(">=", 0.5)


def checkpoint(url: str) -> None:
    """Flush dirty pages first, so one timed step does not pay for the previous one's."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def row_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TABLE)))
        return int(row.fetchone()[0])  # type: ignore[index]


def time_write_window(
    store: CostStore, frame: pd.DataFrame, start: datetime, end: datetime
) -> float:
    checkpoint(store.resolved_url())
    with Stopwatch() as watch, store.write_window(BENCH_CLUSTER, start, end) as writer:
        writer.replace(TABLE, frame)
    return watch.seconds


def encode_csv(frame: pd.DataFrame, columns: list[str]) -> tuple[memoryview, float]:
    """The frame as CSV in the table's column order (what copy_frame sends), and the seconds
    pyarrow took (for reference: the write path pays this inside its timing)."""
    with Stopwatch() as watch:
        payload = copy_csv(frame[columns])
    return payload, watch.seconds


def time_raw_copy(url: str, columns: list[str], payload: memoryview) -> float:
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.Identifier(TABLE), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(TABLE)))
    checkpoint(url)
    with (
        Stopwatch() as watch,
        psycopg.connect(url) as conn,  # commits on exit, like write_window
        conn.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        copy.write(payload)
    return watch.seconds


def expect_rows(url: str, expected: int, after: str) -> None:
    found = row_count(url)
    if found != expected:
        raise RuntimeError(f"{TABLE} holds {found} rows after {after}, expected {expected}")


def main() -> None:
    clean_environment()
    frame = one_day_costs().frame
    rows = len(frame)
    start, end = SIMULATED_DAY, SIMULATED_DAY + timedelta(days=1)
    with embedded_postgres_dir() as data_dir:
        progress(f"starting an embedded PostgreSQL in {data_dir}")
        url = embedded_database_url(data_dir)
        store = CostStore(database_url=url)
        store.mode()  # migrations, not timed
        progress(f"write_window of {rows} rows into an empty table")
        write_s = time_write_window(store, frame, start, end)
        expect_rows(url, rows, "the first write")
        progress("write_window again (rewrite: delete + copy)")
        rewrite_s = time_write_window(store, frame, start, end)
        expect_rows(url, rows, "the rewrite")
        with psycopg.connect(url) as conn:
            columns = [c for c in table_columns(conn, TABLE) if c in frame.columns]
        payload, encode_s = encode_csv(frame.assign(cluster=BENCH_CLUSTER), columns)
        progress(f"raw COPY of the same {rows} rows ({len(payload) / 2**20:.0f} MiB of CSV)")
        raw_s = time_raw_copy(url, columns, payload)
        expect_rows(url, rows, "the raw COPY")
    ratio = raw_s / write_s
    report(
        "write_rows",
        rows,
        "rows",
        [f"one day of a {PODS}-pod cluster, {len(payload) / 2**20:.0f} MiB as CSV"],
    )
    report(
        "write_path_rows_per_s",
        rows / write_s,
        "rows/s",
        [f"raw COPY of the same rows: {rows / raw_s:.0f} rows/s", f"ratio {ratio:.2f}"],
        target=RATIO_TARGET,
        checked=ratio,
    )
    report("write_path_s", write_s, "s", [f"raw COPY: {raw_s:.2f} s"])
    report(
        "write_rewrite_rows_per_s",
        rows / rewrite_s,
        "rows/s",
        [f"delete of {rows} rows + COPY", f"ratio to raw COPY {raw_s / rewrite_s:.2f}"],
    )
    report("write_rewrite_s", rewrite_s, "s", [f"first write: {write_s:.2f} s"])
    report(
        "write_csv_encode_s",
        encode_s,
        "s",
        ["pyarrow CSV encoding of the frame alone, part of the write path"],
    )
    report("write_peak_rss_mb", peak_rss_mb(), "MB", ["frame + CSV copy held at once"])


if __name__ == "__main__":
    main()
