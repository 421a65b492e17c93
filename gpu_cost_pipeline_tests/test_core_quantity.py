"""Kubernetes quantities and device counts."""

from decimal import Decimal

import pytest

from gpu_cost_pipeline.core.quantity import parse_device_count, parse_quantity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", Decimal(2)),
        ("500m", Decimal("0.5")),
        ("1Gi", Decimal(1073741824)),
        ("1Ki", Decimal(1024)),
        ("2k", Decimal(2000)),
        ("1.5", Decimal("1.5")),
        ("1e3", Decimal(1000)),
        (" 4 ", Decimal(4)),
        ("+3", Decimal(3)),
        (3, Decimal(3)),
        (0.25, Decimal("0.25")),
    ],
)
def test_parse_quantity(value: object, expected: Decimal) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize("value", ["abc", "", "1x", "1.2.3", ".", "Gi", True, None])
def test_parse_quantity_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(value)


@pytest.mark.parametrize(
    ("value", "expected"), [("0", 0), ("1", 1), ("8", 8), (4, 4), ("1k", 1000)]
)
def test_parse_device_count(value: object, expected: int) -> None:
    result = parse_device_count(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "negative"),
        ("1.5", "not a whole number"),
        ("500m", "not a whole number"),
        ("abc", "not a quantity"),
        (True, "not a quantity"),
        (False, "not a quantity"),
    ],
)
def test_parse_device_count_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_device_count(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_parse_device_count_rejects_non_finite_floats_with_value_error(value: float) -> None:
    with pytest.raises(ValueError):
        parse_device_count(value)
