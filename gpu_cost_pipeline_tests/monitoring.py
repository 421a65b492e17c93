"""What the monitoring tests share: a store holding the last two hours of a simulated cluster,
`gpu-autoscaler metrics` serving it as a command, and a real Prometheus scraping that."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from gpu_cost_pipeline.defs.costs.assets import gpu_cost
from gpu_cost_pipeline.defs.partitions import minute_partitions
from gpu_cost_pipeline.defs.pricing.assets import gpu_prices
from gpu_cost_pipeline.defs.pricing.resources import PriceCatalog
from gpu_cost_pipeline.defs.usage.assets import gpu_usage
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.postgres_servers import free_port
from gpu_cost_pipeline_tests.prometheus_scraper import Prometheus, prometheus_scraping
from gpu_cost_pipeline_tests.prometheus_server import stop_process

CLUSTER = "monitored"
MINUTES = 120
REPO = Path(__file__).parents[1]


@dataclass(frozen=True)
class Monitored:
    database_url: str
    exporter: str  # host:port
    prometheus: Prometheus
    first_key: str
    last_key: str


def materialize_recent(
    database_url: str, minutes: int = MINUTES, pods: int = 40
) -> tuple[str, str]:
    """One range run of the cost assets over the ``minutes`` minutes that closed last."""
    last = minute_partitions.get_last_partition_key()
    assert last is not None
    keys = minute_partitions.get_partition_keys()
    first = keys[keys.index(last) - minutes + 1]
    materialize_range(database_url, first, last, pods)
    return first, last


def materialize_range(
    database_url: str, first: str, last: str, pods: int = 40, cluster: str = CLUSTER
) -> None:
    """One range run of the cost assets over minute partitions ``first`` … ``last``."""
    result = dg.materialize(
        [gpu_usage, gpu_prices, gpu_cost],
        resources={
            "store": CostStore(database_url=database_url),
            "usage_source": UsageSource(cluster=cluster, simulated_gpu_pods=pods),
            "prices": PriceCatalog(),
        },
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
    )
    assert result.success


def exporter_env(database_url: str, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "GPU_COST_DATABASE_URL": database_url,
        "GPU_COST_CLUSTER": CLUSTER,
        **settings,
    }


def metrics_command(env: Mapping[str, str], *args: str, timeout: float = 120) -> str:
    """`gpu-autoscaler metrics ARGS` as a command; returns stdout (fails on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", "metrics", *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@contextmanager
def exporter_serving(env: Mapping[str, str]) -> Iterator[subprocess.Popen]:
    """`gpu-autoscaler metrics` serving until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", "metrics"],
        env=dict(env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "Serving ... on http://host:port/metrics"
        assert line.startswith("Serving GPU cost metrics"), line + process.stdout.read()[-2000:]
        yield process
    finally:
        stop_process(process)


@contextmanager
def monitored_store(database_url: str) -> Iterator[Monitored]:
    first, last = materialize_recent(database_url)
    address = f"127.0.0.1:{free_port()}"
    env = exporter_env(database_url, GPU_COST_METRICS_ADDRESS=address)
    with (
        exporter_serving(env),
        prometheus_scraping("gpu-cost-exporter", address, {"cluster": CLUSTER}) as prometheus,
    ):
        prometheus.wait_for_scrapes("gpu-cost-exporter")
        yield Monitored(database_url, address, prometheus, first, last)


def wait_until(condition, timeout: float = 30, interval: float = 0.5):
    """Poll ``condition()`` until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def write_budget_statuses(
    database_url: str,
    budgets: Mapping[tuple[str, str], tuple[float, float]],
    cluster: str = CLUSTER,
) -> None:
    """Rows of ``cost_budget_status`` as the budget_status asset writes them: (namespace, name)
    → (monthly limit, current spend). Replaces the cluster's rows; an empty mapping clears them."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM cost_budget_status WHERE cluster = %s", (cluster,))
        for (namespace, name), (limit, spend) in budgets.items():
            conn.execute(
                "INSERT INTO cost_budget_status (cluster, namespace, name, source, monthly_limit,"
                " current_spend, computed_at) VALUES (%s, %s, %s, 'test', %s, %s, now())",
                (cluster, namespace, name, limit, spend),
            )
