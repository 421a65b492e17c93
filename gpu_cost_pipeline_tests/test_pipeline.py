"""The cost assets through Dagster, against a real PostgreSQL and a real HTTP Kubernetes API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from gpu_cost_pipeline.defs.costs.assets import gpu_cost, write_costs
from gpu_cost_pipeline.defs.history.assets import gpu_cost_history
from gpu_cost_pipeline.defs.jobs import gpu_cost_every_minute, gpu_cost_job
from gpu_cost_pipeline.defs.partitions import minute_partitions
from gpu_cost_pipeline.defs.pricing.assets import gpu_prices
from gpu_cost_pipeline.defs.pricing.resources import PriceCatalog
from gpu_cost_pipeline.defs.usage.assets import gpu_usage
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.integrations.kubernetes import KubernetesResource
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.k8s_api_server import FakeKubernetesApi, make_node, make_pod

ASSETS = [gpu_usage, gpu_prices, gpu_cost]
MINUTE = "2026-11-20-10:00"


def resources(database_url: str, **source: object) -> dict:
    source = {"cluster": "test", "simulated_gpu_pods": 40, **source}
    return {
        "store": CostStore(database_url=database_url),
        "usage_source": UsageSource(**source),
        "prices": PriceCatalog(),
    }


def totals(store: CostStore, start: str, end: str) -> dict:
    frame = store.read_frame(
        "SELECT count(*) AS rows, sum(cost_usd) AS cost, count(DISTINCT node) AS nodes,"
        " sum(gpu_share * seconds) AS gpu_seconds FROM gpu_cost"
        " WHERE cluster = 'test' AND minute >= %s AND minute < %s",
        (start, end),
    )
    return frame.iloc[0].to_dict()


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """The asset's figures over the run: each partition's own figures, summed."""
    events = result.asset_materializations_for_node(
        "gpu_usage" if asset in ("gpu_node_usage", "gpu_pod_usage") else asset
    )
    summed: dict = {}
    for event in events:
        if event.asset_key.to_user_string() == asset:
            for key, value in event.metadata.items():
                summed[key] = summed.get(key, 0) + value.value
    if not summed:
        raise AssertionError(f"no materialization of {asset}")
    return summed


def test_each_partition_of_a_range_run_carries_its_own_minute(database_url: str):
    """A range run's per-partition figures equal what one-minute runs give (money in cents),
    so the UI's plots show no step between live minutes and backfilled ones."""
    tags = range_tags("2026-11-20-09:00", "2026-11-20-09:02")
    ranged = dg.materialize(ASSETS, tags=tags, resources=resources(database_url))
    single = dg.materialize(
        ASSETS, partition_key="2026-11-20-09:01", resources=resources(database_url)
    )
    by_partition = {
        event.partition: event.metadata
        for event in ranged.asset_materializations_for_node("gpu_cost")
    }
    assert len(by_partition) == 3
    [alone] = single.asset_materializations_for_node("gpu_cost")
    for key in ("rows", "total_cost_usd", "gpu_hours", "idle_cost_usd"):
        assert by_partition["2026-11-20-09:01"][key].value == alone.metadata[key].value, key
    cost = alone.metadata["total_cost_usd"].value
    assert cost == round(cost, 2) and cost > 0


def test_one_minute_partition(store: CostStore, database_url: str):
    result = dg.materialize(ASSETS, partition_key=MINUTE, resources=resources(database_url))
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {
        "no_negative_cost",
        "pods_plus_idle_equals_node_cost",
        "no_duplicate_pod_minute",
    }
    assert all(c.passed for c in checks)
    stored = totals(store, "2026-11-20 10:00+00", "2026-11-20 10:01+00")
    cost = metadata(result, "gpu_cost")
    assert cost["rows"] == stored["rows"] > 0
    assert cost["total_cost_usd"] == pytest.approx(stored["cost"], abs=0.005)  # cents
    # Pods + idle rows add up to every node's GPUs for the minute.
    nodes = store.read_frame("SELECT sum(gpu_count * seconds) AS s FROM gpu_node_usage")
    assert stored["gpu_seconds"] == pytest.approx(float(nodes.loc[0, "s"]), rel=1e-9)
    assert metadata(result, "gpu_pod_usage")["pods"] > 20
    assert metadata(result, "gpu_prices")["estimated_keys"] > 0


def range_tags(first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def test_one_day_range_run(store: CostStore, database_url: str):
    tags = range_tags("2026-11-19-00:00", "2026-11-19-23:59")
    result = dg.materialize(ASSETS, tags=tags, resources=resources(database_url))
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    stored = totals(store, "2026-11-19 00:00+00", "2026-11-20 00:00+00")
    assert stored["rows"] == metadata(result, "gpu_cost")["rows"] > 1440 * 30
    # One materialization per minute partition, all from the one run.
    assert len(result.asset_materializations_for_node("gpu_cost")) == 1440
    rollup = store.read_frame(
        "SELECT count(DISTINCT hour) AS hours, sum(cost_usd) AS cost FROM gpu_cost_hourly"
    )
    assert rollup.loc[0, "hours"] == 24
    assert rollup.loc[0, "cost"] == pytest.approx(stored["cost"], rel=1e-9)


def test_the_same_window_three_times_gives_the_same_totals(store: CostStore, database_url: str):
    tags = range_tags("2026-11-19-06:00", "2026-11-19-07:59")
    seen = []
    for _ in range(3):
        assert dg.materialize(ASSETS, tags=tags, resources=resources(database_url)).success
        seen.append(totals(store, "2026-11-19 00:00+00", "2026-11-20 00:00+00"))
    assert seen[0]["rows"] == seen[1]["rows"] == seen[2]["rows"] > 120 * 30
    assert seen[0]["nodes"] == seen[2]["nodes"]
    for later in seen[1:]:
        assert later["cost"] == pytest.approx(seen[0]["cost"], rel=1e-12)
        assert later["gpu_seconds"] == pytest.approx(seen[0]["gpu_seconds"], rel=1e-12)
    # Rewrites refresh pod attribution rows instead of adding them.
    pods = store.read_frame(
        "SELECT (SELECT count(*) FROM gpu_pods) AS attributed,"
        " (SELECT count(DISTINCT pod_uid) FROM gpu_pod_usage) AS seen"
    )
    assert pods.loc[0, "attributed"] == pods.loc[0, "seen"]


def test_minute_by_minute_equals_one_range_run(store: CostStore, database_url: str):
    """Live (one minute per run) and backfill (a range per run) must store the same costs."""
    for minute in range(5):
        key = f"2026-11-20-11:0{minute}"
        assert dg.materialize(ASSETS, partition_key=key, resources=resources(database_url)).success
    by_minute = totals(store, "2026-11-20 11:00+00", "2026-11-20 11:05+00")
    tags = range_tags("2026-11-20-11:00", "2026-11-20-11:04")
    assert dg.materialize(ASSETS, tags=tags, resources=resources(database_url)).success
    ranged = totals(store, "2026-11-20 11:00+00", "2026-11-20 11:05+00")
    assert ranged["rows"] == by_minute["rows"]
    assert ranged["cost"] == pytest.approx(by_minute["cost"], rel=1e-12)


def test_schedule_tick_requests_the_minute_just_closed_and_the_run_succeeds(database_url: str):
    defs = dg.Definitions(
        assets=ASSETS,
        jobs=[gpu_cost_job],
        schedules=[gpu_cost_every_minute],
        resources=resources(database_url),
    )
    schedule = defs.resolve_schedule_def("gpu_cost_every_minute")
    tick_time = datetime(2026, 11, 20, 12, 31, 0, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick_time)
        run_requests = schedule.evaluate_tick(context).run_requests or []
        assert [r.partition_key for r in run_requests] == ["2026-11-20-12:30"]
        result = defs.resolve_job_def("gpu_cost_job").execute_in_process(
            instance=instance, partition_key=run_requests[0].partition_key
        )
    assert result.success


def test_backfill_policy_is_one_day_of_minutes_per_run():
    for asset in ASSETS:
        assert asset.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=1440)
        assert asset.partitions_def == minute_partitions


def test_definitions_load():
    from gpu_cost_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()} == {
        "gpu_node_usage",
        "gpu_pod_usage",
        "gpu_prices",
        "gpu_cost",
        "aws_price_book",
        "gcp_price_book",
        "azure_price_book",
        "roi_report",
        "gpu_cost_history",
        "cost_attributions",
        "budget_status",
    }


def live_cluster(api: FakeKubernetesApi) -> None:
    started = datetime.now(UTC) - timedelta(hours=1)
    api.nodes = [
        make_node(
            "gpu-a",
            labels={
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "node.kubernetes.io/instance-type": "p5.48xlarge",
                "karpenter.sh/capacity-type": "spot",
                "topology.kubernetes.io/region": "us-east-1",
                "topology.kubernetes.io/zone": "us-east-1a",
            },
            capacity={"nvidia.com/gpu": "8"},
            provider_id="aws:///us-east-1a/i-0abc",
        ),
        make_node("cpu-only", labels={"node.kubernetes.io/instance-type": "m5.large"}),
    ]
    api.pods = [
        make_pod(
            "train-1",
            "ml",
            "gpu-a",
            {"nvidia.com/gpu": "4"},
            labels={"team": "nlp-team"},
            start_time=started,
        ),
        make_pod("broken", "ml", "gpu-a", {"nvidia.com/gpu": "abc"}, start_time=started),
        make_pod("web", "default", "cpu-only", {"cpu": "1"}, start_time=started),
    ]


def test_kubernetes_source_serves_the_minute_just_closed(
    store: CostStore, database_url: str, tmp_path: Path
):
    with FakeKubernetesApi() as api:
        live_cluster(api)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        live = resources(
            database_url,
            source="kubernetes",
            kubernetes=KubernetesResource(kubeconfig=str(kubeconfig)),
        )
        key = minute_partitions.get_last_partition_key()
        result = dg.materialize(ASSETS, partition_key=key, resources=live)
    assert result.success
    pods = metadata(result, "gpu_pod_usage")
    assert pods["pods"] == 1 and pods["pod_input_problems"] == 1
    costs = store.read_frame(
        "SELECT team, is_idle, gpu_share, cost_usd, price_per_gpu_hour FROM gpu_cost"
    )
    pod_row = costs[~costs["is_idle"]].iloc[0]
    idle_row = costs[costs["is_idle"]].iloc[0]
    assert pod_row["team"] == "nlp-team"
    assert pod_row["gpu_share"] == 4 and idle_row["gpu_share"] == 4
    assert pod_row["price_per_gpu_hour"] == pytest.approx(55.04 / 8 * 0.40)  # spot estimate
    assert pod_row["cost_usd"] == pytest.approx(55.04 / 8 * 0.40 * 4 * 60 / 3600)


def test_kubernetes_source_refuses_history_with_a_pointer_to_prometheus(
    database_url: str, tmp_path: Path
):
    with FakeKubernetesApi() as api:
        live_cluster(api)
        live = resources(
            database_url,
            source="kubernetes",
            kubernetes=KubernetesResource(kubeconfig=str(api.write_kubeconfig(tmp_path / "kc"))),
        )
        result = dg.materialize(ASSETS, partition_key=MINUTE, resources=live, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.event_specific_data.error)
    assert "minute just closed" in message and "prometheus" in message.lower()


def test_retention_job_runs_for_the_configured_cluster(store: CostStore, database_url: str):
    from gpu_cost_pipeline.defs.maintenance import retention_job

    old = minute_partitions.get_partition_key_for_timestamp(
        (datetime.now(UTC) - timedelta(days=3)).timestamp()
    )
    assert dg.materialize(ASSETS, partition_key=old, resources=resources(database_url)).success
    short = {
        **resources(database_url),
        "store": CostStore(database_url=database_url, retention_days=1),
    }
    assert retention_job.execute_in_process(resources=short).success
    assert store.read_frame("SELECT count(*) AS n FROM gpu_cost").loc[0, "n"] == 0


def test_a_cluster_without_gpus_gives_empty_windows_not_errors(
    store: CostStore, database_url: str, tmp_path: Path
):
    with FakeKubernetesApi() as api:
        api.nodes = [make_node("cpu-only", labels={"node.kubernetes.io/instance-type": "m5.large"})]
        live = resources(
            database_url,
            source="kubernetes",
            kubernetes=KubernetesResource(kubeconfig=str(api.write_kubeconfig(tmp_path / "kc"))),
        )
        result = dg.materialize(
            ASSETS, partition_key=minute_partitions.get_last_partition_key(), resources=live
        )
    assert result.success
    assert metadata(result, "gpu_cost")["rows"] == 0
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_every_job_runs_in_one_process():
    """UI backfills use the implicit asset job: it must not start a process per step either."""
    from gpu_cost_pipeline.definitions import defs

    assert defs.resolve_job_def("gpu_cost_job").executor_def.name == "in_process"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def test_a_price_override_prices_costs_until_it_is_deleted(store: CostStore, database_url: str):
    def a100_spot_prices() -> set[tuple[float, str]]:
        rows = store.read_frame(
            "SELECT DISTINCT price_per_gpu_hour, price_source FROM gpu_cost"
            " WHERE gpu_model = 'A100-80GB' AND capacity_type = 'spot' AND NOT is_idle"
        )
        return set(zip(rows["price_per_gpu_hour"], rows["price_source"], strict=True))

    with store.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO price_overrides (provider, instance_type, gpu_model, capacity_type,"
            " price_per_gpu_hour, effective_from, note)"
            " VALUES ('aws', 'p4de.24xlarge', 'A100-80GB', 'spot', 1.11, %s, 'negotiated')",
            (datetime(2026, 11, 1, tzinfo=UTC),),
        )
    assert dg.materialize(ASSETS, partition_key=MINUTE, resources=resources(database_url)).success
    assert a100_spot_prices() == {(1.11, "override")}
    with store.connection() as conn, conn.transaction():
        conn.execute("DELETE FROM price_overrides")
    assert dg.materialize(ASSETS, partition_key=MINUTE, resources=resources(database_url)).success
    [(price, source)] = a100_spot_prices()
    assert source == "estimate" and price == pytest.approx(27.45 / 8 * 0.40)


def test_an_override_starting_inside_a_range_run_applies_from_its_minute(
    store: CostStore, database_url: str
):
    with store.connection() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO price_overrides (provider, gpu_model, capacity_type, price_per_gpu_hour,"
            " effective_from) VALUES ('aws', 'A100-80GB', 'spot', 1.11, %s)",
            (datetime(2026, 11, 20, 10, 5, tzinfo=UTC),),
        )
    tags = range_tags("2026-11-20-10:00", "2026-11-20-10:09")
    assert dg.materialize(ASSETS, tags=tags, resources=resources(database_url)).success
    rows = store.read_frame(
        "SELECT minute >= '2026-11-20 10:05+00' AS after, price_source,"
        " min(price_per_gpu_hour) AS low, max(price_per_gpu_hour) AS high FROM gpu_cost"
        " WHERE gpu_model = 'A100-80GB' AND capacity_type = 'spot' GROUP BY 1, 2"
    )
    rows = rows.sort_values("after")
    assert rows[["after", "price_source"]].values.tolist() == [
        [False, "estimate"],
        [True, "override"],
    ]
    overridden = rows[rows["after"]].iloc[0]
    assert overridden["low"] == overridden["high"] == 1.11


def test_a_history_day_costs_its_usage_exactly_as_reading_it_back_would(database_url: str):
    """gpu_cost_history hands each chunk's usage minutes straight to costing; the minute path
    reads them back from the store. Re-costing the stored day by reading back must leave every
    cost row and rollup as the history run wrote them."""
    day = datetime(2026, 11, 20, tzinfo=UTC)
    # Chunks of 5 hours: a day is 5 chunks, the last one short, as the hand-over must handle.
    res = resources(database_url, simulated_gpu_pods=12, chunk_minutes=300)
    assert dg.materialize([gpu_cost_history], partition_key="2026-11-20", resources=res).success
    store: CostStore = res["store"]
    cost_query = (
        "SELECT * FROM gpu_cost WHERE cluster = 'test' ORDER BY minute, pod_uid, node, is_idle"
    )
    rollup_query = "SELECT * FROM gpu_pod_cost_hourly ORDER BY hour, pod_uid"
    handed_over = store.read_frame(cost_query)
    handed_over_rollup = store.read_frame(rollup_query)
    assert len(handed_over) > 12 * 1440 * 0.5 and handed_over["cost_usd"].sum() > 0
    write_costs(store, "test", 300, day, day + timedelta(days=1))  # reads the usage back
    pd.testing.assert_frame_equal(store.read_frame(cost_query), handed_over)
    pd.testing.assert_frame_equal(store.read_frame(rollup_query), handed_over_rollup)
