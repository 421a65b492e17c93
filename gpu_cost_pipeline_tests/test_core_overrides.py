"""Overrides from the CLI or the YAML file: every bad value named by entry and field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gpu_cost_pipeline.core.overrides import OverrideError, make_override, parse_overrides_file

BASE = {
    "provider": "aws",
    "instance_type": "p5.48xlarge",
    "capacity_type": "on-demand",
    "price_per_gpu_hour": "5.5",
    "effective_from": "2026-11-01T00:00:00Z",
}


def test_a_per_instance_price_is_divided_by_the_catalogs_gpus():
    override = make_override(
        {**BASE, "price_per_gpu_hour": None, "price_per_instance_hour": "44"}, "x"
    )
    assert override["price_per_gpu_hour"] == 5.5 and override["gpu_model"] == "H100-80GB"
    assert override["effective_from"] == datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"price_per_gpu_hour": "cheap"}, "x: price_per_gpu_hour: 'cheap' is not a number ≥ 0"),
        ({"price_per_gpu_hour": "nan"}, "price_per_gpu_hour: 'nan' is not a number ≥ 0"),
        ({"price_per_gpu_hour": -1}, "price_per_gpu_hour: -1 is not a number ≥ 0"),
        ({"price_per_instance_hour": "9"}, "give exactly one of price_per_gpu_hour"),
        ({"provider": "ibm"}, "provider: 'ibm' is not one of aws, gcp, azure"),
        ({"capacity_type": "Spot"}, "capacity_type: 'Spot' is not one of"),
        ({"instance_type": "x9.huge"}, "gpu_model: required (instance type 'x9.huge'"),
        ({"effective_from": "yesterday"}, "effective_from: 'yesterday' is not a time"),
        ({"effective_from": None}, "effective_from: required"),
        ({"colour": "red"}, "unknown field(s) colour"),
        (
            {"instance_type": "x9.huge", "gpu_model": "L4", "price_per_gpu_hour": None,
             "price_per_instance_hour": "3"},
            "gpu_count: needed to turn price_per_instance_hour",
        ),
    ],
)  # fmt: skip
def test_bad_fields_are_named(change: dict, message: str):
    with pytest.raises(OverrideError) as raised:
        make_override({**BASE, **change}, "x")
    assert message in str(raised.value)


def test_a_file_with_one_bad_entry_is_rejected_whole():
    text = """
overrides:
  - {provider: aws, instance_type: p5.48xlarge, capacity_type: spot, price_per_gpu_hour: 2.1,
     effective_from: 2026-11-01T00:00:00Z}
  - {provider: aws, gpu_model: T4, capacity_type: spot, price_per_gpu_hour: NA,
     effective_from: 2026-11-01T00:00:00Z}
"""
    with pytest.raises(OverrideError, match=r"prices\.yaml: overrides\[1\]: price_per_gpu_hour"):
        parse_overrides_file(text, "prices.yaml")
    with pytest.raises(OverrideError, match="not valid YAML"):
        parse_overrides_file("overrides: [", "prices.yaml")
    assert parse_overrides_file("", "prices.yaml") == []
    assert len(parse_overrides_file(text.split("  - {provider: aws, gpu_model")[0], "p")) == 1
