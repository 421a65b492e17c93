"""CostStore: the one way the pipeline reaches PostgreSQL/TimescaleDB.

Writes are window-idempotent: inside one transaction, delete the window's rows for the cluster,
then COPY the new rows. A failure anywhere rolls the whole window back, so the previous version
of the window stays intact. Reads stream ``COPY (SELECT ...) TO STDOUT`` into Arrow.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.copy import QueuedLibpqWriter
from pydantic import Field

from gpu_cost_pipeline.settings import Settings, variable_of
from gpu_cost_pipeline.store import timescale
from gpu_cost_pipeline.store.embedded import embedded_database_url
from gpu_cost_pipeline.store.schema import (
    MODE_NOTE_KEY,
    MODE_TIMESCALE,
    migrate,
    recorded_settings,
)

COPY_BATCH_ROWS = 100_000  # rows per CSV batch: bounds the memory of a COPY
_PG_TO_ARROW = {
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "text": pa.string(),
    "jsonb": pa.string(),
    "double precision": pa.float64(),
    "integer": pa.int64(),
    "smallint": pa.int64(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "numeric": pa.float64(),
}
# Per-process caches: embedded URLs, and databases already migrated (with their mode).
_embedded_urls: dict[str, str] = {}
_migrated: dict[str, str] = {}


def redact_url(url: str) -> str:
    """Where a connection string points, without any password (URL, query or key=value)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unparseable connection string)"
    return " ".join(f"{key}={params[key]}" for key in _SAFE_CONNINFO_KEYS if key in params)


_SAFE_CONNINFO_KEYS = ("host", "hostaddr", "port", "dbname", "user", "sslmode")


class StoreError(RuntimeError):
    pass


class CostStore(dg.ConfigurableResource):
    """PostgreSQL (TimescaleDB when available) holding usage, prices, costs and rollups."""

    database_url: str | None = Field(
        default=None,
        description="postgresql:// URL; empty means the embedded server in data_dir.",
    )
    data_dir: str = Field(default=".data", description="Folder of the embedded PostgreSQL.")
    retention_days: int = Field(default=90, description="Days of minute rows kept.")
    rollup_retention_days: int = Field(default=730, description="Days of hourly rollups kept.")

    @classmethod
    def from_settings(cls, settings: Settings, secrets_as_env_vars: bool = False) -> CostStore:
        """The store the settings describe. Inside Dagster the URL (a secret) goes in as an
        ``EnvVar``, so it never enters run config; the CLI passes the plain value."""
        url: Any = settings.database_url
        if url and secrets_as_env_vars:
            url = dg.EnvVar(variable_of("database_url"))
        return cls(
            database_url=url,
            data_dir=settings.data_dir,
            retention_days=settings.retention_days,
            rollup_retention_days=settings.rollup_retention_days,
        )

    def resolved_url(self) -> str:
        if self.database_url:
            return self.database_url
        if self.data_dir not in _embedded_urls:
            _embedded_urls[self.data_dir] = embedded_database_url(self.data_dir)
        return _embedded_urls[self.data_dir]

    def describe(self) -> str:
        """Where the store is, safe to log."""
        if self.database_url:
            return redact_url(self.database_url)
        return f"embedded PostgreSQL in {self.data_dir}"

    def _connect(self) -> psycopg.Connection:
        url = self.resolved_url()
        try:
            conn = psycopg.connect(url, connect_timeout=10)
        except psycopg.OperationalError as error:
            # psycopg's message names host and user, never the password; add where we tried.
            raise StoreError(f"cannot connect to {self.describe()}: {error}".strip()) from None
        # Hours and days (date_trunc) are UTC whatever the server's TimeZone, and COPY sends
        # timestamps as UTC wall time. Set outside any transaction, so it lasts the session.
        conn.autocommit = True
        _use_utc_session(conn)
        conn.autocommit = False
        return conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection to a migrated database (migrations run once per process)."""
        url = self.resolved_url()
        if url not in _migrated:
            mode = migrate(self._connect)
            if mode == MODE_TIMESCALE:
                with self._connect() as conn:
                    timescale.ensure_retention(
                        conn, self.retention_days, self.rollup_retention_days
                    )
            _migrated[url] = mode
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    def mode(self) -> str:
        with self.connection():
            return _migrated[self.resolved_url()]

    def mode_note(self) -> str | None:
        """Why the store runs on plain PostgreSQL although the server has TimescaleDB."""
        with self.connection() as conn:
            return recorded_settings(conn).get(MODE_NOTE_KEY)

    @contextmanager
    def write_window(self, cluster: str, start: datetime, end: datetime) -> Iterator[WindowWriter]:
        """One transaction for one window: commit on success, roll back on any error."""
        with self.connection() as conn:
            with conn.transaction():
                writer = WindowWriter(conn, cluster, start, end, _migrated[self.resolved_url()])
                yield writer
                writer.finish()
            if writer.aggregate_refresh is not None:
                # TimescaleDB refreshes a continuous aggregate outside any transaction.
                conn.autocommit = True
                timescale.refresh_hourly(conn, *writer.aggregate_refresh)

    def read_frame(self, query: str | sql.Composable, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Run a SELECT and return its rows as a DataFrame, streamed through COPY."""
        with self.connection() as conn:
            return read_frame(conn, query, params)

    def apply_retention(self, cluster: str) -> dict[str, int]:
        """Delete the cluster's rows older than retention_days (rollups: rollup_retention_days).
        On TimescaleDB the hypertables and the hourly aggregate are left to retention policies
        (set with the schema, re-set here if the settings changed), which drop whole chunks.
        Returns rows deleted per table."""
        deleted: dict[str, int] = {}
        with self.connection() as conn:
            timescale_mode = _migrated[self.resolved_url()] == MODE_TIMESCALE
            if timescale_mode:
                timescale.ensure_retention(conn, self.retention_days, self.rollup_retention_days)
            with conn.transaction():
                for table, column, days in (
                    ("gpu_pod_usage", "minute", self.retention_days),
                    ("gpu_node_usage", "minute", self.retention_days),
                    ("gpu_cost", "minute", self.retention_days),
                    ("gpu_cost_hourly", "hour", self.rollup_retention_days),
                    *((table, "hour", self.rollup_retention_days) for table in _DASHBOARD_ROLLUPS),
                    ("price_points", "effective_at", self.retention_days),
                    ("gpu_pods", "last_seen", self.retention_days),
                    ("gpu_pod_cost_totals", "last_minute", self.retention_days),
                    # Budgets read the month (and pod cost limits a pod's life) from these.
                    ("gpu_pod_cost_hourly", "hour", self.retention_days),
                    ("pod_hourly_changes", "hour", self.retention_days),
                    ("grouped_cost_cache", "through_hour", self.retention_days),
                ):
                    if timescale_mode and (
                        table in timescale.MINUTE_HYPERTABLES or table == timescale.HOURLY_AGGREGATE
                    ):
                        continue
                    # cluster first, so the (cluster, time) indexes serve the delete.
                    cursor = conn.execute(
                        sql.SQL(
                            "DELETE FROM {} WHERE cluster = %s"
                            " AND {} < now() - make_interval(days => %s)"
                        ).format(sql.Identifier(table), sql.Identifier(column)),
                        (cluster, days),
                    )
                    deleted[table] = cursor.rowcount
        return deleted


def table_columns(conn: psycopg.Connection, table: str) -> list[str]:
    """The table's column names, in order."""
    # pg_attribute through regclass also finds temporary tables (information_schema does not).
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass"
        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    return [name for (name,) in rows]


def copy_frame(conn: psycopg.Connection, table: str, frame: pd.DataFrame) -> int:
    """COPY the frame's columns (those the table has) into ``table``; returns rows written."""
    columns = [c for c in table_columns(conn, table) if c in frame.columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    _use_utc_session(conn)
    # The queued writer sends batches from a thread, so encoding batch N+1 overlaps with the
    # server parsing batch N.
    with conn.cursor() as cursor, cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
        for offset in range(0, len(frame), COPY_BATCH_ROWS):
            copy.write(copy_csv(frame.iloc[offset : offset + COPY_BATCH_ROWS][columns]))
    return len(frame)


def copy_csv(frame: pd.DataFrame) -> memoryview:
    """The frame as the CSV copy_frame sends (no header), for a session in UTC.

    Zoned timestamps go as the same instants without a zone (UTC wall time): Arrow writes zoned
    timestamps to CSV ~20x slower (a zone conversion per value), most of a day's COPY encoding.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = table.column(index).cast(pa.timestamp(field.type.unit))
            table = table.set_column(index, field.name, naive)
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    return buffer.getbuffer()


_UTC_ZONES = {"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Zulu", "Universal"}


def _use_utc_session(conn: psycopg.Connection) -> None:
    """UTC for the session (inside a transaction: until it ends, which covers its COPYs)."""
    if conn.info.parameter_status("TimeZone") not in _UTC_ZONES:
        conn.execute("SET TIME ZONE 'UTC'")


def read_frame(
    conn: psycopg.Connection, query: str | sql.Composable, params: Sequence[Any] = ()
) -> pd.DataFrame:
    with conn.cursor() as cursor:
        # Column names and types first (no rows), so empty results and all-NULL columns keep
        # their types instead of being guessed from the CSV.
        cursor.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(_as_sql(query)), params)
        names = [d.name for d in cursor.description or []]
        types = [_type_name(conn, d.type_code) for d in cursor.description or []]
        statement = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(_as_sql(query))
        buffer = io.BytesIO()
        with cursor.copy(statement, params) as copy:
            for chunk in copy:
                buffer.write(chunk)
    schema = {
        name: _PG_TO_ARROW.get(pg_type, pa.string())
        for name, pg_type in zip(names, types, strict=True)
    }
    buffer.seek(0)  # the header line is always there, so an empty result still parses
    table = pacsv.read_csv(
        buffer,
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    return table.to_pandas()


def _as_sql(query: str | sql.Composable) -> sql.Composable:
    return sql.SQL(query) if isinstance(query, str) else query  # type: ignore[arg-type]


_type_names: dict[int, str] = {}


def _type_name(conn: psycopg.Connection, oid: int) -> str:
    if oid not in _type_names:
        row = conn.execute("SELECT format_type(%s, NULL)", (oid,)).fetchone()
        _type_names[oid] = row[0] if row else "text"
    return _type_names[oid]


def window_days(start: datetime, end: datetime) -> list[str]:
    """The UTC days (YYYY-MM-DD) that [start, end) touches, in order."""
    day = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    days = []
    while day <= last:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


# The columns gpu_cost_hourly and gpu_pod_cost_hourly both keep, and the sums every hourly
# rollup takes of the per-pod hours (refresh_hourly_rollup).
_ROLLUP_KEYS = (
    "namespace, team, project, experiment_id, cost_center, gpu_model, capacity_type, is_idle"
)
_ROLLUP_SUMS = (
    "sum(gpu_hours), sum(cost_usd), sum(on_demand_cost_usd), sum(exclusive_cost_usd),"
    " sum(pod_minutes)"
)
_USE_COLUMNS = "measured_gpu_hours, used_gpu_hours, unused_cost_usd"
_USE_SUMS = "sum(measured_gpu_hours), sum(used_gpu_hours), sum(unused_cost_usd)"
# The dashboards' rollups (migration 060) and their keys: gpu_cost_hourly's without the node
# and experiment (per namespace), and the experiments' pod cost without node, GPU and price.
_DASHBOARD_ROLLUPS = ("gpu_namespace_cost_hourly", "gpu_experiment_cost_hourly")
_NAMESPACE_KEYS = (
    "namespace, team, project, cost_center, gpu_model, capacity_type, is_idle, price_source"
)
_EXPERIMENT_KEYS = "namespace, team, project, experiment_id"


class WindowWriter:
    """Writes of one window, inside the transaction opened by ``CostStore.write_window``."""

    def __init__(
        self, conn: psycopg.Connection, cluster: str, start: datetime, end: datetime, mode: str
    ) -> None:
        self.conn, self.cluster, self.start, self.end, self.mode = conn, cluster, start, end, mode
        self._cleared: set[str] = set()
        self.deleted: dict[str, int] = {}
        self.aggregate_refresh: tuple[datetime, datetime] | None = None
        # Rows other windows' transactions also write (the cluster's total, pods seen in two
        # windows), staged here and written by finish(), just before the commit.
        self._cluster_delta: list[float] | None = None
        self._pods_staged = False

    def clear(self, table: str, time_column: str = "minute") -> int:
        """Delete the window's rows of ``table`` (once per table per window).

        Writers of one cluster's table queue on transaction locks first: two runs rewriting
        overlapping windows at once would otherwise both delete the old rows and both insert,
        double-counting the overlap. The locks are per UTC day the window touches (taken in
        order, so writers never deadlock): runs of different days, such as a backfill's
        parallel day-runs and the live minute, write at the same time. Once it holds the locks,
        the window is exactly what this transaction writes.
        """
        if table in self._cleared:
            return 0
        for day in window_days(self.start, self.end):
            self.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"gpu_cost_pipeline:{self.cluster}:{table}:{day}",),
            )
        if table == "gpu_cost":
            self._subtract_totals()
        cursor = self.conn.execute(
            sql.SQL("DELETE FROM {} WHERE cluster = %s AND {col} >= %s AND {col} < %s").format(
                sql.Identifier(table), col=sql.Identifier(time_column)
            ),
            (self.cluster, self.start, self.end),
        )
        self._cleared.add(table)
        self.deleted[table] = cursor.rowcount
        return cursor.rowcount

    def replace(self, table: str, frame: pd.DataFrame, time_column: str = "minute") -> int:
        """Clear the window (first call only), then COPY ``frame``; call again to add chunks."""
        self.clear(table, time_column)
        if frame.empty:
            return 0
        written = copy_frame(self.conn, table, frame.assign(cluster=self.cluster))
        if table == "gpu_cost":
            self._add_totals(frame)
        return written

    # gpu_pod_cost_totals and gpu_cluster_cost_totals follow gpu_cost in the same transaction:
    # what the window delete removes is subtracted first, what each chunk writes is added, so
    # rewriting a window leaves every total as if the window had been written once. The deltas
    # are staged (the cluster's in memory, the pods' in a temporary table) and applied by
    # finish(): the cluster's total is one row every window's transaction updates, so updating
    # it at the first chunk made parallel day-runs wait for each other's whole transaction
    # (a quarter of a two-worker backfill's time, sampled from pg_stat_activity).
    def _subtract_totals(self) -> None:
        window = (self.cluster, self.start, self.end)
        # Runs once per window, before any chunk's _add_totals. ON COMMIT DELETE ROWS: the
        # table is empty at the start of every transaction of the session.
        self.conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS gpu_pod_cost_delta"
            " (LIKE gpu_pod_cost_totals) ON COMMIT DELETE ROWS"
        )
        self.conn.execute(
            """
            INSERT INTO gpu_pod_cost_delta (cluster, pod_uid, cost_usd, last_minute)
            SELECT cluster, pod_uid, -sum(cost_usd), max(minute) FROM gpu_cost
            WHERE cluster = %s AND minute >= %s AND minute < %s AND NOT is_idle
            GROUP BY cluster, pod_uid
            """,
            window,
        )
        row = self.conn.execute(
            """
            SELECT coalesce(sum(cost_usd), 0),
                   coalesce(sum(on_demand_cost_usd - cost_usd) FILTER (WHERE NOT is_idle), 0),
                   coalesce(sum(exclusive_cost_usd - cost_usd) FILTER (WHERE NOT is_idle), 0)
            FROM gpu_cost WHERE cluster = %s AND minute >= %s AND minute < %s
            """,
            window,
        ).fetchone()
        if row:
            self._add_cluster_totals(-row[0], -row[1], -row[2])

    def _add_totals(self, costs: pd.DataFrame) -> None:
        pods = costs.loc[~costs["is_idle"]]
        self._add_cluster_totals(
            float(costs["cost_usd"].sum()),
            float((pods["on_demand_cost_usd"] - pods["cost_usd"]).sum()),
            float((pods["exclusive_cost_usd"] - pods["cost_usd"]).sum()),
        )
        per_pod = (
            pods.groupby("pod_uid", sort=False)
            .agg(cost_usd=("cost_usd", "sum"), last_minute=("minute", "max"))
            .reset_index()
        )
        if not per_pod.empty:
            copy_frame(self.conn, "gpu_pod_cost_delta", per_pod.assign(cluster=self.cluster))

    def _add_cluster_totals(self, cost: float, spot: float, sharing: float) -> None:
        delta = self._cluster_delta or [0.0, 0.0, 0.0]
        self._cluster_delta = [delta[0] + cost, delta[1] + spot, delta[2] + sharing]

    def upsert_pods(self, pods: pd.DataFrame) -> int:
        """Insert or refresh pod attribution rows (applied by finish(), before the commit);
        first/last seen widen, never shrink, and attribution comes from the latest sighting, so
        rewriting or backfilling a window neither adds rows nor loses what other windows saw."""
        if pods.empty:
            return 0
        if not self._pods_staged:  # once per window: later chunks add to the same table
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS gpu_pods_incoming"
                " (LIKE gpu_pods INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
        copy_frame(self.conn, "gpu_pods_incoming", pods.assign(cluster=self.cluster))
        self._pods_staged = True
        return len(pods)

    def finish(self) -> None:
        """Apply what the window staged for rows other transactions also write, each in one
        statement in pod order (so two windows' transactions never deadlock), and hold their
        row locks only from here to the commit."""
        if self._pods_staged:
            self._apply_pods()
        if self._cluster_delta is not None:
            self.conn.execute(
                """
                INSERT INTO gpu_pod_cost_totals AS t
                SELECT cluster, pod_uid, sum(cost_usd), max(last_minute)
                FROM gpu_pod_cost_delta GROUP BY cluster, pod_uid ORDER BY pod_uid
                ON CONFLICT (cluster, pod_uid) DO UPDATE SET
                    cost_usd = t.cost_usd + EXCLUDED.cost_usd,
                    last_minute = GREATEST(t.last_minute, EXCLUDED.last_minute)
                """
            )
            self.conn.execute(
                """
                INSERT INTO gpu_cluster_cost_totals AS t VALUES (%s, %s, %s, %s)
                ON CONFLICT (cluster) DO UPDATE SET
                    cost_usd = t.cost_usd + EXCLUDED.cost_usd,
                    spot_savings_usd = t.spot_savings_usd + EXCLUDED.spot_savings_usd,
                    sharing_savings_usd = t.sharing_savings_usd + EXCLUDED.sharing_savings_usd
                """,
                (self.cluster, *self._cluster_delta),
            )

    def _apply_pods(self) -> None:
        columns = table_columns(self.conn, "gpu_pods")
        # A pod seen by several chunks: its latest sighting's attribution, its widest span.
        latest = sql.SQL(", ").join(
            sql.SQL("min(first_seen) OVER (PARTITION BY pod_uid)")
            if c == "first_seen"
            else sql.Identifier(c)
            for c in columns
        )
        # Attribution follows the latest sighting: a backfill of older minutes must not
        # overwrite labels a newer window saw.
        updates = sql.SQL(", ").join(
            sql.SQL(
                "{c} = CASE WHEN EXCLUDED.last_seen >= gpu_pods.last_seen"
                " THEN EXCLUDED.{c} ELSE gpu_pods.{c} END"
            ).format(c=sql.Identifier(c))
            for c in columns
            if c not in ("cluster", "pod_uid", "first_seen", "last_seen")
        )
        self.conn.execute(
            sql.SQL(
                "INSERT INTO gpu_pods ({columns}) SELECT DISTINCT ON (pod_uid) {latest}"
                " FROM gpu_pods_incoming ORDER BY pod_uid, last_seen DESC"
                " ON CONFLICT (cluster, pod_uid) DO UPDATE SET {updates}, "
                "first_seen = LEAST(gpu_pods.first_seen, EXCLUDED.first_seen), "
                "last_seen = GREATEST(gpu_pods.last_seen, EXCLUDED.last_seen)"
            ).format(
                columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
                latest=latest,
                updates=updates,
            )
        )

    def refresh_hourly_rollup(self) -> int:
        """Recompute the hourly rollups for every hour the window touches, from gpu_cost in this
        transaction: gpu_cost_hourly (per node and attribution; on TimescaleDB a continuous
        aggregate, refreshed for those hours right after the window commits, since its policy
        alone would miss backfills older than 3 days), gpu_pod_cost_hourly (per pod, what
        budgets and pod cost limits read), and the dashboards' gpu_namespace_cost_hourly and
        gpu_experiment_cost_hourly (plain tables in both modes). One statement: a single scan
        of the minute rows grouped per pod, node and hour, of which every rollup is a sum (no
        temporary table, so the every-minute path does no DDL; the dashboard rollups regroup
        those few per-pod rows, never the minutes). Returns gpu_cost_hourly rows written."""
        hour_start = self.start.replace(minute=0, second=0, microsecond=0)
        hour_end = self.end.replace(minute=0, second=0, microsecond=0)
        if hour_end < self.end:
            hour_end += timedelta(hours=1)
        params = {"cluster": self.cluster, "start": hour_start, "end": hour_end}
        # A day of 1,000 pods groups ~1.7M minute rows into ~60k pod-hours. The planner's
        # statistics predate the rows this transaction just wrote (it estimates 1 row), so it
        # picks sort-then-group, which spilled a 320 MB external sort (13.8 s for a day here);
        # one in-memory hash aggregate of ~25 MB does it in a third of that. (Until the window
        # commits: nothing after this statement sorts.)
        self.conn.execute("SET LOCAL work_mem = '64MB'; SET LOCAL enable_sort = off")
        plain = self.mode != MODE_TIMESCALE  # on TimescaleDB gpu_cost_hourly is an aggregate
        rewritten = [*_DASHBOARD_ROLLUPS, "gpu_pod_cost_hourly"]
        if plain:
            rewritten.append("gpu_cost_hourly")
        for table in rewritten:
            self.conn.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE cluster = %(cluster)s AND hour >= %(start)s"
                    " AND hour < %(end)s"
                ).format(sql.Identifier(table)),
                params,
            )
        pod_hours = f"""
            SELECT date_trunc('hour', minute) AS hour, pod_uid, {_ROLLUP_KEYS}, node,
                   price_source, sum(gpu_share * seconds) / 3600.0 AS gpu_hours,
                   sum(cost_usd) AS cost_usd, sum(on_demand_cost_usd) AS on_demand_cost_usd,
                   sum(exclusive_cost_usd) AS exclusive_cost_usd, count(*) AS pod_minutes,
                   sum(CASE WHEN gpu_utilization IS NOT NULL THEN gpu_share * seconds
                            ELSE 0 END) / 3600.0 AS measured_gpu_hours,
                   sum(coalesce(gpu_utilization, 0) * gpu_share * seconds) / 3600.0
                       AS used_gpu_hours,
                   sum(CASE WHEN is_idle THEN cost_usd
                            ELSE coalesce(cost_usd * (1 - gpu_utilization), 0) END)
                       AS unused_cost_usd
            FROM gpu_cost
            WHERE cluster = %(cluster)s AND minute >= %(start)s AND minute < %(end)s
            GROUP BY 1, pod_uid, {_ROLLUP_KEYS}, node, price_source"""
        per_pod = f"""
            INSERT INTO gpu_pod_cost_hourly (hour, cluster, pod_uid, {_ROLLUP_KEYS}, gpu_hours,
                cost_usd, on_demand_cost_usd, exclusive_cost_usd, pod_minutes, {_USE_COLUMNS},
                node)
            SELECT hour, %(cluster)s, pod_uid, {_ROLLUP_KEYS}, {_ROLLUP_SUMS}, {_USE_SUMS},
                   min(node)
            FROM pod_hours GROUP BY hour, pod_uid, {_ROLLUP_KEYS}"""
        per_node = f"""
            INSERT INTO gpu_cost_hourly (hour, cluster, {_ROLLUP_KEYS}, price_source, node,
                gpu_hours, cost_usd, on_demand_cost_usd, exclusive_cost_usd, pod_minutes,
                {_USE_COLUMNS})
            SELECT hour, %(cluster)s, {_ROLLUP_KEYS}, price_source, node, {_ROLLUP_SUMS},
                   {_USE_SUMS}
            FROM pod_hours GROUP BY hour, {_ROLLUP_KEYS}, price_source, node"""
        per_namespace = f"""
            INSERT INTO gpu_namespace_cost_hourly (hour, cluster, {_NAMESPACE_KEYS}, gpu_hours,
                cost_usd, on_demand_cost_usd, exclusive_cost_usd, pod_minutes, {_USE_COLUMNS})
            SELECT hour, %(cluster)s, {_NAMESPACE_KEYS}, {_ROLLUP_SUMS}, {_USE_SUMS}
            FROM pod_hours GROUP BY hour, {_NAMESPACE_KEYS}"""
        per_experiment = f"""
            INSERT INTO gpu_experiment_cost_hourly (hour, cluster, {_EXPERIMENT_KEYS}, gpu_hours,
                cost_usd, on_demand_cost_usd, exclusive_cost_usd, pod_minutes)
            SELECT hour, %(cluster)s, {_EXPERIMENT_KEYS}, {_ROLLUP_SUMS}
            FROM pod_hours WHERE NOT is_idle AND experiment_id <> ''
            GROUP BY hour, {_EXPERIMENT_KEYS}"""
        # A data-modifying WITH runs once and to completion whether or not it is referenced;
        # the last insert is the statement itself (its row count is returned).
        *first, last = [per_pod, per_namespace, per_experiment] + ([per_node] if plain else [])
        inserts = ", ".join(f"insert_{n} AS ({insert})" for n, insert in enumerate(first))
        statement = f"WITH pod_hours AS MATERIALIZED ({pod_hours}), {inserts} {last}"
        written = self.conn.execute(statement, params).rowcount  # type: ignore[arg-type]
        # Budgets cache closed hours of the per-pod rollup: say which were just rewritten.
        self.conn.execute(
            "INSERT INTO pod_hourly_changes (cluster, hour) SELECT %(cluster)s,"
            " generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour',"
            " interval '1 hour')"
            " ON CONFLICT (cluster, hour) DO UPDATE SET changed_at = clock_timestamp()",
            params,
        )
        if plain:
            return written
        self.aggregate_refresh = (hour_start, hour_end)
        return 0
