"""Where usage comes from: the simulated cluster (default), a live Kubernetes API, or the
history Prometheus keeps of kube-state-metrics and the DCGM exporter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Literal

import dagster as dg
import numpy as np
from pydantic import Field

from gpu_cost_pipeline.core.kube_metrics import observe_from_metrics
from gpu_cost_pipeline.core.sharing import MigConvention
from gpu_cost_pipeline.core.simulation import SimulatedCluster
from gpu_cost_pipeline.core.usage import UsageSettings, parse_timestamp
from gpu_cost_pipeline.core.window_usage import ClusterObservation
from gpu_cost_pipeline.integrations.kubernetes import KubernetesResource
from gpu_cost_pipeline.integrations.prometheus import PrometheusResource

# How late a run may start and still count as observing "the minute just closed".
LIVE_WINDOW_SLACK = timedelta(minutes=2)


class SourceWindowError(ValueError):
    """The configured source cannot observe the requested window."""


@cache
def _simulated_cluster(gpu_pods: int, seed: int, region: str) -> SimulatedCluster:
    return SimulatedCluster(gpu_pods=gpu_pods, seed=seed, region=region)


class UsageSource(dg.ConfigurableResource):
    """Observes the cluster's GPU pods and nodes for a window."""

    source: Literal["simulated", "kubernetes", "prometheus"] = Field(default="simulated")
    cluster: str = Field(default="default", description="Name stored with every row.")
    default_provider: str = Field(default="aws", description="Provider for nodes that name none.")
    default_region: str = Field(default="us-east-1", description="Region for nodes without one.")
    mig_convention: Literal["compute", "memory"] = Field(default="compute")
    # No ge= bounds on int fields: dagster.EnvVar.int placeholders would fail them at load time.
    simulated_gpu_pods: int = Field(default=80, description="Simulated concurrent pods.")
    simulated_seed: int = 42
    chunk_minutes: int = Field(
        default=240, description="Minutes processed per chunk: bounds memory on long windows."
    )
    kubernetes: KubernetesResource = Field(default_factory=KubernetesResource)
    prometheus: PrometheusResource = Field(default_factory=PrometheusResource)

    def settings(self) -> UsageSettings:
        return UsageSettings(
            cluster=self.cluster,
            default_provider=self.default_provider,
            default_region=self.default_region,
            mig_convention=MigConvention(self.mig_convention),
        )

    def observe(
        self, window_start: datetime, window_end: datetime, now: datetime | None = None
    ) -> ClusterObservation:
        if self.source == "simulated":
            cluster = _simulated_cluster(
                self.simulated_gpu_pods, self.simulated_seed, self.default_region
            )
            return cluster.observe(window_start, window_end)
        if self.source == "prometheus":
            metrics = self.prometheus.read_window(window_start, window_end)
            return observe_from_metrics(metrics, window_start, window_end)
        return self._observe_live(window_start, window_end, now or datetime.now(UTC))

    @property
    def sees_the_past(self) -> bool:
        """Whether this source can serve windows that closed a while ago."""
        return self.source != "kubernetes"

    def _observe_live(
        self, window_start: datetime, window_end: datetime, now: datetime
    ) -> ClusterObservation:
        """The API shows the present only: it can serve the minute just closed, nothing older.
        Each pod counts from its start time (or the window start) to the window end."""
        if window_end - window_start > timedelta(minutes=1) or not (
            window_end <= now <= window_end + LIVE_WINDOW_SLACK
        ):
            raise SourceWindowError(
                f"the kubernetes source sees only the present and can serve only the minute just "
                f"closed; window {window_start:%Y-%m-%d %H:%M}–{window_end:%H:%M} UTC is not that "
                f"minute (now {now:%Y-%m-%d %H:%M:%S} UTC). History needs the Prometheus "
                "source, which reads past usage from kube-state-metrics (not in this version "
                "yet); keep the every-minute schedule on to record costs as they happen."
            )
        nodes = self.kubernetes.list_gpu_nodes()
        pods = self.kubernetes.list_running_gpu_pods()
        start_s, end_s = int(window_start.timestamp()), int(window_end.timestamp())
        starts = np.array(
            [
                max(start_s, parse_timestamp((pod.get("status") or {}).get("startTime")) or start_s)
                for pod in pods
            ],
            dtype=np.int64,
        )
        return ClusterObservation(
            nodes=nodes,
            pods=pods,
            pod_start_s=np.minimum(starts, end_s),
            pod_end_s=np.full(len(pods), end_s, dtype=np.int64),
        )
