"""Shared fixtures: one real embedded PostgreSQL server for the whole test session, and a fresh
database on it for each test that writes."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline.store.embedded import embedded_database_url, stop_embedded_server

# Settings that a developer's shell might carry must not leak into tests.
for _name in [n for n in os.environ if n.startswith("GPU_COST_")] + ["KUBECONFIG", "DAGSTER_HOME"]:
    os.environ.pop(_name, None)
# Tests pin days such as 2026-11-20 (more than the default 7 days ago): minute partitions reach
# back to the start of history (the 1st of the previous month), as before the setting existed.
# test_cli sets its own reach where the reach is what it tests.
os.environ["GPU_COST_MINUTE_PARTITION_DAYS"] = "62"


@pytest.fixture(scope="session")
def pg_data_dir() -> Iterator[Path]:
    # Not under pytest's temp root: every pytest session that starts (another checkout's, say)
    # resets /tmp/pytest-of-<user> to mode 0700, which, when the tests run as root, locks the
    # server's own user (pgserver) out of its data folder mid-run.
    data_dir = Path(tempfile.mkdtemp(prefix="gpu-cost-tests-pg-"))
    yield data_dir
    stop_embedded_server(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url(pg_data_dir: Path) -> str:
    """URL of the pipeline database on the session's embedded server."""
    return embedded_database_url(pg_data_dir)


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A new, empty database for one test (dropped afterwards)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server_url.replace("/gpu_costs?", f"/{name}?")
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(database_url: str) -> CostStore:
    return CostStore(database_url=database_url)


@pytest.fixture(autouse=True)
def _no_leftover_definitions_state_storage() -> Iterator[None]:
    """Dagster keeps the entered instance's definitions-state storage in a context variable and
    loses its reset when one instance is entered twice (``materialize(instance=...)`` inside
    ``instance_for_test()``); later definition loads then reach a disposed instance
    (`Attempted to resolve undefined DagsterInstance weakref`). Each test starts without one."""
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)
    yield


@pytest.fixture(scope="session")
def monitored(server_url: str) -> Iterator:
    """The last two hours of a simulated cluster in a store, `gpu-autoscaler metrics` serving
    it, and a real Prometheus scraping that (see monitoring.py); shared by the exporter and
    dashboard tests."""
    from gpu_cost_pipeline_tests.monitoring import monitored_store

    name = f"monitored_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with monitored_store(server_url.replace("/gpu_costs?", f"/{name}?")) as monitored:
        yield monitored
