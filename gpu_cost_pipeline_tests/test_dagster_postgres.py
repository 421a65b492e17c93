"""Dagster's own instance storage in PostgreSQL (dagster-postgres), configured as deployments
do: the Helm chart's ``storage.postgres.postgres_db`` form (password from an environment
variable) and a plain ``postgres_url``. Runs from `gpu-autoscaler materialize`, `dagster asset
materialize` and a daemon's schedule tick must be recorded there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pytest
import yaml

from gpu_cost_pipeline_tests.postgres_servers import create_database, tcp_postgres
from gpu_cost_pipeline_tests.test_code_location import REPO, materialize_minute

PASSWORD = "dagster-Pg-pw"
SCHEDULE_TAG = "dagster/schedule_name"


@pytest.fixture(scope="module")
def dagster_server() -> Iterator[str]:
    with tcp_postgres(PASSWORD) as url:
        yield url


def postgres_db_home(folder: Path, server_url: str, db_name: str) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the Helm chart's postgres_db form."""
    create_database(server_url, db_name)
    parts = urlsplit(server_url)
    folder.mkdir()
    config = {
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": parts.username,
                    "password": {"env": "DAGSTER_PG_PASSWORD"},
                    "hostname": parts.hostname,
                    "db_name": db_name,
                    "port": parts.port,
                }
            }
        },
        "telemetry": {"enabled": False},
    }
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    return folder


def runs_in(home: Path, **tags: str) -> list[dg.DagsterRun]:
    os.environ["DAGSTER_PG_PASSWORD"] = PASSWORD  # the instance config reads it
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return list(instance.get_runs(filters=dg.RunsFilter(tags=tags) if tags else None))


def env_for(home: Path, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_PASSWORD": PASSWORD,
        "GPU_COST_DATABASE_URL": database_url,
        "GPU_COST_SIMULATED_PODS": "10",
    }


def test_cli_and_dagster_runs_are_recorded_in_postgres_db_storage(
    dagster_server: str, database_url: str, tmp_path: Path
):
    home = postgres_db_home(tmp_path / "home", dagster_server, "dagster_cli")
    env = env_for(home, database_url)
    done = subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", "materialize", "--last", "2m"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr
    done = materialize_minute(env, "2026-11-20-10:00")
    assert done.returncode == 0, done.stderr[-2000:]
    runs = runs_in(home)
    assert len(runs) == 2 and all(run.is_success for run in runs)


def test_a_plain_postgres_url_works_too(dagster_server: str, database_url: str, tmp_path: Path):
    create_database(dagster_server, "dagster_url")
    home = tmp_path / "home"
    home.mkdir()
    url = dagster_server.rsplit("/", 1)[0] + "/dagster_url"
    (home / "dagster.yaml").write_text(
        yaml.safe_dump({"storage": {"postgres": {"postgres_url": url}}})
    )
    done = materialize_minute(env_for(home, database_url), "2026-11-20-10:01")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [run.is_success for run in runs_in(home)] == [True]


def test_the_daemon_ticks_the_minute_schedule_into_postgres_storage(
    dagster_server: str, database_url: str, tmp_path: Path
):
    """`make dev`'s daemon half: the every-minute schedule fires, its run is launched in its own
    process and succeeds, all recorded in PostgreSQL. Waits for the next minute boundary."""
    home = postgres_db_home(tmp_path / "home", dagster_server, "dagster_daemon")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "dagster._daemon", "run", "-w", "workspace.yaml"],
        env=env_for(home, database_url),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        finished: list[dg.DagsterRun] = []
        while time.monotonic() < deadline and not finished:
            assert daemon.poll() is None, daemon.stderr.read()[-2000:] if daemon.stderr else ""
            time.sleep(5)
            runs = runs_in(home, **{SCHEDULE_TAG: "gpu_cost_every_minute"})
            finished = [run for run in runs if run.is_finished]
        assert finished, "no scheduled run finished within 4 minutes"
        assert finished[0].is_success, finished[0].status
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
