"""``gpu-autoscaler prices`` run as a command against a real PostgreSQL: the book in effect,
what was priced by estimate, overrides set/listed/removed without SQL, and the overrides file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from gpu_cost_pipeline.core.price_book import PriceRows, finish_fetch
from gpu_cost_pipeline.defs.partitions import minute_partitions
from gpu_cost_pipeline.defs.pricing.resources import PriceCatalog
from gpu_cost_pipeline.store import price_book
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.test_pipeline import ASSETS, MINUTE, range_tags, resources


def cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpu_cost_pipeline.cli.main", *args],
        env={**os.environ, "GPU_COST_DATABASE_URL": database_url, "GPU_COST_CLUSTER": "test",
             **env},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def test_overrides_set_list_and_remove_without_sql(store: CostStore, database_url: str):
    done = cli(
        database_url, "prices", "override", "set", "--provider", "aws",
        "--instance-type", "p5.48xlarge", "--capacity-type", "on-demand",
        "--price-per-instance-hour", "40.00", "--effective-from", "2026-11-01T00:00:00Z",
        "--note", "EDP 2026",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "= $5.0000 per GPU-hour from 2026-11-01 00:00 UTC" in done.stdout
    bad = cli(
        database_url, "prices", "override", "set", "--provider", "aws", "--gpu-model", "H100",
        "--capacity-type", "spot", "--price-per-gpu-hour", "cheap",
    )  # fmt: skip
    assert bad.returncode == 2
    assert "override: gpu_model: 'H100' is not a catalog model" in bad.stderr
    listed = json.loads(cli(database_url, "prices", "override", "list", "--format", "json").stdout)
    assert len(listed) == 1
    assert listed[0]["gpu_model"] == "H100-80GB" and listed[0]["origin"] == "cli"
    assert listed[0]["price_per_gpu_hour"] == 5.0 and listed[0]["price_per_instance_hour"] == 40.0

    # The minute assets price with it from its start.
    assert dg.materialize(ASSETS, partition_key=MINUTE, resources=resources(database_url)).success
    used = store.read_frame(
        "SELECT DISTINCT price_per_gpu_hour, price_source FROM gpu_cost"
        " WHERE instance_type = 'p5.48xlarge' AND capacity_type = 'on-demand'"
    )
    assert used.to_dict("records") == [{"price_per_gpu_hour": 5.0, "price_source": "override"}]

    removed = cli(
        database_url, "prices", "override", "remove", "--provider", "aws",
        "--instance-type", "p5.48xlarge", "--capacity-type", "on-demand",
    )  # fmt: skip
    assert removed.returncode == 0 and "Removed 1 override(s)" in removed.stdout
    assert store.read_frame("SELECT count(*) AS n FROM price_overrides").loc[0, "n"] == 0


def test_the_price_book_in_effect_and_the_estimated_windows(store: CostStore, database_url: str):
    now = datetime.now(UTC)
    rows = PriceRows("aws", "aws-price-list")
    rows.add(
        sku="P5",
        region="us-east-1",
        instance_type="p5.48xlarge",
        gpu_model="H100-80GB",
        capacity_type="on-demand",
        price_per_gpu_hour=6.5,
        effective_at=now - timedelta(days=9),
    )
    rows.add(
        sku="G6",
        region="us-east-1",
        instance_type="g6.xlarge",
        gpu_model="L4",
        capacity_type="on-demand",
        price_per_gpu_hour=0.78,
        effective_at=now - timedelta(days=9),
    )
    with store.connection() as conn:
        price_book.write_fetch(conn, finish_fetch("aws", [rows], ["us-east-1"]), now, now)
        conn.execute("UPDATE price_book_points SET confirmed_at = %s WHERE sku = 'G6'",
                     (now - timedelta(hours=5),))  # fmt: skip
        conn.commit()
    listing = cli(database_url, "prices", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    by_type = {row["instance_type"]: row for row in json.loads(listing.stdout)}
    assert by_type["p5.48xlarge"]["source"] == "api"
    assert by_type["p5.48xlarge"]["price_per_gpu_hour"] == 6.5
    assert by_type["g6.xlarge"]["source"] == "cache"  # not confirmed for 5 h > the TTL
    assert by_type["g6.xlarge"]["age_s"] == pytest.approx(5 * 3600, abs=120)
    table = cli(database_url, "prices", COLUMNS="200")
    assert "aws-price-list" in table.stdout and "p5.48xlarge" in table.stdout

    # Recent minutes: priced from the book where it has the key, by estimate elsewhere.
    last = minute_partitions.get_last_partition_key()
    first = minute_partitions.get_partition_key_for_timestamp(
        (
            minute_partitions.time_window_for_partition_key(last).start - timedelta(minutes=9)
        ).timestamp()
    )
    assert dg.materialize(
        ASSETS, tags=range_tags(first, last), resources=resources(database_url)
    ).success
    report = json.loads(
        cli(database_url, "prices", "--estimated", "--last", "1d", "--format", "json").stdout
    )
    estimated = store.read_frame(
        "SELECT sum(cost_usd) FILTER (WHERE price_source = 'estimate') AS e, sum(cost_usd) AS t"
        " FROM gpu_cost WHERE cluster = 'test'"
    ).iloc[0]
    assert report["estimated_cost_usd"] == pytest.approx(estimated["e"], rel=1e-9)
    assert report["estimated_share"] == pytest.approx(estimated["e"] / estimated["t"], rel=1e-9)
    keys = {(w["instance_type"], w["capacity_type"]) for w in report["windows"]}
    assert ("p5.48xlarge", "on-demand") not in keys and ("g4dn.xlarge", "spot") in keys
    assert all(w["minutes"] <= 10 for w in report["windows"])


OVERRIDES_YAML = """
overrides:
  - provider: aws
    instance_type: p4de.24xlarge
    capacity_type: spot
    price_per_gpu_hour: 1.11
    effective_from: 2026-11-01T00:00:00Z
    note: negotiated spot floor
"""


def test_the_overrides_file_is_loaded_and_a_broken_one_keeps_the_last_good(
    store: CostStore, database_url: str, tmp_path: Path, capfd: pytest.CaptureFixture
):
    path = tmp_path / "overrides.yaml"
    path.write_text(OVERRIDES_YAML)
    run = {**resources(database_url), "prices": PriceCatalog(overrides_file=str(path))}

    def a100_spot() -> set:
        frame = store.read_frame(
            "SELECT DISTINCT price_per_gpu_hour, price_source FROM gpu_cost"
            " WHERE instance_type = 'p4de.24xlarge' AND capacity_type = 'spot'"
        )
        return set(zip(frame["price_per_gpu_hour"], frame["price_source"], strict=True))

    assert dg.materialize(ASSETS, partition_key=MINUTE, resources=run).success
    assert a100_spot() == {(1.11, "override")}
    path.write_text(OVERRIDES_YAML.replace("1.11", "1.25"))
    assert dg.materialize(ASSETS, partition_key=MINUTE, resources=run).success
    assert a100_spot() == {(1.25, "override")}
    path.write_text(OVERRIDES_YAML.replace("price_per_gpu_hour: 1.11", "price_per_gpu_hour: -3"))
    capfd.readouterr()
    result = dg.materialize(ASSETS, partition_key=MINUTE, resources=run)
    assert result.success
    assert a100_spot() == {(1.25, "override")}  # the last valid version stays in force
    logged = capfd.readouterr().err
    assert "overrides[0]: price_per_gpu_hour: -3 is not a number ≥ 0" in logged
    assert "keeping the overrides loaded from its last valid version" in logged
    origins = store.read_frame("SELECT DISTINCT origin FROM price_overrides")
    assert origins["origin"].tolist() == ["file"]
