"""The pipeline's one way into Prometheus: kube-state-metrics and DCGM exporter history.

``PrometheusResource.read_window(start, end)`` runs the window's queries over the HTTP API and
returns a ``MetricsWindow`` (one frame per query) for ``core.kube_metrics`` to turn into nodes
and pods. Most questions are instant queries over the whole window (``max_over_time(x[W])``
evaluated just before the window's end: one value per series, whatever the window's length);
utilization is a range query at one point per minute. A query Prometheus refuses as too large
(its 11,000 points per series, or ``--query.max-samples``) is split in time and the pieces
combined, so a day of a large cluster fits whatever the server's limits.

Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential
back-off. Error messages name the server (scheme, host, port: never credentials) and the query.
Credentials: a bearer token or basic auth, each from a value (a Secret in the environment) or
a file (a mounted Secret, re-read on every window so rotated tokens are picked up).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import numpy as np
import pandas as pd
import requests
from pydantic import Field

from gpu_cost_pipeline.core.kube_metrics import (
    MetricsWindow,
    MissingSeriesError,
    scrape_interval,
)

__all__ = ["MissingSeriesError", "PrometheusError", "PrometheusResource"]

GPU_RESOURCE_MATCH = 'resource=~"nvidia_com_gpu|nvidia_com_gpu_shared|nvidia_com_mig_.*"'
MAX_POINTS_PER_SERIES = 11_000  # Prometheus refuses range queries with more
RANGE = "__RANGE__"  # where a window query takes its range
EVALUATION_OFFSET = timedelta(milliseconds=1)  # evaluate at end - 1 ms: the window is [start, end)
# Window questions also look a minute past the window's end: a pod that started in the last
# scrape interval is first seen Running after it, and a pod seen after the end ran through it.
LOOKAHEAD = timedelta(minutes=1)
MIN_LAST_SEEN_STEP_S, MAX_LAST_SEEN_STEP_S = 15, 60  # see last_seen_step_s
_RETRY_STATUSES = {429, 500, 502, 503, 504}
_TOO_LARGE = ("too many samples", "exceeded maximum resolution", "maximum number of samples")


class PrometheusError(RuntimeError):
    """Prometheus could not answer; the message names the server and the query, never secrets."""


def server_label(url: str) -> str:
    """scheme://host:port of a URL, without user info, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme or 'http'}://{host}{port}"


def _read_secret_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise PrometheusError(
            f"cannot read the Prometheus {what} file {path}: {error.strerror}"
        ) from None


class PrometheusResource(dg.ConfigurableResource):
    """Prometheus HTTP API client (``/api/v1/query`` and ``/api/v1/query_range``)."""

    url: str = Field(default="", description="Base URL, e.g. http://prometheus:9090.")
    bearer_token: str | None = Field(default=None, description="Bearer token (a secret).")
    bearer_token_file: str | None = Field(default=None, description="File holding the token.")
    username: str | None = Field(default=None, description="Basic auth user.")
    password: str | None = Field(default=None, description="Basic auth password (a secret).")
    password_file: str | None = Field(default=None, description="File holding the password.")
    selector: str = Field(
        default="",
        description='Extra label matchers for every series, e.g. cluster="prod" (Thanos, Mimir).',
    )
    timeout_seconds: float = 120.0
    attempts: int = Field(default=5, description="Tries per request before giving up.")
    backoff_seconds: float = Field(default=1.0, description="First retry delay; doubles.")

    # -- HTTP --------------------------------------------------------------------------------

    def _auth(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        token = self.bearer_token or (
            _read_secret_file(self.bearer_token_file, "bearer token")
            if self.bearer_token_file
            else None
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        password = self.password or (
            _read_secret_file(self.password_file, "password") if self.password_file else None
        )
        basic = (self.username, password or "") if self.username else None
        return headers, basic

    def _api(self, endpoint: str, params: dict[str, str], session: requests.Session) -> Any:
        """POST one API call; returns ``data``. Retries what may pass, raises the rest."""
        if not self.url:
            raise PrometheusError(
                "GPU_COST_PROMETHEUS_URL is not set: the prometheus source needs the base URL "
                "of the Prometheus that scrapes kube-state-metrics and the DCGM exporter"
            )
        target = f"{self.url.rstrip('/')}/api/v1/{endpoint}"
        where = f"Prometheus at {server_label(self.url)}"
        what = f"{endpoint} {params.get('query', '')[:160]!r}"
        delay = self.backoff_seconds
        problem = ""
        for attempt in range(1, max(1, self.attempts) + 1):
            try:
                response = session.post(target, data=params, timeout=self.timeout_seconds)
            except requests.RequestException as error:
                problem = f"{type(error).__name__}"  # str(error) may echo the URL's user info
            else:
                body = _json(response)
                if response.status_code == 200 and body.get("status") == "success":
                    return body.get("data") or {}
                message = str(body.get("error") or response.reason or "").strip()
                problem = f"HTTP {response.status_code} {message}".strip()
                if response.status_code in (401, 403):
                    raise PrometheusError(
                        f"{where} refused {what}: {problem} (check the bearer token or "
                        "basic auth settings)"
                    )
                if any(marker in message for marker in _TOO_LARGE):
                    raise _QueryTooLarge(problem)
                if response.status_code not in _RETRY_STATUSES:
                    raise PrometheusError(f"{where} rejected {what}: {problem}")
            if attempt < self.attempts:
                time.sleep(delay)
                delay *= 2
        raise PrometheusError(
            f"{where} did not answer {what} after {self.attempts} attempts: {problem}"
        )

    def _session(self) -> requests.Session:
        session = requests.Session()
        headers, basic = self._auth()
        session.headers.update(headers)
        session.auth = basic
        return session

    # -- queries -----------------------------------------------------------------------------

    def _match(self, *matchers: str) -> str:
        """A selector body: the given matchers plus the configured ones."""
        return "{" + ",".join(m for m in (*matchers, self.selector) if m) + "}"

    def instant(self, query: str, at: datetime, session: requests.Session) -> pd.DataFrame:
        data = self._api("query", {"query": query, "time": f"{at.timestamp():.3f}"}, session)
        rows = [
            {**item.get("metric", {}), "value": float(item["value"][1])}
            for item in data.get("result", [])
        ]
        return pd.DataFrame(rows)

    def over_window(
        self,
        template: str,
        start: datetime,
        end: datetime,
        combine: str,
        session: requests.Session,
    ) -> pd.DataFrame:
        """``template`` with ``__RANGE__`` replaced by the window, evaluated just before its end;
        one row per series. Too large for the server: halves, combined with ``combine``
        (``max``, ``min`` or ``sum``) per series."""
        seconds = int((end - start).total_seconds())
        try:
            return self.instant(
                template.replace(RANGE, f"{seconds}s"), end - EVALUATION_OFFSET, session
            )
        except _QueryTooLarge:
            if seconds <= 60:
                raise PrometheusError(
                    f"Prometheus at {server_label(self.url)} refuses even one minute of "
                    f"{template[:120]!r} as too large; raise its --query.max-samples"
                ) from None
        middle = start + timedelta(minutes=seconds // 120)
        halves = [
            self.over_window(template, start, middle, combine, session),
            self.over_window(template, middle, end, combine, session),
        ]
        frame = pd.concat([h for h in halves if not h.empty], ignore_index=True)
        if frame.empty:
            return frame
        labels = [c for c in frame.columns if c != "value"]
        return (
            frame.fillna({c: "" for c in labels})
            .groupby(labels, as_index=False)["value"]
            .agg(combine)
        )

    def per_minute(
        self, query: str, start: datetime, end: datetime, session: requests.Session
    ) -> pd.DataFrame:
        """A range query at one point per minute of [start, end), each just before the minute's
        end (so ``x[60s]`` covers that minute); rows: labels, ``minute_s``, ``value``. Split
        in time so no piece passes Prometheus's points-per-series limit."""
        minutes = int((end - start).total_seconds() // 60)
        pieces: list[pd.DataFrame] = []
        first = 0
        step = min(minutes, MAX_POINTS_PER_SERIES - 1)
        while first < minutes:
            count = min(step, minutes - first)
            try:
                pieces.append(self._range_piece(query, start, first, count, session))
            except _QueryTooLarge:
                if count <= 1:
                    raise PrometheusError(
                        f"Prometheus at {server_label(self.url)} refuses one minute of "
                        f"{query[:120]!r} as too large; raise its --query.max-samples"
                    ) from None
                step = max(1, count // 2)
                continue
            first += count
        pieces = [p for p in pieces if not p.empty]
        return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()

    def _range_piece(
        self, query: str, start: datetime, first: int, count: int, session: requests.Session
    ) -> pd.DataFrame:
        piece_start = start + timedelta(minutes=first + 1) - EVALUATION_OFFSET
        piece_end = piece_start + timedelta(minutes=count - 1)
        params = {
            "query": query,
            "start": f"{piece_start.timestamp():.3f}",
            "end": f"{piece_end.timestamp():.3f}",
            "step": "60",
        }
        series = [
            item
            for item in self._api("query_range", params, session).get("result", [])
            if item.get("values")
        ]
        if not series:
            return pd.DataFrame()
        # One array per series (NumPy parses the value strings), labels repeated per point:
        # a day of per-pod utilization is millions of points.
        points = np.concatenate([np.asarray(item["values"], dtype=np.float64) for item in series])
        counts = [len(item["values"]) for item in series]
        labels = pd.DataFrame([item.get("metric", {}) for item in series])
        frame = labels.loc[labels.index.repeat(counts)].reset_index(drop=True)
        frame["minute_s"] = (points[:, 0] + EVALUATION_OFFSET.total_seconds()).astype(np.int64) - 60
        frame["value"] = points[:, 1]
        return frame

    # -- the window --------------------------------------------------------------------------

    def read_window(self, start: datetime, end: datetime) -> MetricsWindow:
        """Every series the Prometheus source needs for [start, end)."""
        gpu = self._match(GPU_RESOURCE_MATCH)
        every = self._match()
        gpu_uids = (
            f"max by (uid) (max_over_time(kube_pod_container_resource_requests{gpu}[__RANGE__]))"
        )

        reach = end + LOOKAHEAD
        with self._session() as session:

            def window(template: str, combine: str = "max") -> pd.DataFrame:
                return self.over_window(template, start, reach, combine, session)

            def of_gpu_pods(metric: str, matchers: str = every) -> pd.DataFrame:
                return window(
                    f"max_over_time({metric}{matchers}[__RANGE__]) and on(uid) {gpu_uids}"
                )

            node_info = window(f"max_over_time(kube_node_info{every}[__RANGE__])")
            if node_info.empty:
                raise MissingSeriesError(
                    f"Prometheus at {server_label(self.url)} has no kube-state-metrics series "
                    f"(kube_node_info{every}) between {start:%Y-%m-%d %H:%M} and "
                    f"{end:%Y-%m-%d %H:%M} UTC: check that it scrapes kube-state-metrics, that "
                    "its retention reaches back that far, and GPU_COST_PROMETHEUS_SELECTOR"
                )
            requests_frame = window(
                f"max_over_time(kube_pod_container_resource_requests{gpu}[__RANGE__])"
            )
            init = window(
                f"max_over_time(kube_pod_init_container_resource_requests{gpu}[__RANGE__])"
            )
            if not init.empty:
                requests_frame = pd.concat(
                    [requests_frame, init.assign(init="true")], ignore_index=True
                )
            running = self._running_gpu_pods(window, gpu_uids)
            samples_per_series = window(
                f"count_over_time(kube_pod_container_resource_requests{gpu}[__RANGE__])", "sum"
            )
            step_s = last_seen_step_s(samples_per_series, (reach - start).total_seconds())
            metrics = MetricsWindow(
                gpu_requests=requests_frame,
                running=running,
                pod_start=of_gpu_pods("kube_pod_start_time"),
                pod_completion=of_gpu_pods("kube_pod_completion_time"),
                pod_last_seen=self._last_seen(
                    f"kube_pod_container_resource_requests{gpu}",
                    "uid",
                    start,
                    reach,
                    step_s,
                    session,
                ),
                pod_labels=of_gpu_pods("kube_pod_labels"),
                pod_annotations=of_gpu_pods("kube_pod_annotations"),
                node_labels=window(f"max_over_time(kube_node_labels{every}[__RANGE__])"),
                node_capacity=window(f"max_over_time(kube_node_status_capacity{gpu}[__RANGE__])"),
                node_allocatable=window(
                    f"max_over_time(kube_node_status_allocatable{gpu}[__RANGE__])"
                ),
                node_info=node_info,
                node_created=window(f"max_over_time(kube_node_created{every}[__RANGE__])"),
                node_last_seen=self._last_seen(
                    f"kube_node_info{every}", "node", start, reach, step_s, session
                ),
                samples_per_series=samples_per_series,
                pod_utilization=self._utilization(
                    "namespace, pod, exported_namespace, exported_pod", start, end, session
                ),
                node_utilization=self._utilization("Hostname, hostname", start, end, session),
                covered_seconds=(reach - start).total_seconds(),
            )
        self._check_pods(metrics, start, end)
        return metrics

    def _running_gpu_pods(self, window: Callable[..., pd.DataFrame], gpu_uids: str) -> pd.DataFrame:
        phase = self._match('phase="Running"')
        return window(
            f"max_over_time(kube_pod_status_phase{phase}[__RANGE__]) > 0 and on(uid) {gpu_uids}"
        )

    def _last_seen(
        self,
        selector: str,
        key: str,
        start: datetime,
        end: datetime,
        step_s: int,
        session: requests.Session,
    ) -> pd.DataFrame:
        """Per series, the time of its last sample in the window: ``timestamp()`` of a plain
        selector is the sample's own time. A subquery finds series that vanished early; an
        instant query the latest sample of those still there (finer than any subquery step)."""
        template = f"max by ({key}) (max_over_time(timestamp({selector})[__RANGE__:{step_s}s]))"
        earlier = self.over_window(template, start, end, "max", session)
        latest = self.instant(
            f"max by ({key}) (timestamp({selector}))", end - EVALUATION_OFFSET, session
        )
        frame = pd.concat([f for f in (earlier, latest) if not f.empty], ignore_index=True)
        if frame.empty:
            return pd.DataFrame(columns=[key, "value"])
        frame = frame[frame["value"] >= start.timestamp()]
        return frame.groupby(key, as_index=False)["value"].max()

    def _utilization(
        self, by: str, start: datetime, end: datetime, session: requests.Session
    ) -> pd.DataFrame:
        """Mean utilization (0–1) per group and minute: DCGM_FI_DEV_GPU_UTIL (percent), and
        DCGM_FI_PROF_GR_ENGINE_ACTIVE (a ratio; the one MIG instances report) where the first
        is absent."""
        every = self._match()
        device = self.per_minute(
            f"avg by ({by}) (avg_over_time(DCGM_FI_DEV_GPU_UTIL{every}[60s])) / 100",
            start,
            end,
            session,
        )
        engine = self.per_minute(
            f"avg by ({by}) (avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE{every}[60s]))"
            f" unless on({by}) avg by ({by}) (DCGM_FI_DEV_GPU_UTIL{every})",
            start,
            end,
            session,
        )
        frames = [f for f in (device, engine) if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _check_pods(self, metrics: MetricsWindow, start: datetime, end: datetime) -> None:
        if not metrics.gpu_requests.empty and metrics.pod_start.empty and not metrics.running.empty:
            raise MissingSeriesError(
                f"Prometheus at {server_label(self.url)} has GPU requests but no "
                f"kube_pod_start_time between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} "
                "UTC: kube-state-metrics must export the pods resource's default metrics"
            )


def last_seen_step_s(samples_per_series: pd.DataFrame, window_seconds: float) -> int:
    """The subquery step that finds each series' last sample: the scrape interval, 15–60 s.

    The subquery costs Prometheus one evaluation per series per step (a 15 s step was half of a
    Prometheus backfill's time). A step of one scrape interval still lands a point after each
    series' last sample and before the staleness marker of the next scrape, so the time found
    is the sample's own; the pipeline's lifetimes are only that precise anyway (a pod ends at
    the first scrape that no longer saw it)."""
    interval = scrape_interval(samples_per_series, window_seconds)
    return int(min(max(interval, MIN_LAST_SEEN_STEP_S), MAX_LAST_SEEN_STEP_S))


class _QueryTooLarge(Exception):
    """Prometheus refused a query as too large: split it."""


def _json(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
