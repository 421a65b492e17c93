"""Price per GPU-hour for every price key over a window: override, price book, estimate.

A *price key* is what a price depends on: provider, region, zone (spot prices differ per zone),
instance type, GPU model and capacity type. A whole node's price is attributed to its GPUs
(a GPU node exists for its GPUs), so price per GPU-hour = instance price / GPUs on the instance.

Cloud APIs are never called here. The price books (fetched on their own schedule, stored as
dated points) and the overrides arrive as frames; ``resolve_window`` turns them into the price
points of a window: one per key at the window start, and one more wherever the price or its
source changes inside the window (a spot price moving, an override starting, a book going
stale), so each minute is costed at the price in effect at that minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median

import numpy as np
import pandas as pd

from gpu_cost_pipeline.core.gpus import INSTANCE_TYPES

PRICE_KEY = ["provider", "region", "zone", "instance_type", "gpu_model", "capacity_type"]
PRICE_COLUMNS = [
    *PRICE_KEY,
    "price_per_gpu_hour",
    "on_demand_price_per_gpu_hour",
    "source",
    "effective_at",
]

SOURCE_API, SOURCE_CACHE, SOURCE_ESTIMATE, SOURCE_OVERRIDE = "api", "cache", "estimate", "override"
# A book price counts as current (``api``) for this long after a fetch last confirmed it; after
# that it is still the newest known and is used as ``cache``. Two hourly fetches: one missed
# fetch does not turn prices stale.
CACHE_TTL = timedelta(hours=2)

CAPACITY_ON_DEMAND, CAPACITY_SPOT, CAPACITY_RESERVED = "on-demand", "spot", "reserved"
# Capacity bought for a term: RIs and savings plans (AWS), committed use (GCP), reservations
# (Azure). A node says so with the gpu-autoscaler.io/commitment label (core/usage.py).
CAPACITY_COMMITTED = {1: "committed-1yr", 3: "committed-3yr"}

# Per-GPU list prices sold per GPU rather than per instance (GCP N1 + T4/V100, us-central1).
_PER_GPU_PRICES = {("gcp", "T4"): 0.35, ("gcp", "V100"): 2.48}


def _catalog_per_gpu_prices() -> dict[tuple[str, str], float]:
    """Cheapest catalog price per GPU-hour for each (provider, GPU model)."""
    prices: dict[tuple[str, str], float] = dict(_PER_GPU_PRICES)
    for instance in INSTANCE_TYPES.values():
        if instance.on_demand_price_per_hour is None:
            continue
        key = (instance.provider, instance.gpu_model)
        per_gpu = instance.on_demand_price_per_hour / instance.gpu_count
        prices[key] = min(prices.get(key, per_gpu), per_gpu)
    return prices


_PROVIDER_MODEL_PRICES = _catalog_per_gpu_prices()
_MODEL_PRICES = {
    model: median(price for (_, m), price in _PROVIDER_MODEL_PRICES.items() if m == model)
    for model in {m for _, m in _PROVIDER_MODEL_PRICES}
}


@dataclass(frozen=True)
class EstimateSettings:
    """How estimates are made where no price book or override has a price. Ratios are of the
    on-demand price, from typical discounts (DOMAIN.md): AWS spot up to 90 % off, GCP 50–70 %,
    Azure 75–88 %; terms 30–50 % off (the seed). ``reserved`` capacity (Karpenter's capacity
    reservations and capacity blocks, not RIs) bills at the on-demand rate."""

    unknown_gpu_price_per_hour: float = 2.50
    spot_price_ratio: dict[str, float] = field(
        default_factory=lambda: {"aws": 0.40, "gcp": 0.35, "azure": 0.20}
    )
    default_spot_price_ratio: float = 0.40
    reserved_price_ratio: float = 1.0
    committed_price_ratio: dict[str, float] = field(
        default_factory=lambda: {"committed-1yr": 0.65, "committed-3yr": 0.50}
    )


def estimate_on_demand_per_gpu(
    provider: str, instance_type: str, gpu_model: str, settings: EstimateSettings
) -> float:
    instance = INSTANCE_TYPES.get(instance_type)
    if (
        instance
        and instance.provider == provider
        and instance.gpu_model == gpu_model
        and instance.on_demand_price_per_hour is not None
    ):
        return instance.on_demand_price_per_hour / instance.gpu_count
    if (provider, gpu_model) in _PROVIDER_MODEL_PRICES:
        return _PROVIDER_MODEL_PRICES[(provider, gpu_model)]
    return _MODEL_PRICES.get(gpu_model, settings.unknown_gpu_price_per_hour)


def capacity_price_ratio(provider: str, capacity_type: str, settings: EstimateSettings) -> float:
    if capacity_type == CAPACITY_SPOT:
        return settings.spot_price_ratio.get(provider, settings.default_spot_price_ratio)
    if capacity_type == CAPACITY_RESERVED:
        return settings.reserved_price_ratio
    return settings.committed_price_ratio.get(capacity_type, 1.0)


def estimate_prices(keys: pd.DataFrame, at: datetime, settings: EstimateSettings) -> pd.DataFrame:
    """Estimated prices for each key (one Python step per distinct key: keys are few)."""
    rows = []
    for key in keys[PRICE_KEY].drop_duplicates().itertuples(index=False):
        on_demand = estimate_on_demand_per_gpu(
            key.provider, key.instance_type, key.gpu_model, settings
        )
        ratio = capacity_price_ratio(key.provider, key.capacity_type, settings)
        rows.append(
            {
                **key._asdict(),
                "price_per_gpu_hour": on_demand * ratio,
                "on_demand_price_per_gpu_hour": on_demand,
                "source": SOURCE_ESTIMATE,
                "effective_at": at,
            }
        )
    return pd.DataFrame(rows, columns=PRICE_COLUMNS)


# --- Resolution over a window ------------------------------------------------------------------

# What the store hands over for a window, each row already matched to a price key (PRICE_KEY
# columns are the *node's* key; ``level`` ranks how specifically the row matched it):
BOOK_MATCH_COLUMNS = [*PRICE_KEY, "level", "effective_at", "confirmed_at", "price_per_gpu_hour"]
OVERRIDE_MATCH_COLUMNS = [
    *PRICE_KEY,
    "level",
    "effective_from",
    "price_per_gpu_hour",
    "on_demand_price_per_gpu_hour",
]


@dataclass
class ResolvedPrices:
    prices: pd.DataFrame  # PRICE_COLUMNS: per key, a point at the start and at each change
    warnings: list[str]
    cache_age_max: timedelta | None = None  # oldest book price used as cache, if any


def on_demand_variants(keys: pd.DataFrame) -> pd.DataFrame:
    """The keys plus the on-demand key of each (the baseline every cost row carries)."""
    keys = keys[PRICE_KEY]
    return pd.concat([keys, keys.assign(capacity_type=CAPACITY_ON_DEMAND)]).drop_duplicates(
        ignore_index=True
    )


_TIME = "datetime64[us, UTC]"


def _times(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One datetime dtype for every time column, so frames from the store, from tests and from
    computed events merge on equal terms (empty frames included)."""
    return frame.assign(**{c: pd.to_datetime(frame[c], utc=True).astype(_TIME) for c in columns})


def _key_ids(frame: pd.DataFrame, index: pd.MultiIndex) -> np.ndarray:
    return index.get_indexer(pd.MultiIndex.from_frame(frame[PRICE_KEY]))


def _book_series(book: pd.DataFrame, ids: np.ndarray, ttl: timedelta) -> pd.DataFrame:
    """Per key, the points of its most specific book series, with how long each stays current:
    until the next point (the book knows the price up to then), else until the last fetch that
    confirmed it plus the TTL."""
    book = book.assign(key_id=np.asarray(ids, dtype="int64"))
    book = book[book["key_id"] >= 0]
    book = book[book["level"] == book.groupby("key_id")["level"].transform("max")]
    book = book.sort_values(["key_id", "effective_at"], kind="stable").reset_index(drop=True)
    following = book.groupby("key_id")["effective_at"].shift(-1)
    book["current_until"] = following.fillna(book["confirmed_at"] + pd.Timedelta(ttl))
    return book


def _events(
    key_count: int, start: pd.Timestamp, end: pd.Timestamp, book: pd.DataFrame, overrides
) -> pd.DataFrame:
    """(key_id, t) at which a key's price may change: the window start, then every book point,
    book expiry and override start inside the window."""
    parts = [pd.DataFrame({"key_id": np.arange(key_count), "t": start})]
    for frame, column in (
        (book, "effective_at"),
        (book, "current_until"),
        (overrides, "effective_from"),
    ):
        inside = frame[(frame[column] > start) & (frame[column] < end)]
        parts.append(pd.DataFrame({"key_id": inside["key_id"], "t": inside[column]}))
    events = pd.concat(parts, ignore_index=True).drop_duplicates()
    return events.sort_values(["t", "key_id"], kind="stable").reset_index(drop=True)


def _override_at(events: pd.DataFrame, overrides: pd.DataFrame) -> pd.DataFrame:
    """The override in effect at each event: the most specific one, then the latest."""
    if overrides.empty:
        return events.iloc[:0].assign(o_price=0.0, o_on_demand=0.0)
    joined = events.merge(overrides, on="key_id")
    joined = joined[joined["effective_from"] <= joined["t"]]
    joined = joined.sort_values(["level", "effective_from"], ascending=False, kind="stable")
    chosen = joined.drop_duplicates(["key_id", "t"])
    return chosen.rename(
        columns={"price_per_gpu_hour": "o_price", "on_demand_price_per_gpu_hour": "o_on_demand"}
    )[["key_id", "t", "o_price", "o_on_demand"]]


def _book_at(events: pd.DataFrame, book: pd.DataFrame) -> pd.DataFrame:
    """The book point in effect at each event: the latest at or before it."""
    if book.empty:
        no_time = pd.Series(pd.NaT, index=events.index, dtype=events["t"].dtype)
        return events.assign(b_price=np.nan, b_current=False, b_confirmed=no_time)
    points = book.rename(
        columns={
            "effective_at": "t",
            "price_per_gpu_hour": "b_price",
            "confirmed_at": "b_confirmed",
        }
    )[["key_id", "t", "b_price", "b_confirmed", "current_until"]].sort_values("t")
    found = pd.merge_asof(events, points, on="t", by="key_id", direction="backward")
    found["b_current"] = found["t"] < found["current_until"]
    return found.drop(columns="current_until")


def resolve_window(
    keys: pd.DataFrame,
    start: datetime,
    end: datetime,
    book: pd.DataFrame,
    overrides: pd.DataFrame,
    settings: EstimateSettings,
    ttl: timedelta = CACHE_TTL,
) -> ResolvedPrices:
    """Price points for ``keys`` over [start, end): override, else the book point in effect
    (``api`` while current, ``cache`` after), else an estimate.

    ``book`` (BOOK_MATCH_COLUMNS) and ``overrides`` (OVERRIDE_MATCH_COLUMNS) hold the rows that
    match the keys and their on-demand variants: for the book, per series the latest point at or
    before ``start``, every point inside the window and the first one after it.
    """
    start_ts = pd.Timestamp(start).tz_convert("UTC").as_unit("us")
    end_ts = pd.Timestamp(end).tz_convert("UTC").as_unit("us")
    wanted = keys[PRICE_KEY].drop_duplicates(ignore_index=True)
    if wanted.empty:
        return ResolvedPrices(pd.DataFrame(columns=PRICE_COLUMNS), [])
    every = on_demand_variants(wanted)
    index = pd.MultiIndex.from_frame(every)
    book = _times(book[BOOK_MATCH_COLUMNS], ["effective_at", "confirmed_at"]).astype(
        {"level": "int64", "price_per_gpu_hour": "float64"}
    )
    book = _book_series(book, _key_ids(book, index), ttl)
    overrides = _times(overrides[OVERRIDE_MATCH_COLUMNS], ["effective_from"]).astype(
        {
            "level": "int64",
            "price_per_gpu_hour": "float64",
            "on_demand_price_per_gpu_hour": "float64",
        }
    )
    overrides = overrides.assign(key_id=_key_ids(overrides, index))
    overrides = overrides[overrides["key_id"] >= 0]
    events = _events(len(every), start_ts, end_ts, book, overrides)

    resolved = _book_at(events, book).merge(
        _override_at(events, overrides), on=["key_id", "t"], how="left"
    )
    estimated = estimate_prices(every, start, settings)
    estimate_by_key = _key_ids(estimated, index)
    estimate_price = np.empty(len(every))
    estimate_price[estimate_by_key] = estimated["price_per_gpu_hour"].to_numpy()
    estimate_on_demand = np.empty(len(every))
    estimate_on_demand[estimate_by_key] = estimated["on_demand_price_per_gpu_hour"].to_numpy()

    has_override = resolved["o_price"].notna().to_numpy()
    has_book = resolved["b_price"].notna().to_numpy() & ~has_override
    key_id = resolved["key_id"].to_numpy()
    resolved["price"] = np.where(
        has_override,
        resolved["o_price"],
        np.where(has_book, resolved["b_price"], estimate_price[key_id]),
    )
    resolved["source"] = np.select(
        [has_override, has_book & resolved["b_current"].to_numpy(dtype=bool), has_book],
        [SOURCE_OVERRIDE, SOURCE_API, SOURCE_CACHE],
        SOURCE_ESTIMATE,
    )
    resolved["cache_age"] = (resolved["t"] - resolved["b_confirmed"]).where(
        resolved["source"] == SOURCE_CACHE
    )

    prices = _with_on_demand(resolved, every, estimate_on_demand)
    prices = prices[_key_ids(prices, pd.MultiIndex.from_frame(wanted)) >= 0]
    prices = _drop_repeats(prices)
    estimated_keys = prices.loc[prices["source"] == SOURCE_ESTIMATE, PRICE_KEY].drop_duplicates()
    warnings = []
    if not estimated_keys.empty:
        examples = ", ".join("/".join(map(str, k)) for k in estimated_keys.head(3).to_numpy())
        warnings.append(
            f"{len(estimated_keys)} price key(s) have no price-book or override price in "
            f"this window and are priced by estimate, e.g. {examples}"
        )
    ages = prices["cache_age"].dropna()
    return ResolvedPrices(
        prices=prices[PRICE_COLUMNS].reset_index(drop=True),
        warnings=warnings,
        cache_age_max=ages.max().to_pytimedelta() if not ages.empty else None,
    )


def _with_on_demand(
    resolved: pd.DataFrame, every: pd.DataFrame, estimate_on_demand: np.ndarray
) -> pd.DataFrame:
    """Each point's on-demand baseline: the override's own, else the on-demand key's resolved
    price at that moment, else the estimate's."""
    index = pd.MultiIndex.from_frame(every)
    baseline_id = _key_ids(every.assign(capacity_type=CAPACITY_ON_DEMAND), index)
    frame = resolved.assign(baseline_id=baseline_id[resolved["key_id"].to_numpy()])
    baseline = resolved[resolved["source"] != SOURCE_ESTIMATE][["key_id", "t", "price"]]
    baseline = baseline.rename(columns={"key_id": "baseline_id", "price": "baseline_price"})
    frame = pd.merge_asof(
        frame.sort_values("t"),
        baseline.sort_values("t"),
        on="t",
        by="baseline_id",
        direction="backward",
    )
    on_demand = frame["o_on_demand"].where(frame["o_on_demand"].notna(), frame["baseline_price"])
    frame["on_demand_price_per_gpu_hour"] = on_demand.where(
        on_demand.notna(), estimate_on_demand[frame["baseline_id"].to_numpy()]
    )
    keys = every.iloc[frame["key_id"].to_numpy()].reset_index(drop=True)
    return pd.concat(
        [
            keys,
            frame[["price", "on_demand_price_per_gpu_hour", "source", "t", "cache_age"]]
            .rename(columns={"price": "price_per_gpu_hour", "t": "effective_at"})
            .reset_index(drop=True),
        ],
        axis=1,
    )


def _drop_repeats(prices: pd.DataFrame) -> pd.DataFrame:
    """Keep a key's point only where its price, baseline or source changes (and at the start)."""
    prices = prices.sort_values([*PRICE_KEY, "effective_at"], kind="stable")
    values = ["price_per_gpu_hour", "on_demand_price_per_gpu_hour", "source"]
    same_key = (prices[PRICE_KEY] == prices[PRICE_KEY].shift()).all(axis=1)
    same_value = (prices[values] == prices[values].shift()).all(axis=1)
    return prices[~(same_key & same_value)]
