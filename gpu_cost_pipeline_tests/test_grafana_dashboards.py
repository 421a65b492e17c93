"""The Grafana dashboards: every PromQL expression is evaluated by a real Prometheus scraping
`gpu-autoscaler metrics`, and every SQL query (panels and variables, Grafana's macros expanded)
runs against the real schema and returns rows with values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gpu_cost_pipeline.defs.partitions import minute_partitions
from gpu_cost_pipeline_tests.grafana_queries import (
    POSTGRES_TYPE,
    PROMETHEUS_TYPE,
    Query,
    expand_promql,
    expand_sql,
    label_values_call,
    load_dashboards,
    panel_queries,
    variable_queries,
)
from gpu_cost_pipeline_tests.monitoring import Monitored, wait_until, write_budget_statuses

SEED_DASHBOARDS = {
    "cost-overview": "GPU Cost Overview",
    "cost-attribution": "GPU Cost Attribution",
    "savings-analysis": "GPU Savings Analysis",
    "budget-alerts": "GPU Budget Alerts",
}
BUDGETS = {"team-budget": 83.5, "data-science-budget": 120.0}


def test_the_seeds_four_dashboards_with_their_variables():
    boards = load_dashboards()
    assert {name: board["title"] for name, board in boards.items()} == SEED_DASHBOARDS
    for name, board in boards.items():
        variables = {v["name"] for v in board["templating"]["list"]}
        assert "cluster" in variables, name
        if name != "budget-alerts":  # budgets are not split by namespace or team
            assert {"namespace", "team"} <= variables or name == "cost-overview", name
        uids = {board["uid"] for board in boards.values()}
        assert len(uids) == len(boards)
        for panel in board["panels"]:
            assert panel.get("targets"), (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in ("${prometheus}", "${store}")


def time_range(monitored: Monitored) -> tuple[datetime, datetime]:
    first = minute_partitions.time_window_for_partition_key(monitored.first_key).start
    last = minute_partitions.time_window_for_partition_key(monitored.last_key).end
    return first, last


def sql_rows(url: str, query: str) -> tuple[list[str], list[tuple]]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(query)  # type: ignore[arg-type]  (dashboard text, not user input)
        names = [column.name for column in cursor.description or []]
        return names, cursor.fetchall()


def resolve_variables(monitored: Monitored, name: str, board: dict) -> dict[str, list[str]]:
    """Every query variable's values, as Grafana gets them, with "All" selected."""
    start, end = time_range(monitored)
    values: dict[str, list[str]] = {}
    for variable, query in variable_queries(name, board):
        if query.kind == POSTGRES_TYPE:
            names, rows = sql_rows(
                monitored.database_url, expand_sql(query.text, values, start, end)
            )
            column = names.index("__value") if "__value" in names else 0
            found = [str(row[column]) for row in rows]
        else:
            selector, label = label_values_call(query.text) or (None, None)
            assert selector is not None, f"{name}: unsupported variable query {query.text}"
            found = monitored.prometheus.api(
                f"label/{label}/values", **{"match[]": expand_promql(selector, values)}
            )
        assert found, f"{name}: variable {variable['name']} has no values"
        values[variable["name"]] = found if variable.get("includeAll") else found[:1]
    return values


@pytest.fixture
def budgets(monitored: Monitored):
    """CostBudget status rows as the budget_status asset writes them, so budget panels have
    data."""
    url, prometheus = monitored.database_url, monitored.prometheus
    write_budget_statuses(
        url, {("ml", budget): (100.0, percentage) for budget, percentage in BUDGETS.items()}
    )
    # two scrapes with budgets, so range queries over the last minute see them
    assert wait_until(lambda: len(prometheus.query("gpu_autoscaler_budget_percentage")) == 2)
    prometheus.wait_for_scrapes("gpu-cost-exporter")
    yield
    write_budget_statuses(url, {})
    wait_until(lambda: not prometheus.query("gpu_autoscaler_budget_percentage"))


def all_queries() -> list[Query]:
    return [q for name, board in load_dashboards().items() for q in panel_queries(name, board)]


@pytest.fixture
def alert_history(monitored: Monitored):
    """Ledger rows as the alert jobs write them (one sent, one failed), for the history panel."""
    with psycopg.connect(monitored.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alert_ledger (cluster, subject_kind, namespace, name, alert, period,"
            " action, channel_index, channel_type, outcome, attempts, detail, attempted_at)"
            " SELECT 'monitored', 'budget', 'ml', 'team-budget', 'threshold-80', '2026-11',"
            " 'trigger', channel, type, outcome, attempts, detail, minute"
            " FROM (VALUES (0, 'slack', 'sent', 1, ''), (1, 'webhook', 'failed', 3, 'HTTP 503'))"
            " AS attempt (channel, type, outcome, attempts, detail),"
            " (SELECT max(minute) AS minute FROM gpu_cost WHERE cluster = 'monitored') AS latest"
        )
    yield
    with psycopg.connect(monitored.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM alert_ledger WHERE cluster = 'monitored'")


def test_every_sql_query_runs_on_the_schema_and_returns_values(
    monitored: Monitored, budgets, alert_history
):
    start, end = time_range(monitored)
    checked = skipped = 0
    for name, board in load_dashboards().items():
        sql_queries = [q for q in panel_queries(name, board) if q.kind == POSTGRES_TYPE]
        values = resolve_variables(monitored, name, board) if sql_queries else {}
        for query in sql_queries:
            names, rows = sql_rows(
                monitored.database_url, expand_sql(query.text, values, start, end)
            )
            where = f"{name} / {query.panel}"
            assert rows, f"{where}: no rows"
            if "month to date" in names and datetime.now(UTC) - start.replace(day=1) < timedelta(
                hours=3
            ):
                skipped += 1  # the data began last month: this month may have none yet
                continue
            assert any(cell is not None for row in rows for cell in row), f"{where}: only NULLs"
            checked += 1
    assert checked + skipped == sum(q.kind == POSTGRES_TYPE for q in all_queries()) > 15


def test_every_promql_expression_is_evaluated_by_prometheus(monitored: Monitored, budgets):
    prometheus = monitored.prometheus
    now = datetime.now(UTC).timestamp()
    checked = 0
    for name, board in load_dashboards().items():
        values = resolve_variables(monitored, name, board)
        for query in panel_queries(name, board):
            if query.kind != PROMETHEUS_TYPE:
                continue
            expression = expand_promql(query.text, values)
            where = f"{name} / {query.panel}: {expression}"
            if query.instant:
                result = prometheus.query(expression)
            else:
                result = prometheus.query_range(expression, now - 300, now, "5s")
            assert result, f"{where}: no data"
            checked += 1
    assert checked == sum(q.kind == PROMETHEUS_TYPE for q in all_queries()) > 15
    # The budget panels show the budgets' numbers.
    values = resolve_variables(monitored, "budget-alerts", load_dashboards()["budget-alerts"])
    # (label_values looks over the dashboard's range: budgets other tests wrote may linger)
    assert set(BUDGETS) <= set(values["budget"])
    over = prometheus.query(
        expand_promql('count(gpu_autoscaler_budget_percentage{cluster="$cluster"} >= 100)', values)
    )
    assert float(over[0]["value"][1]) == 1


# What each dashboard rollup is, as a filter on gpu_cost_hourly: the same query on
# gpu_cost_hourly must give the same numbers (the rollups exist only to read fewer rows).
ROLLUPS_AS_HOURLY = {
    "FROM gpu_namespace_cost_hourly WHERE": "FROM gpu_cost_hourly WHERE",
    "FROM gpu_experiment_cost_hourly WHERE": (
        "FROM gpu_cost_hourly WHERE NOT is_idle AND experiment_id <> '' AND"
    ),
}


def assert_same_rows(actual: list[tuple], expected: list[tuple], where: str) -> None:
    """Equal rows in any order; floats equal up to the order they were summed in."""

    def exact(row: tuple) -> tuple:
        return tuple(str(cell) for cell in row if not isinstance(cell, float))

    assert len(actual) == len(expected), where
    for got, wanted in zip(sorted(actual, key=exact), sorted(expected, key=exact), strict=True):
        assert exact(got) == exact(wanted), where
        floats = [(a, b) for a, b in zip(got, wanted, strict=True) if isinstance(b, float)]
        assert [a for a, _ in floats] == pytest.approx([b for _, b in floats]), where


def test_the_dashboard_rollups_give_the_numbers_of_the_hourly_rollup(monitored: Monitored):
    start, end = time_range(monitored)
    compared = 0
    for name, board in load_dashboards().items():
        texts = [q.text for _, q in variable_queries(name, board) if q.kind == POSTGRES_TYPE]
        texts += [q.text for q in panel_queries(name, board) if q.kind == POSTGRES_TYPE]
        texts = [text for text in texts if any(key in text for key in ROLLUPS_AS_HOURLY)]
        if not texts:
            continue
        values = resolve_variables(monitored, name, board)
        for text in texts:
            query = expand_sql(text, values, start, end)
            on_hourly = query
            for rollup, hourly in ROLLUPS_AS_HOURLY.items():
                on_hourly = on_hourly.replace(rollup, hourly)
            _, rows = sql_rows(monitored.database_url, query)
            _, expected = sql_rows(monitored.database_url, on_hourly)
            assert rows, f"{name}: no rows from {query}"
            assert_same_rows(rows, expected, f"{name}: {query}")
            compared += 1
    # Every SQL query but the alert history's (panels and variables) reads a dashboard rollup.
    boards = load_dashboards().items()
    every_sql = [
        query
        for query in all_queries() + [q for n, b in boards for _, q in variable_queries(n, b)]
        if query.kind == POSTGRES_TYPE
    ]
    assert compared == len([q for q in every_sql if "alert_ledger" not in q.text]) > 20
