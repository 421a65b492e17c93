"""The Prometheus collector: the seed's five cost metrics and the pipeline's health, read from
the store on every scrape (nothing is cached, so a scrape always shows what is stored).

Cardinality is bounded by construction:
- ``gpu_autoscaler_pod_cost_usd`` has one series per pod running in the latest stored minute
  (finished pods drop out of the scrape, and Prometheus marks their series stale), and at most
  ``max_pods`` of them: the most expensive keep their own series, the others are summed per
  (namespace, gpu_type, capacity_type) under ``pod="_other"`` (no Kubernetes pod name can start
  with ``_``), and ``gpu_autoscaler_exporter_pods_folded`` says how many were folded;
- ``gpu_autoscaler_budget_percentage`` has one series per budget;
- everything else has no labels, or a fixed set (``kind``).

Every value is a gauge: it is a reading of the store, which re-pricing a window can lower.
When the store cannot be read, a scrape still answers, with ``store_up`` 0 and no cost series.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline.store.exporter_queries import ExporterSnapshot, PodCost, read_snapshot

OTHER_PODS = "_other"

# name → (help, labels). The first five are the seed's names and labels, exactly.
METRICS: dict[str, tuple[str, list[str]]] = {
    "gpu_autoscaler_total_cost_usd": (
        "Total accumulated GPU cost in USD (pods and idle GPUs) since costs were first stored.",
        [],
    ),
    "gpu_autoscaler_hourly_cost_rate_usd": (
        "Current GPU cost rate in USD per hour: the latest stored minute's cost × 60.",
        [],
    ),
    "gpu_autoscaler_pod_cost_usd": (
        "Accumulated GPU cost in USD of each pod running in the latest stored minute "
        f"(beyond the per-pod series limit, summed under pod='{OTHER_PODS}').",
        ["namespace", "pod", "gpu_type", "capacity_type"],
    ),
    "gpu_autoscaler_total_savings_usd": (
        "Total accumulated savings in USD, pods only: on-demand baseline minus actual "
        "(spot) plus exclusive baseline minus actual (GPU sharing).",
        [],
    ),
    "gpu_autoscaler_budget_percentage": (
        "Percentage of each CostBudget's monthly limit spent this month.",
        ["budget"],
    ),
    "gpu_autoscaler_savings_usd": (
        "Savings in USD by kind (spot, sharing); they add up to gpu_autoscaler_total_savings_usd.",
        ["kind"],
    ),
    "gpu_autoscaler_running_pods": ("GPU pods with cost rows in the latest stored minute.", []),
    "gpu_autoscaler_pipeline_last_minute_timestamp_seconds": (
        "End of the latest minute with stored costs (Unix time).",
        [],
    ),
    "gpu_autoscaler_pipeline_lag_seconds": (
        "Seconds from the end of the latest minute with stored costs to this scrape.",
        [],
    ),
    "gpu_autoscaler_pipeline_estimated_price_share": (
        "Share (0-1) of the latest minute's cost priced from estimates rather than price APIs.",
        [],
    ),
    "gpu_autoscaler_exporter_pods_folded": (
        f"Running pods summed into pod='{OTHER_PODS}' because of the per-pod series limit.",
        [],
    ),
    "gpu_autoscaler_exporter_store_up": (
        "1 if this scrape read the cost store, 0 if it could not.",
        [],
    ),
    "gpu_autoscaler_exporter_scrape_duration_seconds": (
        "Seconds this scrape spent reading the cost store.",
        [],
    ),
}

log = logging.getLogger(__name__)


def _family(name: str) -> GaugeMetricFamily:
    documentation, labels = METRICS[name]
    return GaugeMetricFamily(name, documentation, labels=labels)


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    family = _family(name)
    family.add_metric([], value)
    return family


def fold_pods(pods: list[PodCost], max_pods: int) -> tuple[list[PodCost], int]:
    """Keep the ``max_pods`` most expensive pods (``pods`` comes sorted by cost, descending);
    sum the rest per (namespace, gpu_type, capacity_type) under pod ``_other``. Returns the
    series to export and how many pods were folded."""
    if len(pods) <= max_pods:
        return pods, 0
    kept, rest = pods[:max_pods], pods[max_pods:]
    folded: dict[tuple[str, str, str], float] = {}
    for pod in rest:
        key = (pod.namespace, pod.gpu_type, pod.capacity_type)
        folded[key] = folded.get(key, 0.0) + pod.cost_usd
    others = [
        PodCost(namespace, OTHER_PODS, gpu_type, capacity_type, cost)
        for (namespace, gpu_type, capacity_type), cost in folded.items()
    ]
    return kept + others, len(rest)


class StoreCollector(Collector):
    """Reads one cluster's figures from the store on each ``collect()``."""

    def __init__(
        self,
        store: CostStore,
        cluster: str,
        max_pods: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.cluster, self.max_pods, self.clock = store, cluster, max_pods, clock

    def describe(self) -> Iterator[Metric]:
        # Registration asks for the names only; without this it would call collect() (a
        # database round trip) to learn them.
        return (_family(name) for name in METRICS)

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            with self.store.connection() as conn:
                snapshot = read_snapshot(conn, self.cluster)
        except Exception as error:  # a scrape must answer; the store's state is a metric
            log.warning("cannot read the cost store (%s): %s", self.store.describe(), error)
            yield _gauge("gpu_autoscaler_exporter_store_up", 0)
            yield _gauge("gpu_autoscaler_exporter_scrape_duration_seconds", _since(started))
            return
        yield from self._cost_families(snapshot)
        yield from self._health_families(snapshot)
        yield _gauge("gpu_autoscaler_exporter_store_up", 1)
        yield _gauge("gpu_autoscaler_exporter_scrape_duration_seconds", _since(started))

    def _cost_families(self, data: ExporterSnapshot) -> Iterator[Metric]:
        yield _gauge("gpu_autoscaler_total_cost_usd", data.total_cost_usd)
        yield _gauge("gpu_autoscaler_hourly_cost_rate_usd", data.hourly_cost_rate_usd)
        pods = _family("gpu_autoscaler_pod_cost_usd")
        series, folded = fold_pods(data.pods, self.max_pods)
        for pod in series:
            pods.add_metric([pod.namespace, pod.pod, pod.gpu_type, pod.capacity_type], pod.cost_usd)
        yield pods
        yield _gauge("gpu_autoscaler_exporter_pods_folded", folded)
        yield _gauge(
            "gpu_autoscaler_total_savings_usd", data.spot_savings_usd + data.sharing_savings_usd
        )
        savings = _family("gpu_autoscaler_savings_usd")
        savings.add_metric(["spot"], data.spot_savings_usd)
        savings.add_metric(["sharing"], data.sharing_savings_usd)
        yield savings
        budgets = _family("gpu_autoscaler_budget_percentage")
        for name, percentage in sorted(data.budgets.items()):
            budgets.add_metric([name], percentage)
        yield budgets

    def _health_families(self, data: ExporterSnapshot) -> Iterator[Metric]:
        yield _gauge("gpu_autoscaler_running_pods", len(data.pods))
        if data.latest_minute is None:  # nothing stored yet: no time to report
            return
        end = data.latest_minute.timestamp() + 60
        yield _gauge("gpu_autoscaler_pipeline_last_minute_timestamp_seconds", end)
        yield _gauge("gpu_autoscaler_pipeline_lag_seconds", max(0.0, self.clock() - end))
        yield _gauge("gpu_autoscaler_pipeline_estimated_price_share", data.estimated_price_share)


def _since(started: float) -> float:
    return time.perf_counter() - started
