"""gpu-autoscaler cost / materialize against a real PostgreSQL filled by the real pipeline."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from gpu_cost_pipeline.cli.main import main
from gpu_cost_pipeline.defs.partitions import minute_partitions
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline.store.reports import CostFilter, cost_breakdown
from gpu_cost_pipeline_tests.test_pipeline import ASSETS, range_tags, resources


def run_cli(*args: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def recent_data(store: CostStore, database_url: str, monkeypatch: pytest.MonkeyPatch) -> CostStore:
    """The last 30 closed minutes materialized for cluster 'test'; the CLI pointed at them."""
    last = minute_partitions.get_last_partition_key()
    last_start = minute_partitions.time_window_for_partition_key(last).start
    first = minute_partitions.get_partition_key_for_timestamp(
        (last_start - timedelta(minutes=29)).timestamp()
    )
    result = dg.materialize(ASSETS, tags=range_tags(first, last), resources=resources(database_url))
    assert result.success
    monkeypatch.setenv("GPU_COST_DATABASE_URL", database_url)
    monkeypatch.setenv("GPU_COST_CLUSTER", "test")
    return store


def sql_total(store: CostStore, where: str = "true", params: tuple = ()) -> float:
    frame = store.read_frame(
        f"SELECT coalesce(sum(cost_usd), 0) AS cost FROM gpu_cost WHERE cluster = 'test' AND {where}",
        params,
    )
    return float(frame.loc[0, "cost"])


def test_json_report_matches_the_stored_rows(recent_data: CostStore, capsys):
    code, out, _ = run_cli("cost", "--last", "2h", "--format", "json", capsys=capsys)
    assert code == 0
    report = json.loads(out)
    assert report["total_cost_usd"] == pytest.approx(sql_total(recent_data), rel=1e-9)
    assert report["idle_cost_usd"] == pytest.approx(sql_total(recent_data, "is_idle"), rel=1e-9)
    by_team = {row["name"]: row["cost_usd"] for row in report["by_team"]}
    assert by_team["(idle GPUs)"] == pytest.approx(report["idle_cost_usd"], rel=1e-9)
    assert by_team["(none)"] == pytest.approx(
        sql_total(recent_data, "team = '' AND NOT is_idle"), rel=1e-9
    )
    assert sum(by_team.values()) == pytest.approx(report["total_cost_usd"], rel=1e-9)
    assert report["estimated_cost_usd"] == pytest.approx(report["total_cost_usd"], rel=1e-9)
    # 30 materialized minutes touch one or two of the period's 2-3 hours.
    assert 1 <= report["hours_with_data"] < report["hours_in_period"]


def test_team_and_namespace_filters(recent_data: CostStore, capsys):
    code, out, _ = run_cli(
        "cost", "--last", "2h", "--team", "vision", "--format", "json", capsys=capsys
    )
    assert code == 0
    assert json.loads(out)["total_cost_usd"] == pytest.approx(
        sql_total(recent_data, "team = 'vision'"), rel=1e-9
    )
    code, out, _ = run_cli(
        "cost", "--last", "2h", "--namespace", "ml-inference", "--format", "csv", capsys=capsys
    )
    assert code == 0
    frame = pd.read_csv(io.StringIO(out))
    assert set(frame["namespace"]) == {"ml-inference"}
    assert frame["cost_usd"].sum() == pytest.approx(
        sql_total(recent_data, "namespace = 'ml-inference'"), rel=1e-9
    )


def test_summary_and_detailed_tables(recent_data: CostStore, capsys):
    code, out, _ = run_cli("cost", "--last", "1h", capsys=capsys)
    assert code == 0
    assert "Total cost" in out and "By namespace" in out and "By team" in out
    assert "(idle GPUs)" in out and "Spot" in out and "estimate" in out
    code, out, _ = run_cli("cost", "--last", "90m", "--format", "detailed", capsys=capsys)
    assert code == 0
    for title in ("By project", "By experiment", "By cost center", "By gpu model", "RTX-PRO-6000"):
        assert title in out


def test_no_data_yet_is_a_clear_message(store: CostStore, database_url: str, monkeypatch, capsys):
    monkeypatch.setenv("GPU_COST_DATABASE_URL", database_url)
    code, out, err = run_cli("cost", capsys=capsys)
    assert code == 2 and out == ""
    assert "No cost data yet" in err and "make run" in err


def test_a_bad_duration_names_the_flag_value(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["cost", "--last", "3 weeks"])
    assert raised.value.code == 2
    assert "'3 weeks' is not a duration" in capsys.readouterr().err


def test_report_edges_combine_rollup_hours_and_minutes_exactly(store: CostStore, database_url: str):
    assert dg.materialize(
        ASSETS,
        tags=range_tags("2026-11-20-10:00", "2026-11-20-12:59"),
        resources=resources(database_url),
    ).success
    start = datetime(2026, 11, 20, 10, 17, tzinfo=UTC)
    end = datetime(2026, 11, 20, 12, 43, tzinfo=UTC)
    with store.connection() as conn:
        breakdown = cost_breakdown(conn, start, end, CostFilter(cluster="test"))
    expected = sql_total(store, "minute >= %s AND minute < %s", (start, end))
    assert breakdown["cost_usd"].sum() == pytest.approx(expected, rel=1e-9)
    assert expected < sql_total(store)  # the edges really cut rows off


def test_materialize_command_runs_one_range_run(database_url: str):
    env = {
        **os.environ,
        "GPU_COST_DATABASE_URL": database_url,
        "GPU_COST_CLUSTER": "cli",
        "GPU_COST_SIMULATED_PODS": "20",
    }
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", "materialize", "--last", "3m"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "as one run" in done.stdout and "succeeded" in done.stdout
    assert database_url not in done.stdout + done.stderr
    rows = CostStore(database_url=database_url).read_frame(
        "SELECT count(DISTINCT minute) AS minutes FROM gpu_cost WHERE cluster = 'cli'"
    )
    assert rows.loc[0, "minutes"] == 3


def test_long_materialize_ranges_split_into_one_run_per_day_of_minutes():
    from gpu_cost_pipeline.cli.pipeline import recent_partition_ranges

    ranges = recent_partition_ranges(3000, 1440)
    keys = [
        minute_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
        for first, last in ranges
    ]
    assert [len(k) for k in keys] == [1440, 1440, 120]
    flat = [key for run in keys for key in run]
    assert len(set(flat)) == 3000 and flat[-1] == minute_partitions.get_last_partition_key()


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_minute_partitions_reach_back_the_configured_days_and_days_reach_history():
    """As the code location loads them (a fresh process with the settings in its environment)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    code = (
        "from gpu_cost_pipeline.definitions import defs; "
        "from gpu_cost_pipeline.defs.partitions import minute_partitions as m, daily_partitions; "
        "h = defs.resolve_assets_def('gpu_cost_history').partitions_def; "
        "print(m.get_first_partition_key(), h.get_first_partition_key(), "
        "daily_partitions is defs.resolve_assets_def('roi_report').partitions_def)"
    )
    env = {
        **os.environ,
        "GPU_COST_PARTITION_START": "2026-01-01-00:00",
        "GPU_COST_MINUTE_PARTITION_DAYS": "2",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-1500:]
    first_minute, first_day, shared = done.stdout.split()
    assert first_minute == (today - timedelta(days=2)).strftime("%Y-%m-%d-%H:%M")
    assert first_day == "2026-01-01" and shared == "True"


def test_materialize_a_period_runs_whole_days_as_history_and_edges_as_minutes(
    database_url: str, tmp_path
):
    """--from/--to: the whole day as one gpu_cost_history run, the partial day before it as a
    minute range; every minute stored once, and the instance records the day."""
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    start, end = day - timedelta(minutes=2), day + timedelta(days=1)
    env = {
        "GPU_COST_DATABASE_URL": database_url,
        "GPU_COST_CLUSTER": "history",
        "GPU_COST_SIMULATED_PODS": "5",
        "GPU_COST_PARTITION_START": f"{day - timedelta(days=40):%Y-%m-%d}-00:00",
        "GPU_COST_MINUTE_PARTITION_DAYS": "7",
        "DAGSTER_HOME": str(tmp_path),
    }
    (tmp_path / "dagster.yaml").touch()
    period = ["--from", f"{start:%Y-%m-%d %H:%M}", "--to", f"{end:%Y-%m-%d}"]
    done = cli(["materialize", *period], env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"gpu_cost_history for 1 day, {day:%Y-%m-%d}" in done.stdout
    assert "gpu_cost_job for" in done.stdout and "as one run" in done.stdout
    assert "Progress: 1442/1442 minute partitions (100%)" in done.stdout
    minutes = CostStore(database_url=database_url).read_frame(
        "SELECT count(DISTINCT minute) AS n, count(*) AS rows, "
        "count(DISTINCT (pod_uid, minute)) AS distinct_rows FROM gpu_cost "
        "WHERE cluster = 'history' AND NOT is_idle"
    )
    assert minutes.loc[0, "n"] == 1442
    assert minutes.loc[0, "rows"] == minutes.loc[0, "distinct_rows"]  # nothing twice
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        days = instance.get_materialized_partitions(dg.AssetKey("gpu_cost_history"))
    assert days == {f"{day:%Y-%m-%d}"}
    # Before the minute partitions, only whole days: a clear error naming the setting.
    old = day - timedelta(days=30)
    done = cli(["materialize", "--from", f"{old:%Y-%m-%d} 06:00", "--to", f"{day:%Y-%m-%d}"], env)
    assert done.returncode == 1
    assert "GPU_COST_MINUTE_PARTITION_DAYS" in done.stderr
