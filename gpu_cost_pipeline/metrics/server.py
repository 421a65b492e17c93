"""``gpu-autoscaler metrics``: the Prometheus exporter, serving one cluster's figures from the
store on every scrape."""

from __future__ import annotations

import argparse
import sys

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from gpu_cost_pipeline.metrics.collector import StoreCollector
from gpu_cost_pipeline.settings import Settings, load_settings
from gpu_cost_pipeline.store.cost_store import CostStore


def registry_for(settings: Settings) -> CollectorRegistry:
    """A registry holding only the store collector (no process metrics of this Python)."""
    registry = CollectorRegistry()
    registry.register(
        StoreCollector(
            CostStore.from_settings(settings), settings.cluster, settings.metrics_max_pods
        )
    )
    return registry


def run_metrics(args: argparse.Namespace) -> int:
    settings = load_settings()
    registry = registry_for(settings)
    if args.once:  # one scrape on stdout: what Prometheus would get now
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    host, port = settings.metrics_address
    server, thread = start_http_server(port, addr=host, registry=registry)
    print(
        f"Serving GPU cost metrics of cluster {settings.cluster!r} on "
        f"http://{host}:{server.server_port}/metrics",
        flush=True,
    )
    thread.join()  # serve until the process is stopped
    return 0
