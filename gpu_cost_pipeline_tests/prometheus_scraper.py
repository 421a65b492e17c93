"""A real Prometheus (prometheus_server.PrometheusServer) that scrapes targets on 127.0.0.1
every second, in a temporary folder, and a client for its PromQL HTTP API.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpu_cost_pipeline_tests.prometheus_server import PrometheusServer

SCRAPE_INTERVAL_S = 1


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as error:  # 400/422: Prometheus says what is wrong
            raise AssertionError(f"Prometheus {path} {params}: {error.read().decode()}") from None
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expression: str, at: float | None = None) -> list[dict]:
        """Instant query: the result vector (or a one-element list for a scalar)."""
        data = self.api("query", query=expression, time=at)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expression: str) -> float:
        """The single value of an expression that must give exactly one series."""
        result = self.query(expression)
        assert len(result) == 1, f"{expression}: {len(result)} series"
        return float(result[0]["value"][1])

    def query_range(self, expression: str, start: float, end: float, step: str) -> list[dict]:
        return self.api("query_range", query=expression, start=start, end=end, step=step)["result"]

    def wait_for_scrapes(self, job: str, count: int = 2, timeout: float = 60) -> None:
        """Until the job's targets are up and have been scraped ``count`` times more."""
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            up = self.query(f'count_over_time(up{{job="{job}"}}[1h])')
            healthy = self.query(f'up{{job="{job}"}} == 1')
            scrapes = int(float(up[0]["value"][1])) if up else 0
            if healthy and seen is None:
                seen = scrapes
            if healthy and seen is not None and scrapes >= seen + count:
                return
            time.sleep(0.25)
        targets = self.api("targets")["activeTargets"]
        raise AssertionError(f"job {job} not scraped in time: {targets}")


@contextmanager
def prometheus_scraping(
    job: str, target: str, labels: Mapping[str, str] | None = None
) -> Iterator[Prometheus]:
    """Start Prometheus scraping ``target`` (host:port) as ``job``; stop it on exit."""
    folder = Path(tempfile.mkdtemp(prefix="gpu-cost-prometheus-"))
    scrape = {
        "job_name": job,
        "static_configs": [{"targets": [target], "labels": dict(labels or {})}],
    }
    try:
        with PrometheusServer(
            folder / "data", scrape_configs=[scrape], scrape_interval=f"{SCRAPE_INTERVAL_S}s"
        ) as server:
            yield Prometheus(server.url)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
