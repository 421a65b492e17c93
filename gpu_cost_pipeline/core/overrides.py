"""Negotiated prices (price overrides): checked the same way whether they come from the CLI or
from the YAML file named by GPU_COST_PRICE_OVERRIDES.

An override is stored per GPU-hour. One given per instance-hour is divided by the instance's
GPUs (the catalog's count, or ``gpu_count`` when the catalog does not know the type); the GPU
model may be left out when the instance type is in the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import yaml

from gpu_cost_pipeline.core.gpus import GPU_MODELS, INSTANCE_TYPES, UNKNOWN_GPU_MODEL
from gpu_cost_pipeline.core.pricing import (
    CAPACITY_COMMITTED,
    CAPACITY_ON_DEMAND,
    CAPACITY_RESERVED,
    CAPACITY_SPOT,
)

PROVIDERS = ("aws", "gcp", "azure")
CAPACITY_TYPES = (
    CAPACITY_ON_DEMAND,
    CAPACITY_SPOT,
    CAPACITY_RESERVED,
    *CAPACITY_COMMITTED.values(),
)
FIELDS = (
    "provider",
    "region",
    "zone",
    "instance_type",
    "gpu_model",
    "capacity_type",
    "price_per_gpu_hour",
    "price_per_instance_hour",
    "on_demand_price_per_gpu_hour",
    "gpu_count",
    "effective_from",
    "note",
)


class OverrideError(ValueError):
    """An override that cannot be stored; the message names the override and the field."""


def _number(value: object, name: str, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise OverrideError(f"{where}: {name}: {value!r} is not a number ≥ 0")
    return number


def parse_time(value: object, name: str, where: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise OverrideError(
                f"{where}: {name}: {value!r} is not a time such as 2026-01-01T00:00:00Z"
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def make_override(fields: Mapping[str, object], where: str) -> dict:
    """One checked override row (the price_overrides columns) from user-given fields."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise OverrideError(f"{where}: unknown field(s) {', '.join(unknown)}")
    text = {k: str(fields.get(k) or "").strip() for k in FIELDS if k not in ("note",)}
    if text["provider"] not in PROVIDERS:
        raise OverrideError(
            f"{where}: provider: {fields.get('provider')!r} is not one of {', '.join(PROVIDERS)}"
        )
    if text["capacity_type"] not in CAPACITY_TYPES:
        raise OverrideError(
            f"{where}: capacity_type: {fields.get('capacity_type')!r} is not one of "
            f"{', '.join(CAPACITY_TYPES)}"
        )
    instance = INSTANCE_TYPES.get(text["instance_type"])
    gpu_model = text["gpu_model"] or (instance.gpu_model if instance else "")
    if not gpu_model:
        raise OverrideError(
            f"{where}: gpu_model: required (instance type {text['instance_type'] or '(none)'!r}"
            " is not in the catalog)"
        )
    if gpu_model not in GPU_MODELS and gpu_model != UNKNOWN_GPU_MODEL:
        raise OverrideError(
            f"{where}: gpu_model: {gpu_model!r} is not a catalog model "
            f"({', '.join(sorted(GPU_MODELS))}, or unknown)"
        )
    per_gpu = _number(fields.get("price_per_gpu_hour"), "price_per_gpu_hour", where)
    per_instance = _number(fields.get("price_per_instance_hour"), "price_per_instance_hour", where)
    if (per_gpu is None) == (per_instance is None):
        raise OverrideError(
            f"{where}: give exactly one of price_per_gpu_hour and price_per_instance_hour"
        )
    if per_instance is not None:
        count = _number(fields.get("gpu_count"), "gpu_count", where) or (
            instance.gpu_count if instance else None
        )
        if not count:
            raise OverrideError(
                f"{where}: gpu_count: needed to turn price_per_instance_hour into a price per "
                f"GPU-hour (instance type {text['instance_type'] or '(none)'!r} is not in the "
                "catalog)"
            )
        per_gpu = per_instance / count
    if "effective_from" not in fields or fields.get("effective_from") in (None, ""):
        raise OverrideError(f"{where}: effective_from: required")
    return {
        "provider": text["provider"],
        "region": text["region"],
        "zone": text["zone"],
        "instance_type": text["instance_type"],
        "gpu_model": gpu_model,
        "capacity_type": text["capacity_type"],
        "price_per_gpu_hour": per_gpu,
        "price_per_instance_hour": per_instance,
        "on_demand_price_per_gpu_hour": _number(
            fields.get("on_demand_price_per_gpu_hour"), "on_demand_price_per_gpu_hour", where
        ),
        "effective_from": parse_time(fields["effective_from"], "effective_from", where),
        "note": str(fields.get("note") or ""),
    }


def parse_overrides_file(text: str, name: str) -> list[dict]:
    """The overrides of a YAML file: ``overrides: [ {provider, gpu_model, ...}, ... ]`` (or a
    bare list). Any bad entry rejects the whole file, naming the entry and the field, so a
    half-read file never replaces the overrides already stored."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise OverrideError(f"{name}: not valid YAML ({error})".replace("\n", " ")) from None
    entries = document.get("overrides") if isinstance(document, Mapping) else document
    if document is None:
        entries = []
    if not isinstance(entries, list):
        raise OverrideError(f"{name}: expected a list under 'overrides'")
    overrides = []
    for index, entry in enumerate(entries):
        where = f"{name}: overrides[{index}]"
        if not isinstance(entry, Mapping):
            raise OverrideError(f"{where}: expected a mapping of fields")
        overrides.append(make_override(entry, where))
    identity = ("provider", "region", "zone", "instance_type", "gpu_model", "capacity_type")
    keys = [(*(o[c] for c in identity), o["effective_from"]) for o in overrides]
    if len(set(keys)) != len(keys):
        raise OverrideError(f"{name}: two overrides for the same key and effective_from")
    return overrides
