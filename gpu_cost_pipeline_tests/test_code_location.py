"""The code location loaded the way Dagster loads it: a subprocess with settings in the
environment (`dagster definitions validate`, `dagster asset materialize`), never resources built
by hand. Every documented variable set to a non-default value must load; a bad value must fail
with the one-line message that names it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from gpu_cost_pipeline.defs.partitions import minute_partitions
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.k8s_api_server import FakeKubernetesApi
from gpu_cost_pipeline_tests.test_pipeline import live_cluster
from gpu_cost_pipeline_tests.test_settings import NON_DEFAULT

MODULE = "gpu_cost_pipeline.definitions"
REPO = Path(__file__).parents[1]


def dagster(
    args: list[str], env: Mapping[str, str], timeout: float = 240
) -> subprocess.CompletedProcess:
    """`dagster ...` in a fresh process with exactly these settings on top of a clean env."""
    return subprocess.run(
        [sys.executable, "-m", "dagster", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def validate(env: Mapping[str, str]) -> subprocess.CompletedProcess:
    return dagster(["definitions", "validate", "-m", MODULE], env)


def validate_each(envs: list[dict[str, str]]) -> list[tuple[int, str]]:
    """`dagster definitions validate` once per environment, each in its own process forked
    after the libraries are imported (forked_loads.py): the code location itself is loaded
    fresh in every one, without paying ~10 s of library imports each time."""
    done = subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline_tests.forked_loads"],
        input=json.dumps(
            {"args": ["definitions", "validate", "-m", MODULE], "envs": envs, "parallel": 2}
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [(result["returncode"], result["output"]) for result in json.loads(done.stdout)]


def with_paths(variable: str, value: str, tmp_path: Path) -> str:
    """Paths in the examples point into the test's own folder."""
    if variable == "DAGSTER_HOME":
        home = tmp_path / "dagster_home"
        home.mkdir(exist_ok=True)
        return str(home)
    if variable in ("GPU_COST_DATA_DIR", "KUBECONFIG"):
        return str(tmp_path / Path(value).name)
    return value


def test_every_documented_variable_loads_with_a_non_default_value(tmp_path: Path):
    """One load per variable, two at a time (the machine has two cores)."""
    cases = {var: {var: with_paths(var, value, tmp_path)} for var, value in NON_DEFAULT.items()}
    results = dict(zip(cases, validate_each(list(cases.values())), strict=True))
    failed = {var: output[-1500:] for var, (code, output) in results.items() if code != 0}
    assert failed == {}
    for _, output in results.values():
        assert "Validation successful" in output
        assert "s3cret" not in output  # the database URL's password


def test_all_variables_at_once_load(tmp_path: Path):
    env = {var: with_paths(var, value, tmp_path) for var, value in NON_DEFAULT.items()}
    done = validate({**env, "GPU_COST_KUBE_IN_CLUSTER": "auto", "GPU_COST_SOURCE": "simulated"})
    assert done.returncode == 0, done.stderr[-1500:]


INVALID = {
    "GPU_COST_SOURCE": (
        "kubernets",
        "GPU_COST_SOURCE='kubernets' is not valid: expected one of simulated, kubernetes, prometheus",
    ),
    "GPU_COST_CHUNK_MINUTES": (
        "abc",
        "GPU_COST_CHUNK_MINUTES='abc' is not valid: expected an integer ≥ 1",
    ),
    "GPU_COST_MIG_CONVENTION": (
        "7",
        "GPU_COST_MIG_CONVENTION='7' is not valid: expected one of compute, memory",
    ),
}


def test_an_invalid_value_fails_the_load_with_one_line():
    results = validate_each([{variable: value} for variable, (value, _) in INVALID.items()])
    for (code, output), (_, line) in zip(results, INVALID.values(), strict=True):
        assert code != 0, line
        assert f"SettingsError: {line}" in output
        assert "pydantic" not in output and "ValidationError" not in output


def test_the_cli_reports_an_invalid_value_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", "cost"],
        env={**os.environ, "GPU_COST_SOURCE": "kubernets", "GPU_COST_DATABASE_URL": "bad://x"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "GPU_COST_SOURCE='kubernets' is not valid" in done.stderr
    assert "GPU_COST_DATABASE_URL (value not shown) is not valid" in done.stderr
    assert "bad://x" not in done.stderr


def materialize_minute(env: Mapping[str, str], partition: str) -> subprocess.CompletedProcess:
    return dagster(
        ["asset", "materialize", "-m", MODULE, "--select", "*gpu_cost", "--partition", partition],
        env,
    )


def test_materialize_on_the_simulated_cluster_uses_every_setting(database_url: str, tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        "GPU_COST_DATABASE_URL": database_url,
        "GPU_COST_CLUSTER": "sim-settings",
        "GPU_COST_SIMULATED_PODS": "12",
        "GPU_COST_SIMULATED_SEED": "7",
        "GPU_COST_REGION": "europe-west4",
        "GPU_COST_MIG_CONVENTION": "memory",
        "GPU_COST_UNKNOWN_GPU_PRICE": "3.10",
        "GPU_COST_CHUNK_MINUTES": "1",
        "GPU_COST_PARTITION_START": "2026-11-01-00:00",
        "GPU_COST_RETENTION_DAYS": "30",
        "DAGSTER_HOME": str(home),
    }
    done = materialize_minute(env, "2026-11-20-10:00")
    assert done.returncode == 0, done.stderr[-2000:]
    assert database_url not in done.stdout + done.stderr
    rows = CostStore(database_url=database_url).read_frame(
        "SELECT count(*) AS rows, count(DISTINCT region) AS regions, min(region) AS region"
        " FROM gpu_node_usage WHERE cluster = 'sim-settings'"
    )
    assert rows.loc[0, "rows"] > 0 and rows.loc[0, "region"] == "europe-west4"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    assert len(runs) == 1 and runs[0].is_success


def test_materialize_on_a_live_cluster_configured_only_by_environment(
    database_url: str, tmp_path: Path
):
    """The README's live example: GPU_COST_SOURCE=kubernetes against an HTTP Kubernetes API."""
    with FakeKubernetesApi() as api:
        live_cluster(api)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", context="prod")
        env = {
            "GPU_COST_SOURCE": "kubernetes",
            "GPU_COST_CLUSTER": "prod-us-east-1",
            "KUBECONFIG": str(kubeconfig),
            "GPU_COST_KUBE_CONTEXT": "prod",
            "GPU_COST_KUBE_IN_CLUSTER": "false",
            "GPU_COST_DATABASE_URL": database_url,
        }
        done = materialize_minute(env, minute_partitions.get_last_partition_key() or "")
        assert done.returncode == 0, done.stderr[-2000:]
        assert any(path.startswith("/api/v1/pods") for _, path in api.requests)
    costs = CostStore(database_url=database_url).read_frame(
        "SELECT team, is_idle FROM gpu_cost WHERE cluster = 'prod-us-east-1'"
    )
    assert "nlp-team" in set(costs["team"]) and costs["is_idle"].any()
