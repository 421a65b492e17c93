"""`gpu-autoscaler metrics` as users run it (a command), scraped by a real Prometheus: PromQL
answers equal what the store holds, computed here straight from the minute rows."""

from __future__ import annotations

import time

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.monitoring import (
    CLUSTER,
    Monitored,
    exporter_env,
    materialize_range,
    metrics_command,
    wait_until,
    write_budget_statuses,
)
from gpu_cost_pipeline_tests.postgres_servers import free_port

SEED_METRICS = {
    "gpu_autoscaler_total_cost_usd": set(),
    "gpu_autoscaler_hourly_cost_rate_usd": set(),
    "gpu_autoscaler_pod_cost_usd": {"namespace", "pod", "gpu_type", "capacity_type"},
    "gpu_autoscaler_total_savings_usd": set(),
    "gpu_autoscaler_budget_percentage": {"budget"},
}
SCRAPE_LABELS = {"__name__", "job", "instance", "cluster"}  # added by Prometheus


def sql_one(url: str, query: str, *params) -> tuple:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def latest_minute(url: str):
    return sql_one(url, "SELECT max(minute) FROM gpu_cost WHERE cluster = %s", CLUSTER)[0]


def test_the_seed_metrics_have_the_seeds_names_and_labels(monitored: Monitored):
    for name, labels in SEED_METRICS.items():
        series = monitored.prometheus.api("series", **{"match[]": name})
        if name == "gpu_autoscaler_budget_percentage":
            continue  # no CostBudget rows yet: no series (see the budget test below)
        assert series, name
        for one in series:
            assert set(one) - SCRAPE_LABELS == labels, (name, one)
            assert one["cluster"] == CLUSTER


def test_totals_and_savings_equal_the_minute_rows(monitored: Monitored):
    prometheus, url = monitored.prometheus, monitored.database_url
    cost, spot, sharing = sql_one(
        url,
        "SELECT sum(cost_usd), sum(on_demand_cost_usd - cost_usd) FILTER (WHERE NOT is_idle),"
        " sum(exclusive_cost_usd - cost_usd) FILTER (WHERE NOT is_idle)"
        " FROM gpu_cost WHERE cluster = %s",
        CLUSTER,
    )
    assert cost > 0 and spot > 0 and sharing > 0  # the simulation has spot and shared GPUs
    selector = f'{{cluster="{CLUSTER}"}}'
    assert prometheus.value(f"gpu_autoscaler_total_cost_usd{selector}") == pytest.approx(cost)
    assert prometheus.value(f"gpu_autoscaler_total_savings_usd{selector}") == pytest.approx(
        spot + sharing
    )
    by_kind = {
        row["metric"]["kind"]: float(row["value"][1])
        for row in prometheus.query(f"gpu_autoscaler_savings_usd{selector}")
    }
    assert by_kind == pytest.approx({"spot": spot, "sharing": sharing})


def test_the_hourly_rate_is_the_latest_minute_times_60(monitored: Monitored):
    url = monitored.database_url
    minute = latest_minute(url)
    (cost,) = sql_one(
        url,
        "SELECT sum(cost_usd) FROM gpu_cost WHERE cluster = %s AND minute = %s",
        CLUSTER,
        minute,
    )
    rate = monitored.prometheus.value("gpu_autoscaler_hourly_cost_rate_usd")
    assert rate == pytest.approx(cost * 60)


def test_each_running_pod_reports_the_sum_of_all_its_minutes(monitored: Monitored):
    url, prometheus = monitored.database_url, monitored.prometheus
    minute = latest_minute(url)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT p.namespace, p.pod, sum(c.cost_usd)
            FROM gpu_cost AS c JOIN gpu_pods AS p USING (cluster, pod_uid)
            WHERE c.cluster = %s AND NOT c.is_idle AND c.pod_uid IN
                (SELECT pod_uid FROM gpu_cost WHERE cluster = %s AND minute = %s AND NOT is_idle)
            GROUP BY 1, 2
            """,
            (CLUSTER, CLUSTER, minute),
        ).fetchall()
    expected = {(ns, pod): cost for ns, pod, cost in rows}
    exported = {
        (row["metric"]["namespace"], row["metric"]["pod"]): float(row["value"][1])
        for row in prometheus.query("gpu_autoscaler_pod_cost_usd")
    }
    assert len(expected) > 10
    assert exported == pytest.approx(expected)
    assert prometheus.value("gpu_autoscaler_running_pods") == len(expected)
    # Aggregations a dashboard makes work on the labels.
    by_namespace = prometheus.query("sum by (namespace) (gpu_autoscaler_pod_cost_usd)")
    assert {row["metric"]["namespace"] for row in by_namespace} == {ns for ns, _ in expected}


def test_pipeline_health(monitored: Monitored):
    url, prometheus = monitored.database_url, monitored.prometheus
    minute = latest_minute(url)
    end = minute.timestamp() + 60
    assert prometheus.value("gpu_autoscaler_pipeline_last_minute_timestamp_seconds") == end
    lag = prometheus.value("gpu_autoscaler_pipeline_lag_seconds")
    assert 0 <= lag <= time.time() - end + 1
    (share,) = sql_one(
        url,
        "SELECT sum(cost_usd) FILTER (WHERE price_source = 'estimate') / sum(cost_usd)"
        " FROM gpu_cost WHERE cluster = %s AND minute = %s",
        CLUSTER,
        minute,
    )
    assert prometheus.value("gpu_autoscaler_pipeline_estimated_price_share") == pytest.approx(share)
    assert prometheus.value("gpu_autoscaler_exporter_store_up") == 1


def test_budget_percentages_come_from_the_budget_status_rows(monitored: Monitored):
    """One series per valid CostBudget of this cluster: spend ÷ monthly limit. A name used in
    two namespaces is exported as namespace/name so the two never share a series."""
    url, prometheus = monitored.database_url, monitored.prometheus
    assert prometheus.query("gpu_autoscaler_budget_percentage") == []
    write_budget_statuses(
        url,
        {
            ("ml-team", "team-budget"): (1000.0, 835.0),
            ("data-science", "data-science-budget"): (500.0, 600.0),
            ("research", "gpu"): (200.0, 50.0),
            ("platform", "gpu"): (400.0, 100.0),
        },
    )
    write_budget_statuses(url, {("x", "elsewhere"): (10.0, 1.0)}, cluster="other-cluster")
    try:
        found = wait_until(lambda: len(prometheus.query("gpu_autoscaler_budget_percentage")) == 4)
        assert found
        series = prometheus.query("gpu_autoscaler_budget_percentage")
        assert {r["metric"]["budget"]: float(r["value"][1]) for r in series} == pytest.approx(
            {
                "team-budget": 83.5,
                "data-science-budget": 120.0,
                "research/gpu": 25.0,
                "platform/gpu": 25.0,
            }
        )
        over = prometheus.query("gpu_autoscaler_budget_percentage >= 100")
        assert [r["metric"]["budget"] for r in over] == ["data-science-budget"]
    finally:
        write_budget_statuses(url, {})
        write_budget_statuses(url, {}, cluster="other-cluster")
        wait_until(lambda: not prometheus.query("gpu_autoscaler_budget_percentage"))


def test_pods_beyond_the_series_limit_are_summed_under_other(monitored: Monitored):
    everything = [
        float(r["value"][1]) for r in monitored.prometheus.query("gpu_autoscaler_pod_cost_usd")
    ]
    env = exporter_env(monitored.database_url, GPU_COST_METRICS_MAX_PODS="5")
    text = metrics_command(env, "--once")
    limited = {f.name: f.samples for f in text_string_to_metric_families(text)}
    pods = limited["gpu_autoscaler_pod_cost_usd"]
    named = [s for s in pods if s.labels["pod"] != "_other"]
    assert len(named) == 5
    assert sorted(s.value for s in named) == pytest.approx(sorted(everything)[-5:])
    assert sum(s.value for s in pods) == pytest.approx(sum(everything))
    assert limited["gpu_autoscaler_exporter_pods_folded"][0].value == len(everything) - 5


def test_an_unreachable_store_answers_store_up_0_without_the_password(monitored: Monitored):
    url = f"postgresql://costs:Very-s3cret@127.0.0.1:{free_port()}/gpu_costs"
    env = exporter_env(url)
    text = metrics_command(env, "--once")
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}
    assert families["gpu_autoscaler_exporter_store_up"][0].value == 0
    assert "gpu_autoscaler_total_cost_usd" not in families
    assert "Very-s3cret" not in text


def test_rewriting_windows_keeps_every_total_equal_to_the_rows(database_url: str):
    """The per-pod and per-cluster totals the exporter reads follow rewrites and overlapping
    ranges exactly."""
    materialize_range(database_url, "2026-11-20-10:00", "2026-11-20-10:19", pods=30)
    materialize_range(database_url, "2026-11-20-10:10", "2026-11-20-10:29", pods=30)
    materialize_range(database_url, "2026-11-20-10:00", "2026-11-20-10:19", pods=30)
    store = CostStore(database_url=database_url)
    frame = store.read_frame(
        """
        SELECT t.pod_uid, t.cost_usd AS total, sums.cost_usd AS rows
        FROM gpu_pod_cost_totals AS t FULL JOIN
            (SELECT cluster, pod_uid, sum(cost_usd) AS cost_usd FROM gpu_cost
             WHERE NOT is_idle GROUP BY 1, 2) AS sums USING (cluster, pod_uid)
        """
    )
    assert len(frame) > 30
    assert frame["total"].to_numpy() == pytest.approx(frame["rows"].to_numpy())
    cluster = store.read_frame(
        """
        SELECT t.cost_usd, t.spot_savings_usd, t.sharing_savings_usd, s.*
        FROM gpu_cluster_cost_totals AS t JOIN
            (SELECT cluster, sum(cost_usd) AS rows_cost,
                    sum(on_demand_cost_usd - cost_usd) FILTER (WHERE NOT is_idle) AS rows_spot,
                    sum(exclusive_cost_usd - cost_usd) FILTER (WHERE NOT is_idle) AS rows_sharing
             FROM gpu_cost GROUP BY 1) AS s USING (cluster)
        """
    ).iloc[0]
    assert [cluster.cost_usd, cluster.spot_savings_usd, cluster.sharing_savings_usd] == (
        pytest.approx([cluster.rows_cost, cluster.rows_spot, cluster.rows_sharing])
    )
