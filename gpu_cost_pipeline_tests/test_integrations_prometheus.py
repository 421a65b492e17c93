"""The Prometheus source against a real Prometheus (Debian's package) holding a known history:
kube-state-metrics and DCGM exporter series of a simulated cluster, written as OpenMetrics and
imported with promtool. A backfill through `gpu-autoscaler materialize --from/--to` must bill
every pod its seconds, carry DCGM utilization, and give the same cost rows as the live
Kubernetes source for every minute the live source can see."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import requests

from gpu_cost_pipeline.core.costing import cost_rows
from gpu_cost_pipeline.core.kube_metrics import MissingSeriesError, observe_from_metrics
from gpu_cost_pipeline.core.simulation import SimulatedCluster
from gpu_cost_pipeline.core.window_usage import derive_observed_usage
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.integrations.kubernetes import KubernetesResource
from gpu_cost_pipeline.integrations.prometheus import (
    PrometheusError,
    PrometheusResource,
    _QueryTooLarge,
    last_seen_step_s,
)
from gpu_cost_pipeline.store import queries
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.k8s_api_server import FakeKubernetesApi
from gpu_cost_pipeline_tests.prometheus_server import (
    PodFate,
    PrometheusServer,
    history_server,
    utilization_percent,
)
from gpu_cost_pipeline_tests.test_code_location import REPO

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
END = START + timedelta(hours=2)
BACKFILL = (START + timedelta(minutes=30), START + timedelta(minutes=90))
SCRAPE_S = 15
CLUSTER = "history"


def has_dcgm(uid: str) -> bool:
    """About one pod in eight has no DCGM series (utilization must stay unknown)."""
    return int(uid[-1], 16) % 8 != 0


@dataclass
class History:
    cluster: SimulatedCluster
    fates: dict[str, tuple[int, PodFate]]
    prometheus: PrometheusServer
    folder: Path


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    folder = tmp_path_factory.mktemp("prometheus")
    cluster = SimulatedCluster(gpu_pods=24, seed=3)
    server, fates = history_server(folder, cluster, START, END, scrape_s=SCRAPE_S, dcgm=has_dcgm)
    with server:
        yield History(cluster, fates, server, folder)


def billed_end(fate: PodFate) -> int:
    """Completed pods end at their completion time; a pod deleted while running at the first
    scrape that no longer saw it."""
    return fate.end_s if fate.completed else math.ceil(fate.end_s / SCRAPE_S) * SCRAPE_S


@pytest.fixture(scope="module")
def backfilled(history: History, server_url: str) -> Iterator[str]:
    """The backfill as a user runs it: the CLI, configured by the environment only."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "prom_backfill" WITH (FORCE)')
        conn.execute('CREATE DATABASE "prom_backfill"')
    url = server_url.replace("/gpu_costs?", "/prom_backfill?")
    token = history.folder / "token"
    token.write_text("not-needed-by-this-prometheus\n")
    env = {
        **os.environ,
        "GPU_COST_SOURCE": "prometheus",
        "GPU_COST_PROMETHEUS_URL": history.prometheus.url,
        "GPU_COST_PROMETHEUS_BEARER_TOKEN_FILE": str(token),
        "GPU_COST_DATABASE_URL": url,
        "GPU_COST_CLUSTER": CLUSTER,
        "GPU_COST_PARTITION_START": "2026-11-01-00:00",
        "GPU_COST_CHUNK_MINUTES": "25",  # chunk edges inside the period must not show
    }
    start, end = BACKFILL
    done = subprocess.run(
        [
            *(sys.executable, "-m", "gpu_cost_pipeline.cli.main", "materialize"),
            *("--from", f"{start:%Y-%m-%d %H:%M}", "--to", f"{end:%Y-%m-%d %H:%M}"),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Progress: 60/60 minute partitions (100%)" in done.stdout
    assert "minutes/s" in done.stdout and "left" in done.stdout
    yield url


def stored(url: str, query: str, params: tuple = ()) -> pd.DataFrame:
    return CostStore(database_url=url).read_frame(query, params)


def test_backfill_bills_every_pod_its_seconds(history: History, backfilled: str):
    start_s, end_s = (int(moment.timestamp()) for moment in BACKFILL)
    expected = {}
    for uid, (pod_start, fate) in history.fates.items():
        seconds = min(billed_end(fate), end_s) - max(pod_start, start_s)
        if seconds > 0:
            expected[uid] = seconds
    rows = stored(
        backfilled,
        "SELECT pod_uid, sum(seconds)::bigint AS seconds, count(*) AS minutes FROM gpu_cost"
        " WHERE NOT is_idle GROUP BY pod_uid",
    )
    billed = dict(zip(rows["pod_uid"], rows["seconds"], strict=True))
    assert billed == expected
    # Pods starting or ending inside a minute: some rows have fewer than 60 seconds.
    partial = stored(backfilled, "SELECT count(*) AS n FROM gpu_cost WHERE seconds < 60")
    assert partial.loc[0, "n"] > 10
    checks = stored(
        backfilled,
        "SELECT min(minute) AS first, max(minute) AS last, count(DISTINCT minute) AS minutes"
        " FROM gpu_cost",
    )
    assert checks.loc[0, "minutes"] == 60


def test_each_pod_minute_carries_its_mean_dcgm_utilization(history: History, backfilled: str):
    rows = stored(
        backfilled,
        "SELECT pod_uid, minute, seconds, gpu_utilization FROM gpu_cost WHERE NOT is_idle",
    )
    measured = rows[rows["pod_uid"].map(has_dcgm)]
    unmeasured = rows[~rows["pod_uid"].map(has_dcgm)]
    assert len(unmeasured) > 0 and unmeasured["gpu_utilization"].isna().all()
    for row in measured.itertuples():
        pod_start, fate = history.fates[row.pod_uid]
        minute_s = int(row.minute.timestamp())
        scrapes = np.arange(minute_s, minute_s + 60, SCRAPE_S)
        scrapes = scrapes[(scrapes >= pod_start) & (scrapes < fate.end_s)]
        if scrapes.size == 0:  # ran seconds between two scrapes: nothing measured
            assert np.isnan(row.gpu_utilization)
            continue
        want = utilization_percent(row.pod_uid, scrapes).mean() / 100
        assert row.gpu_utilization == pytest.approx(want, abs=1e-9), row
    idle = stored(backfilled, "SELECT count(*) AS n FROM gpu_cost WHERE is_idle")
    assert idle.loc[0, "n"] > 0
    # Node-minutes: the mean over the node's GPUs, idle ones (0 %) included.
    nodes = stored(
        backfilled,
        "SELECT count(gpu_utilization) AS known, count(*) AS n, min(gpu_utilization) AS low,"
        " max(gpu_utilization) AS high FROM gpu_node_usage",
    ).iloc[0]
    assert nodes["known"] == nodes["n"] and nodes["low"] == 0 and 0.5 < nodes["high"] <= 1
    rollup = stored(
        backfilled,
        "SELECT sum(measured_gpu_hours) AS measured, sum(used_gpu_hours) AS used,"
        " sum(unused_cost_usd) AS unused, sum(cost_usd) AS cost FROM gpu_cost_hourly",
    ).iloc[0]
    assert 0 < rollup["used"] < rollup["measured"] and 0 < rollup["unused"] < rollup["cost"]


def running_at(cluster: SimulatedCluster, fates: dict, moment_s: int) -> list[dict]:
    """The pods the API lists as Running at ``moment_s``."""
    moment = datetime.fromtimestamp(moment_s, UTC)
    seen = cluster.observe(moment - timedelta(seconds=1), moment + timedelta(seconds=1))
    pods = []
    for pod in seen.pods:
        start, fate = fates[pod["metadata"]["uid"]]
        if start <= moment_s < fate.end_s:
            pods.append(pod)
    return pods


def test_each_minute_matches_the_kubernetes_source(
    history: History, backfilled: str, tmp_path: Path
):
    """Minute by minute: what the live source sees at the end of the minute gives the cost rows
    the Prometheus backfill stored; the only extra rows are pods that ended inside the minute,
    which the live source cannot see."""
    store = CostStore(database_url=backfilled)
    compared = 0
    with FakeKubernetesApi() as api:
        api.nodes = history.cluster.nodes
        live = UsageSource(
            source="kubernetes",
            cluster=CLUSTER,
            kubernetes=KubernetesResource(kubeconfig=str(api.write_kubeconfig(tmp_path / "kc"))),
        )
        for offset in range(0, 60, 3):
            minute = BACKFILL[0] + timedelta(minutes=offset)
            end = minute + timedelta(minutes=1)
            end_s = int(end.timestamp())
            api.pods = running_at(history.cluster, history.fates, end_s)
            seen = live.observe(minute, end, now=end + timedelta(seconds=5))
            usage = derive_observed_usage(seen, minute, end, live.settings())
            with store.connection() as conn:
                prices = queries.price_points(conn, CLUSTER, minute, end)
                from_prometheus = queries_cost(conn, minute)
            from_live = cost_rows(usage.pods, usage.nodes, prices)
            live_pods = from_live[~from_live["is_idle"]].set_index("pod_uid")
            prom_pods = from_prometheus[~from_prometheus["is_idle"]].set_index("pod_uid")
            ended_inside = {
                uid
                for uid, (_, fate) in history.fates.items()
                if int(minute.timestamp()) < fate.end_s <= end_s and uid in prom_pods.index
            }
            assert set(prom_pods.index) - set(live_pods.index) == ended_inside
            assert set(live_pods.index) <= set(prom_pods.index)
            columns = ["node", "team", "gpu_share", "seconds", "price_per_gpu_hour", "cost_usd"]
            pd.testing.assert_frame_equal(
                live_pods.loc[sorted(live_pods.index), columns],
                prom_pods.loc[sorted(live_pods.index), columns],
                check_dtype=False,
                rtol=1e-12,
            )
            # Pods + idle: the same node cost either way.
            by_node = [f.groupby("node")["cost_usd"].sum() for f in (from_live, from_prometheus)]
            pd.testing.assert_series_equal(*by_node, check_dtype=False, rtol=1e-12)
            compared += len(live_pods)
    assert compared > 100


def queries_cost(conn, minute: datetime) -> pd.DataFrame:
    from gpu_cost_pipeline.store.cost_store import read_frame

    return read_frame(
        conn,
        "SELECT * FROM gpu_cost WHERE cluster = %s AND minute = %s",
        (CLUSTER, minute),
    )


def test_a_window_prometheus_has_no_data_for_is_a_clear_error(history: History):
    source = PrometheusResource(url=history.prometheus.url, attempts=1)
    with pytest.raises(MissingSeriesError) as raised:
        source.read_window(START - timedelta(days=20), START - timedelta(days=19))
    message = str(raised.value)
    assert "kube_node_info" in message and "retention" in message
    assert history.prometheus.url in message


def test_with_a_60_s_scrape_last_sightings_are_found_at_a_60_s_step(tmp_path: Path):
    """The last-sighting subquery steps at the scrape interval (cheaper than 15 s) and still
    ends every pod deleted while running at the first scrape that no longer saw it. (Blocks
    imported by promtool carry no staleness markers, so what a too coarse step would lose in a
    live Prometheus cannot show here: the step itself is asserted.)"""
    start, end = START, START + timedelta(hours=1)
    # History goes on past the window, as it does in a real Prometheus.
    server, fates = history_server(
        tmp_path,
        SimulatedCluster(gpu_pods=10, seed=5),
        start,
        end + timedelta(minutes=10),
        scrape_s=60,
    )
    with server:
        metrics = PrometheusResource(url=server.url).read_window(start, end)
    assert last_seen_step_s(metrics.samples_per_series, metrics.covered_seconds) == 60
    observed = observe_from_metrics(metrics, start, end)
    ends = {
        pod["metadata"]["uid"]: int(e)
        for pod, e in zip(observed.pods, observed.pod_end_s, strict=True)
    }
    end_s = int(end.timestamp())
    expected = {
        uid: min(fate.end_s if fate.completed else math.ceil(fate.end_s / 60) * 60, end_s)
        for uid, (_, fate) in fates.items()
        if uid in ends
    }
    assert ends == expected
    assert any(not fate.completed and fate.end_s < end_s for _, fate in fates.values())


@pytest.mark.parametrize(("scrape_s", "step_s"), [(5, 15), (15, 15), (30, 30), (60, 60), (120, 60)])
def test_the_last_sighting_step_is_the_scrape_interval_within_15_to_60_s(scrape_s, step_s):
    window_s = 4 * 3600
    samples = pd.DataFrame({"uid": ["a", "b"], "value": [window_s // scrape_s, 3]})
    assert last_seen_step_s(samples, window_s) == step_s


def test_queries_prometheus_refuses_as_too_large_are_split(history: History, tmp_path: Path):
    """A server with a tiny --query.max-samples refuses whole-window queries: the source
    splits them in time and gets the same answer."""
    copy = tmp_path / "tsdb"
    shutil.copytree(history.prometheus.tsdb, copy, ignore=shutil.ignore_patterns("lock"))
    window = (START + timedelta(minutes=40), START + timedelta(minutes=70))
    whole = PrometheusResource(url=history.prometheus.url).read_window(*window)
    with PrometheusServer(copy, extra_args=["--query.max-samples=300"]) as small:
        limited = PrometheusResource(url=small.url)
        with requests.Session() as session, pytest.raises(_QueryTooLarge):
            limited.instant(
                "max_over_time(kube_pod_status_phase[1800s])", window[1], session
            )  # what the source asks first is refused whole
        split = limited.read_window(*window)
    for name in ("pod_start", "pod_completion", "pod_last_seen", "node_capacity"):
        left, right = getattr(whole, name), getattr(split, name)
        key = [c for c in left.columns if c != "value"]
        pd.testing.assert_frame_equal(
            left.sort_values(key).reset_index(drop=True)[sorted(left.columns)],
            right.sort_values(key).reset_index(drop=True)[sorted(left.columns)],
            check_dtype=False,
        )


class _Gate(BaseHTTPRequestHandler):
    """In front of Prometheus, as an auth proxy would be: 503 for the first ``failures``
    requests, 401 without the bearer token, else forwarded."""

    failures = 0
    token = ""
    upstream = ""
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(self.headers.get("Authorization", ""))
        if type(self).failures > 0:
            type(self).failures -= 1
            self._answer(503, b'{"status":"error","errorType":"unavailable","error":"busy"}')
            return
        if self.headers.get("Authorization") != f"Bearer {type(self).token}":
            self._answer(401, b"Unauthorized")
            return
        forwarded = urllib.request.Request(f"{type(self).upstream}{self.path}", data=body)
        forwarded.add_header("Content-Type", self.headers.get("Content-Type", ""))
        with urllib.request.urlopen(forwarded, timeout=30) as response:
            self._answer(response.status, response.read())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gate(history: History) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gate)
    _Gate.upstream, _Gate.seen = history.prometheus.url, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_503s_are_retried_and_a_token_file_is_sent(gate: str, tmp_path: Path):
    _Gate.failures, _Gate.token = 2, "t0ken-from-a-secret"
    (tmp_path / "token").write_text("t0ken-from-a-secret\n")
    source = PrometheusResource(
        url=gate, bearer_token_file=str(tmp_path / "token"), backoff_seconds=0.05
    )
    window = (START + timedelta(minutes=40), START + timedelta(minutes=45))
    metrics = source.read_window(*window)
    assert not metrics.gpu_requests.empty
    assert set(_Gate.seen) == {"Bearer t0ken-from-a-secret"}


def test_a_prometheus_that_keeps_answering_503_is_a_clear_error(gate: str):
    _Gate.failures, _Gate.token = 100, "secret-token-value"
    source = PrometheusResource(
        url=gate, bearer_token="secret-token-value", attempts=3, backoff_seconds=0.05
    )
    with pytest.raises(PrometheusError) as raised:
        source.read_window(START, START + timedelta(minutes=5))
    message = str(raised.value)
    assert "did not answer" in message and "after 3 attempts" in message and "503" in message
    assert gate in message and "secret-token-value" not in message
    assert len(_Gate.seen) == 3


def test_a_wrong_token_is_refused_clearly(gate: str):
    _Gate.failures, _Gate.token = 0, "right"
    source = PrometheusResource(url=gate, bearer_token="wrong-token", attempts=3)
    with pytest.raises(PrometheusError, match=r"refused .* HTTP 401") as raised:
        source.read_window(START, START + timedelta(minutes=5))
    assert "wrong-token" not in str(raised.value) and len(_Gate.seen) == 1


def test_no_label_allow_list_and_basic_auth(tmp_path: Path):
    """kube-state-metrics without --metric-labels-allowlist: a clear error naming the flag;
    Prometheus's own basic auth (web config) with a password from a file."""
    import crypt  # bcrypt through libxcrypt, for Prometheus's web config

    hashed = crypt.crypt("pw-from-secret", "$2b$10$" + "abcdefghijklmnopqrstuv")
    server, _ = history_server(
        tmp_path,
        SimulatedCluster(gpu_pods=4, seed=5),
        START,
        START + timedelta(minutes=30),
        allow_labels=False,
        dcgm=False,
    )
    server.basic_auth = ("costs", hashed)
    window = (START + timedelta(minutes=10), START + timedelta(minutes=20))
    (tmp_path / "password").write_text("pw-from-secret")
    with server:
        wrong = PrometheusResource(url=server.url, username="costs", password="nope")
        with pytest.raises(PrometheusError, match="HTTP 401"):
            wrong.read_window(*window)
        right = PrometheusResource(
            url=server.url, username="costs", password_file=str(tmp_path / "password")
        )
        with pytest.raises(MissingSeriesError, match="--metric-labels-allowlist=nodes="):
            UsageSource(source="prometheus", prometheus=right).observe(*window)


def cost_command(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_COST_DATABASE_URL": url, "GPU_COST_CLUSTER": CLUSTER}
    return subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", "cost", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cost_detailed_shows_allocated_used_and_idle_per_pod_team_and_node(backfilled: str):
    """Whole hours (the per-pod hourly rollup) agree with the minute rows; pods DCGM never saw
    are unknown, not 0 % and not 100 %."""
    done = cost_command(
        backfilled, "--from", "2026-11-20 08:00", "--to", "2026-11-20 10:00", "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    usage = json.loads(done.stdout)["utilization"]
    minutes = stored(
        backfilled,
        "SELECT pod_uid, sum(cost_usd) AS cost, sum(CASE WHEN gpu_utilization IS NULL THEN 0"
        " ELSE gpu_share * seconds END) / 3600.0 AS measured, sum(coalesce(gpu_utilization, 0)"
        " * gpu_share * seconds) / 3600.0 AS used, sum(CASE WHEN is_idle THEN cost_usd ELSE"
        " coalesce(cost_usd * (1 - gpu_utilization), 0) END) AS unused FROM gpu_cost"
        " GROUP BY pod_uid",
    ).set_index("pod_uid")
    pods = {row["pod_uid"]: row for row in usage["by_pod"]}
    assert set(pods) == set(minutes.index)
    for uid, want in minutes.iterrows():
        row = pods[uid]
        assert row["cost_usd"] == pytest.approx(want["cost"], rel=1e-9)
        assert row["unused_cost_usd"] == pytest.approx(want["unused"], rel=1e-9, abs=1e-12)
        if want["measured"] > 0:
            assert row["utilization"] == pytest.approx(want["used"] / want["measured"], rel=1e-9)
        else:
            assert row["utilization"] is None
    never_measured = [u for u in pods if not u.startswith("idle:") and not has_dcgm(u)]
    assert never_measured and all(pods[u]["utilization"] is None for u in never_measured)
    idle = [row for uid, row in pods.items() if uid.startswith("idle:")]
    assert idle and all(r["idle_gpu_hours"] > 0 and r["allocated_gpu_hours"] == 0 for r in idle)
    nodes = usage["by_node"]
    assert sum(n["unused_cost_usd"] for n in nodes) == pytest.approx(minutes["unused"].sum())
    assert sum(t["cost_usd"] for t in usage["by_team"]) == pytest.approx(minutes["cost"].sum())
    # The table, over a period with partial hours only (read from the minute rows).
    done = cost_command(
        backfilled, "--from", "2026-11-20 08:40", "--to", "2026-11-20 09:20", "--format", "detailed"
    )
    assert done.returncode == 0, done.stderr
    for title in ("by team", "by node", "by pod"):
        assert f"Allocated vs used vs idle, {title}" in done.stdout
    assert "unknown" in done.stdout and "(idle GPUs)" in done.stdout
