"""monitoring: one Prometheus scrape of `gpu-autoscaler metrics` for 10,000 running pods, and
every Grafana SQL query of deploy/grafana/dashboards over 30 days of rollups for 1,000 pods.

Setup (not timed): a fresh embedded PostgreSQL; the cost assets materialized through Dagster for
one minute of a 10,000-pod cluster and for one hour of a 1,000-pod cluster; then each cluster's
hourly rollup rows (gpu_cost_hourly and the dashboards' two) copied back over the 30 days before
(the same groups every hour), so the queries scan 30 days of realistic rollups. The exporter
serves over HTTP on 127.0.0.1 exactly as `gpu-autoscaler metrics` does (same registry, same
server); scrapes are HTTP GETs.
"""

from __future__ import annotations

import gzip
import statistics
import urllib.request
from datetime import UTC, datetime, timedelta

import psycopg
from prometheus_client import start_http_server

from bench._common import (
    Stopwatch,
    Target,
    clean_environment,
    embedded_postgres_dir,
    progress,
    report,
)
from gpu_cost_pipeline.settings import load_settings
from gpu_cost_pipeline.store.cost_store import table_columns
from gpu_cost_pipeline.store.embedded import embedded_database_url
from gpu_cost_pipeline_tests.grafana_queries import (
    POSTGRES_TYPE,
    expand_sql,
    load_dashboards,
    panel_queries,
    variable_queries,
)
from gpu_cost_pipeline_tests.monitoring import materialize_range

SCRAPE_PODS, DASHBOARD_PODS, DAYS = 10_000, 1_000, 30
# The hourly rollups copied over the DAYS: the dashboards' two and gpu_cost_hourly, which they
# derive from (the per-pod rollup only serves budgets, which no query here reads).
ROLLUPS = ("gpu_cost_hourly", "gpu_namespace_cost_hourly", "gpu_experiment_cost_hourly")
TARGET = Target("<=", 1, "s")
KEY_FORMAT = "%Y-%m-%d-%H:%M"


def materialize(url: str, cluster: str, pods: int, first: datetime, last: datetime) -> None:
    materialize_range(url, first.strftime(KEY_FORMAT), last.strftime(KEY_FORMAT), pods, cluster)


def spread_rollups(url: str, cluster: str, hour: datetime) -> dict[str, int]:
    """Copy the cluster's rows of ``hour`` in every hourly rollup to each of the DAYS × 24
    hours before it; returns the rows copied per rollup."""
    copied: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ROLLUPS:
            columns = ", ".join(c for c in table_columns(conn, table) if c != "hour")
            cursor = conn.execute(
                f"""
                INSERT INTO {table} (hour, {columns})
                SELECT hour - make_interval(hours => back), {columns}
                FROM {table}, generate_series(1, %s) AS back
                WHERE cluster = %s AND hour = %s
                """,  # type: ignore[arg-type]  (table names from ROLLUPS)
                (DAYS * 24 - 1, cluster, hour),
            )
            copied[table] = cursor.rowcount
            # What autovacuum does to a table after a bulk load (hint bits, visibility map,
            # statistics): without it the first query pays for setting the hint bits.
            conn.execute(f"VACUUM ANALYZE {table}")  # type: ignore[arg-type]
    return copied


def scrape(url: str) -> tuple[float, int, int]:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with Stopwatch() as watch, urllib.request.urlopen(request, timeout=60) as answer:
        body = answer.read()
    return watch.seconds, len(gzip.decompress(body)), len(body)


def bench_scrape(url: str, minute: datetime) -> None:
    from gpu_cost_pipeline.metrics.server import registry_for

    materialize(url, "bench", SCRAPE_PODS, minute - timedelta(minutes=1), minute)
    spread_rollups(url, "bench", minute.replace(minute=0))
    settings = load_settings({"GPU_COST_DATABASE_URL": url, "GPU_COST_CLUSTER": "bench"})
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry_for(settings))
    address = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        first, _, _ = scrape(address)
        runs = [scrape(address) for _ in range(5)]
    finally:
        server.shutdown()
    seconds = statistics.median(run[0] for run in runs)
    raw, compressed = runs[0][1], runs[0][2]
    report(
        "scrape_10k_pods_s",
        seconds,
        "s",
        [f"median of 5 warm scrapes, first {first:.2f} s", f"{DAYS} days of rollups"],
        target=TARGET,
    )
    report("scrape_10k_pods_payload_kb", raw / 1024, "KiB", [f"gzip {compressed / 1024:.0f} KiB"])


def bench_dashboards(url: str, hour: datetime) -> None:
    materialize(url, "dashboards", DASHBOARD_PODS, hour, hour + timedelta(minutes=59))
    copied = spread_rollups(url, "dashboards", hour)
    progress(f"rollup rows copied over {DAYS} days: {copied}")
    start, end = hour - timedelta(days=DAYS), hour + timedelta(hours=1)
    timings: dict[str, float] = {}
    with psycopg.connect(url) as conn:

        def timed(label: str, query: str) -> list[tuple]:
            with Stopwatch() as watch:
                result = conn.execute(query).fetchall()  # type: ignore[arg-type]
            timings[label] = watch.seconds
            return result

        for name, board in load_dashboards().items():
            values: dict[str, list[str]] = {"cluster": ["dashboards"]}
            for variable, query in variable_queries(name, board):
                if query.kind != POSTGRES_TYPE:
                    continue
                found = timed(f"{name}/{query.panel}", expand_sql(query.text, values, start, end))
                if variable["name"] != "cluster":  # "All": every value (__value, last column)
                    values[variable["name"]] = [str(row[-1]) for row in found]
            for query in panel_queries(name, board):
                if query.kind == POSTGRES_TYPE:
                    timed(f"{name}/{query.panel}", expand_sql(query.text, values, start, end))
    slowest = max(timings, key=timings.__getitem__)
    report(
        "dashboard_sql_max_s",
        timings[slowest],
        "s",
        [f"slowest of {len(timings)}: {slowest}", f"{DAYS} days, {DASHBOARD_PODS} pods"],
        target=TARGET,
    )
    report("dashboard_sql_total_s", sum(timings.values()), "s", [f"{len(timings)} queries"])
    for table, rows in copied.items():
        name = table.removeprefix("gpu_").removesuffix("_hourly")
        report(f"dashboard_{name}_rows", rows, "rows", [f"per hour {rows // (DAYS * 24 - 1)}"])


def main() -> None:
    clean_environment()
    with embedded_postgres_dir() as data_dir:
        url = embedded_database_url(data_dir)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        progress(f"scrape: {SCRAPE_PODS} pods, one minute")
        bench_scrape(url, now - timedelta(minutes=1))
        progress(f"dashboards: {DASHBOARD_PODS} pods, one hour, copied over {DAYS} days")
        bench_dashboards(url, now.replace(minute=0) - timedelta(hours=1))


if __name__ == "__main__":
    main()
