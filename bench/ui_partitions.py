"""ui_partitions: how fast the Dagster UI's partition pages answer, as the GraphQL requests the
UI sends to a running ``dagster-webserver`` (no browser: the requests the pages wait for).

Three designs, each on the same Dagster instance (SQLite, as ``make dev``), seeded before the
timer (see ``seed``) with every minute of the last ``FULL_DAYS`` days materialized and, before
them, a stretch of materialized minutes per day since the 1st of the previous month (as schedule
runs with a daily outage leave them), and the older days of ``gpu_cost_history``. What the
partition pages cost (measured with cProfile): listing every key (~0.13 ms a key), and per
stretch of materialized partitions ~0.1 s (Dagster finds each stretch's first and last key by
stepping the cron schedule): both grow with the reach. The first request after the partitions
definition changed also checks every materialized key against it (py-spy: ~12 ms a key).

- ``minute_85k``: minute partitions from the 1st of the previous month (~85,000 keys), the
  design before ``GPU_COST_MINUTE_PARTITION_DAYS``;
- ``minute_3d``: minute partitions reaching back 3 days (the default, ~5,000 keys;
  ``--reach-days N`` compares other reaches instead of the two minute designs);
- ``history_days``: the day partitions of ``gpu_cost_history`` (about 60 keys).

Per design, for the asset's pages: ``partitions_tab`` (PartitionHealthQuery: every partition
key plus the status ranges), ``launch_dialog`` (LaunchAssetLoaderQuery, then the same
PartitionHealthQuery the partition picker draws), ``events_tab`` (RecentAssetEventsQuery,
LatestAssetPartitionsQuery, AssetPartitionEventsQuery for those partitions). The query texts
are the UI's own (dagster-webserver 1.13's bundle), with fragments reduced to the fields that
cost time on the server. Each page: the first (cold) request sequence and the median of three
more; target ≤ 3 s. Before them, one request for the asset graph (what the UI shows first)
warms the webserver up, so "first request" is the partition page's own cold cost (the asset
status cache being built for this partitions definition: after every code location load whose
minute reach moved).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from bench._common import Stopwatch, Target, clean_environment, progress, report
from gpu_cost_pipeline.settings import PARTITION_FORMAT, first_of_previous_month

ROOT = Path(__file__).resolve().parent.parent
PAGE_TARGET = Target("<=", 3, "s")
REPEATS = 3
FULL_DAYS = 4  # days of every-minute materializations (see seed)
WEBSERVER = [sys.executable, "-m", "dagster_webserver", "-m", "gpu_cost_pipeline.definitions"]
WEBSERVER += ["-h", "127.0.0.1"]

PARTITION_HEALTH = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses {
          materializedPartitions materializingPartitions failedPartitions
        }
      }
    }
  }
}"""

LAUNCH_ASSET_LOADER = """
query LaunchAssetLoaderQuery($assetKeys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $assetKeys) {
    id opNames jobNames graphName hasMaterializePermission
    partitionDefinition { description type name dimensionTypes { name dynamicPartitionsDefinitionName } }
    backfillPolicy { maxPartitionsPerRun description policyType }
    isObservable isExecutable isMaterializable
    assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks { name canExecuteIndividually jobNames } } }
    dependencyKeys { path }
    repository { id name location { id name } }
    requiredResources { resourceKey }
  }
  assetNodeAdditionalRequiredKeys(assetKeys: $assetKeys) { path }
  assetNodeDefinitionCollisions(assetKeys: $assetKeys) { assetKey { path } }
}"""

_MATERIALIZATION = """
  partition runId timestamp stepKey label description
  tags { key value }
  runOrError { ... on PipelineRun { id status pipelineName } }
  metadataEntries {
    label description
    ... on FloatMetadataEntry { floatValue }
    ... on IntMetadataEntry { intValue }
    ... on TextMetadataEntry { text }
  }
"""

RECENT_EVENTS = f"""
query RecentAssetEventsQuery($assetKey: AssetKeyInput!, $limit: Int!,
    $eventTypeSelectors: [AssetEventHistoryEventTypeSelector!]!) {{
  assetsLatestInfo(assetKeys: [$assetKey]) {{
    id inProgressRunIds unstartedRunIds latestRun {{ id status }}
  }}
  assetOrError(assetKey: $assetKey) {{
    ... on Asset {{
      id key {{ path }}
      assetEventHistory(limit: $limit, eventTypeSelectors: $eventTypeSelectors) {{
        results {{ ... on MaterializationEvent {{ {_MATERIALIZATION} }} }}
        cursor
      }}
    }}
  }}
}}"""

LATEST_PARTITIONS = """
query LatestAssetPartitionsQuery($assetKey: AssetKeyInput!, $limit: Int!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode { id partitionKeyConnection(limit: $limit, ascending: false) { results } }
  }
}"""

PARTITION_EVENTS = f"""
query AssetPartitionEventsQuery($assetKey: AssetKeyInput!, $partitions: [String!]!) {{
  assetNodeOrError(assetKey: $assetKey) {{
    ... on AssetNode {{ id latestMaterializationByPartition(partitions: $partitions) {{
      {_MATERIALIZATION} }} }}
  }}
}}"""


class Webserver:
    """``dagster-webserver`` on the code location, with these settings, on a free port."""

    def __init__(self, dagster_home: Path, env: dict[str, str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.process = subprocess.Popen(
            [*WEBSERVER, "-p", str(self.port)],
            cwd=ROOT,
            env={**os.environ, **env, "DAGSTER_HOME": str(dagster_home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> Webserver:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:  # up, and the code location loaded
                answer = self.query("{ workspaceOrError { __typename } }", {})
                if answer["workspaceOrError"]["__typename"] == "Workspace":
                    return self
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster-webserver exited with {self.process.returncode}")
            time.sleep(0.5)
        raise RuntimeError("dagster-webserver did not answer within 180 s")

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def query(self, text: str, variables: dict) -> dict:
        answer = requests.post(self.url, json={"query": text, "variables": variables}, timeout=300)
        answer.raise_for_status()
        body = answer.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors'][:2]}")
        return body["data"]


def pages(server: Webserver, asset: str) -> dict[str, Callable[[], int]]:
    """Each page as the requests it waits for; each returns how many partition keys it got."""
    key = {"assetKey": {"path": [asset]}}

    def partitions_tab() -> int:
        node = server.query(PARTITION_HEALTH, key)["assetNodeOrError"]
        return len(node["partitionKeysByDimension"][0]["partitionKeys"])

    def launch_dialog() -> int:
        server.query(LAUNCH_ASSET_LOADER, {"assetKeys": [{"path": [asset]}]})
        return partitions_tab()

    def events_tab() -> int:
        server.query(
            RECENT_EVENTS, {**key, "limit": 100, "eventTypeSelectors": ["MATERIALIZATION"]}
        )
        latest = server.query(LATEST_PARTITIONS, {**key, "limit": 120})["assetNodeOrError"]
        keys = latest["partitionKeyConnection"]["results"]
        server.query(PARTITION_EVENTS, {**key, "partitions": keys})
        return len(keys)

    return {
        "partitions_tab": partitions_tab,
        "launch_dialog": launch_dialog,
        "events_tab": events_tab,
    }


def seed(dagster_home: Path, now: datetime, first_day: datetime) -> int:
    """Materializations as a month of schedule runs leaves them: every minute of the last
    ``FULL_DAYS`` days (the default reach and the day that just left it: what Dagster validates
    key by key when it rebuilds the asset's status cache), and before them one stretch of
    materialized minutes per day, as a daily outage leaves them (the warm requests' cost grows
    with the stretches, not with their length, so each is 5 minutes long to keep seeding
    short); and the days of ``gpu_cost_history`` before the minute partitions, contiguous."""
    import dagster as dg

    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    every_minute_from = today - timedelta(days=FULL_DAYS - 1)
    days = [first_day + timedelta(days=d) for d in range((today - first_day).days + 1)]
    events = [
        ("gpu_cost", (day + timedelta(hours=12, minutes=m)).strftime(PARTITION_FORMAT))
        for day in days
        if day < every_minute_from
        for m in range(5)
    ]
    minute = every_minute_from
    while minute < now - timedelta(minutes=2):
        events.append(("gpu_cost", minute.strftime(PARTITION_FORMAT)))
        minute += timedelta(minutes=1)
    events += [("gpu_cost_history", day.strftime("%Y-%m-%d")) for day in days[:-8]]
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    with dg.DagsterInstance.get() as instance:
        for asset, partition in events:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=asset, partition=partition)
            )
    del os.environ["DAGSTER_HOME"]
    return len(events)


def measure(server: Webserver, design: str, asset: str) -> None:
    server.query("{ assetNodes { id assetKey { path } } }", {})  # the UI's first page
    for page, load in pages(server, asset).items():
        with Stopwatch() as cold:
            keys = load()
        warm = []
        for _ in range(REPEATS):
            with Stopwatch() as watch:
                load()
            warm.append(watch.seconds)
        median = statistics.median(warm)
        notes = [f"{keys} partition keys" if page != "events_tab" else f"{keys} partitions"]
        notes.append(f"first request {cold.seconds:.2f} s")
        report(f"ui_{design}_{page}_s", median, "s", notes, PAGE_TARGET, max(median, cold.seconds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--reach-days",
        type=int,
        action="append",
        help="minute reaches to compare instead of the 85k design (repeatable), e.g. 3",
    )
    reaches = parser.parse_args(argv).reach_days
    clean_environment()
    now = datetime.now(UTC)
    start = first_of_previous_month(now)
    dagster_home = Path(tempfile.mkdtemp(prefix="gpu-cost-ui-bench-"))
    (dagster_home / "dagster.yaml").touch()
    progress("seeding materializations (not timed)")
    events = seed(dagster_home, now, datetime.strptime(start, PARTITION_FORMAT).replace(tzinfo=UTC))
    progress(f"{events} materializations stored")
    env = {"GPU_COST_PARTITION_START": start, "GPU_COST_DATA_DIR": str(dagster_home / "data")}
    designs = {"minute_85k": {"GPU_COST_MINUTE_PARTITION_DAYS": "400"}, "minute_3d": {}}
    if reaches:
        designs = {f"minute_{d}d": {"GPU_COST_MINUTE_PARTITION_DAYS": str(d)} for d in reaches}
    for design, extra in designs.items():
        progress(f"starting dagster-webserver for {design}")
        with Webserver(dagster_home, {**env, **extra}) as server:
            measure(server, design, "gpu_cost")
            if design == "minute_3d":  # the default code location has the day partitions
                measure(server, "history_days", "gpu_cost_history")


if __name__ == "__main__":
    main()
