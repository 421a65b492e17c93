"""What a price-book fetch produces, and the checks every fetched price passes before it is stored.

Each provider module (integrations/aws.py, gcp.py, azure.py) turns its API's answers into rows
of BOOK_COLUMNS and a list of rejections; ``finish_fetch`` applies the checks common to all of
them, so a price that is not a positive finite number is never stored, whatever the provider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from gpu_cost_pipeline.core.gpus import INSTANCE_TYPES
from gpu_cost_pipeline.core.pricing import PRICE_KEY

BOOK_COLUMNS = [
    *PRICE_KEY,
    "price_per_gpu_hour",
    "price_per_instance_hour",
    "gpu_count",
    "effective_at",
    "feed",
    "sku",
    "term",
]
HOURS_PER_YEAR = 8760


@dataclass(frozen=True)
class Rejection:
    """One item of an API answer that was not stored, and why (named by SKU and field)."""

    sku: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"SKU {self.sku}: {self.field}: {self.problem}; rejected"


@dataclass
class BookFetch:
    """The prices one fetch read from one provider, ready to store."""

    provider: str
    points: pd.DataFrame  # BOOK_COLUMNS
    skus_read: int = 0
    spot_points: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    feeds: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)


class PriceRows:
    """Collects book rows and rejections while a provider module walks an API's answers."""

    def __init__(self, provider: str, feed: str) -> None:
        self.provider, self.feed = provider, feed
        self.rows: list[dict] = []
        self.rejections: list[Rejection] = []
        self.skus_read = 0
        self._empty_pages = 0

    def page_read(self, number: int, field_name: str, empty_with_next: bool) -> bool:
        """Note a page; an empty page that still links to a next one is rejected (counted).
        Returns True when paging should stop: three such pages in a row (a loop, not data)."""
        if not empty_with_next:
            self._empty_pages = 0
            return False
        self.reject(f"page {number}", field_name, "empty page with a next-page link")
        self._empty_pages += 1
        return self._empty_pages >= 3

    def reject(self, sku: str, field_name: str, problem: str) -> None:
        self.rejections.append(Rejection(sku or "(no id)", field_name, problem))

    def add(
        self,
        *,
        sku: str,
        region: str,
        capacity_type: str,
        price_per_gpu_hour: float,
        effective_at: datetime,
        zone: str = "",
        instance_type: str = "",
        gpu_model: str = "",
        price_per_instance_hour: float | None = None,
        gpu_count: int | None = None,
        term: str = "",
        price_field: str = "price",
    ) -> None:
        if not (math.isfinite(price_per_gpu_hour) and price_per_gpu_hour > 0):
            self.reject(sku, price_field, f"{price_per_gpu_hour!r} is not a price > 0")
            return
        self.rows.append(
            {
                "provider": self.provider,
                "region": region,
                "zone": zone,
                "instance_type": instance_type,
                "gpu_model": gpu_model,
                "capacity_type": capacity_type,
                "price_per_gpu_hour": price_per_gpu_hour,
                "price_per_instance_hour": price_per_instance_hour,
                "gpu_count": gpu_count,
                "effective_at": effective_at,
                "feed": self.feed,
                "sku": sku,
                "term": term,
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=BOOK_COLUMNS)


def parse_price(text: object) -> float | None:
    """A price as the APIs write it (a string such as "32.7726000000", or a number); None when
    it is not a finite number ("NA", "", garbage)."""
    if isinstance(text, bool):
        return None
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_time(text: object, fallback: datetime | None) -> datetime | None:
    """An API's ISO 8601 time ("2026-07-01T00:00:00Z"), else ``fallback``."""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else fallback
    except ValueError:
        return fallback


def gpus_of(instance_type: str, stated: object = None) -> tuple[str, int | None]:
    """GPU model and count of an instance type: the count the API states (e.g. AWS's ``gpu``
    attribute) wins over the catalog's; the model comes from the catalog ('' when unknown,
    which matches any model of nodes with that instance type)."""
    instance = INSTANCE_TYPES.get(instance_type)
    count = None
    if stated is not None:
        try:
            count = int(str(stated).strip())
        except ValueError:
            count = None
    if not count or count <= 0:
        count = instance.gpu_count if instance else None
    return (instance.gpu_model if instance else ""), count


def finish_fetch(provider: str, collected: list[PriceRows], regions: list[str]) -> BookFetch:
    """One BookFetch from the collectors of a fetch: duplicates of a (key, effective time) are
    stored once (the first seen), and spot points are counted."""
    frames = [c.frame() for c in collected if c.rows]
    points = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=BOOK_COLUMNS)
    if not points.empty:
        points["effective_at"] = pd.to_datetime(points["effective_at"], utc=True)
        points = points.drop_duplicates([*PRICE_KEY, "effective_at"], ignore_index=True)
    return BookFetch(
        provider=provider,
        points=points,
        skus_read=sum(c.skus_read for c in collected),
        spot_points=int((points["capacity_type"] == "spot").sum()) if not points.empty else 0,
        rejections=[r for c in collected for r in c.rejections],
        feeds=sorted({c.feed for c in collected}),
        regions=sorted(regions),
    )
