"""Kubernetes resource quantities (``"2"``, ``"500m"``, ``"1Gi"``) as exact Decimals."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?\d+)?)([a-zA-Z]{0,2})$")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: object) -> Decimal:
    """Parse a Kubernetes quantity; raises ValueError with the offending text."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match or match[2] not in _SUFFIXES:
        raise ValueError(f"{value!r} is not a quantity")
    try:
        return Decimal(match[1]) * _SUFFIXES[match[2]]
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a quantity") from None


def parse_device_count(value: object) -> int:
    """An extended-resource amount (GPUs, MIG slices): a non-negative whole number."""
    amount = parse_quantity(value)
    if amount < 0:
        raise ValueError(f"{value!r} is negative")
    if amount != amount.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of devices")
    return int(amount)
