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
    """The keys, and the on-demand key of each (the baseline every cost row carries)."""
    keys = keys[PRICE_KEY]
    return pd.concat([keys, keys.assign(capacity_type=CAPACITY_ON_DEMAND)]).drop_duplicates(
        ignore_index=True
    )


# How specifically a book series matches a key: an empty zone, instance type or GPU model in
# the series matches any; the more of them it names, the better (zone, then instance, then GPU).
_SERIES_LEVELS = [(zone, instance, gpu) for zone in (1, 0) for instance in (1, 0) for gpu in (1, 0)]


PriceKey = tuple[str, str, str, str, str, str]  # the PRICE_KEY values, in order


def key_tuples(keys: pd.DataFrame) -> list[PriceKey]:
    """The distinct keys of a frame, then the on-demand key of each not among them."""
    found = dict.fromkeys(zip(*(keys[c].tolist() for c in PRICE_KEY), strict=True))
    for key in list(found):
        found.setdefault((*key[:-1], CAPACITY_ON_DEMAND), None)
    return list(found)  # type: ignore[arg-type]


def match_series(
    keys: list[PriceKey], series: dict[PriceKey, int]
) -> list[tuple[PriceKey, int, int]]:
    """Per key the most specific series that applies to it: (key, series id, level), level =
    4 × zone + 2 × instance type + GPU model named by the series."""
    matched = []
    for key in keys:
        provider, region, zone, instance, gpu, capacity = key
        for with_zone, with_instance, with_gpu in _SERIES_LEVELS:
            found = series.get(
                (
                    provider,
                    region,
                    zone if with_zone else "",
                    instance if with_instance else "",
                    gpu if with_gpu else "",
                    capacity,
                )
            )
            if found is not None:
                matched.append((key, found, 4 * with_zone + 2 * with_instance + with_gpu))
                break
    return matched


def match_overrides(keys: list[PriceKey], overrides: list[tuple]) -> list[tuple]:
    """(key..., level, effective_from, price, on-demand price) for every override that applies
    to a key: provider, GPU model and capacity type equal; an empty region, zone or instance
    type matches any. level = 4 × zone + 2 × instance type + region named (most specific wins).
    ``overrides`` rows: PRICE_KEY values, effective_from, price, on-demand price."""
    by_kind: dict[tuple, list[tuple]] = {}
    for row in overrides:
        by_kind.setdefault((row[0], row[4], row[5]), []).append(row)
    matched = []
    for key in keys:
        provider, region, zone, instance, gpu, capacity = key
        for o in by_kind.get((provider, gpu, capacity), ()):
            if o[1] in ("", region) and o[2] in ("", zone) and o[3] in ("", instance):
                level = 4 * (o[2] != "") + 2 * (o[3] != "") + (o[1] != "")
                matched.append((*key, level, *o[6:]))
    return matched


class _KeyIds:
    """Dense ids for a window's price keys (a dict lookup per row: keys are few) followed by
    the on-demand key of each, the baseline every cost row carries. Every later step works on
    these ids and on epoch seconds, never on the string columns."""

    def __init__(self, keys: pd.DataFrame) -> None:
        self.tuples = list(dict.fromkeys(self._tuples(keys)))
        self.wanted = len(self.tuples)
        self._ids = {key: i for i, key in enumerate(self.tuples)}
        for key in self.tuples[: self.wanted]:
            baseline = (*key[:-1], CAPACITY_ON_DEMAND)
            if baseline not in self._ids:
                self._ids[baseline] = len(self.tuples)
                self.tuples.append(baseline)
        self.baseline = np.array(
            [self._ids[(*key[:-1], CAPACITY_ON_DEMAND)] for key in self.tuples], dtype=np.int64
        )

    @staticmethod
    def _tuples(frame: pd.DataFrame):
        return zip(*(frame[c].tolist() for c in PRICE_KEY), strict=True)

    def of(self, frame: pd.DataFrame) -> np.ndarray:
        found = (self._ids.get(key, -1) for key in self._tuples(frame))
        return np.fromiter(found, dtype=np.int64, count=len(frame))


def _seconds(values: pd.Series) -> np.ndarray:
    """Epoch seconds of a datetime column, whatever its unit or time zone."""
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        values = pd.to_datetime(values, utc=True)
    return values.dt.tz_convert(None).to_numpy().astype("datetime64[s]").astype(np.int64)


def _latest(
    point_key: np.ndarray, point_t: np.ndarray, key: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """For each (key, t), the index of the latest point of that key at or before t, or -1.
    One searchsorted over (key, time) packed into an int64."""
    if len(point_key) == 0:
        return np.full(len(key), -1, dtype=np.int64)
    base = min(point_t.min(), t.min()) if len(t) else point_t.min()
    packed = (point_key << 33) | (point_t - base)
    order = np.argsort(packed, kind="stable")
    position = np.searchsorted(packed[order], (key << 33) | (t - base), side="right") - 1
    index = order[np.maximum(position, 0)]
    return np.where((position >= 0) & (point_key[index] == key), index, -1)


def _take(values: np.ndarray, index: np.ndarray, missing: float) -> np.ndarray:
    """values[index], with ``missing`` where index is -1 (also when values is empty)."""
    if len(values) == 0:
        return np.full(len(index), missing)
    return np.where(index >= 0, values[np.maximum(index, 0)], missing)


def _book_arrays(book: pd.DataFrame, ids: _KeyIds, ttl: timedelta) -> dict[str, np.ndarray]:
    """Per key, the points of its most specific book series, with how long each stays current:
    until the next point (the book knows the price up to then), else until the last fetch that
    confirmed it plus the TTL."""
    key = ids.of(book)
    level = book["level"].to_numpy(dtype=np.int64)
    best = np.full(len(ids.tuples), -1, dtype=np.int64)
    np.maximum.at(best, key[key >= 0], level[key >= 0])
    keep = (key >= 0) & (level == best[np.maximum(key, 0)])
    key, effective = key[keep], _seconds(book["effective_at"])[keep]
    confirmed = _seconds(book["confirmed_at"])[keep]
    price = book["price_per_gpu_hour"].to_numpy(dtype=np.float64)[keep]
    order = np.lexsort((effective, key))
    key, effective, confirmed, price = key[order], effective[order], confirmed[order], price[order]
    followed = np.append(key[1:] == key[:-1], False)
    following = np.append(effective[1:], 0)
    until = np.where(followed, following, confirmed + int(ttl.total_seconds()))
    return {"key": key, "t": effective, "confirmed": confirmed, "price": price, "until": until}


def _override_arrays(overrides: pd.DataFrame, ids: _KeyIds) -> dict[str, np.ndarray]:
    key = ids.of(overrides)
    keep = key >= 0
    return {
        "key": key[keep],
        "level": overrides["level"].to_numpy(dtype=np.int64)[keep],
        "t": _seconds(overrides["effective_from"])[keep],
        "price": overrides["price_per_gpu_hour"].to_numpy(dtype=np.float64)[keep],
        "on_demand": overrides["on_demand_price_per_gpu_hour"].to_numpy(dtype=np.float64)[keep],
    }


def _events(count: int, start: int, end: int, book: dict, overrides: dict) -> tuple:
    """(key id, t) at which a key's price may change: the window start, then every book point,
    book expiry and override start inside the window; sorted by key, then time."""
    keys = [np.arange(count, dtype=np.int64)]
    times = [np.full(count, start, dtype=np.int64)]
    for source_key, moments in (
        (book["key"], book["t"]),
        (book["key"], book["until"]),
        (overrides["key"], overrides["t"]),
    ):
        inside = (moments > start) & (moments < end)
        keys.append(source_key[inside])
        times.append(moments[inside])
    key, t = np.concatenate(keys), np.concatenate(times)
    packed = np.unique((key << 33) | (t - start))
    return packed >> 33, (packed & ((1 << 33) - 1)) + start


def _overrides_at(overrides: dict, key: np.ndarray, t: np.ndarray) -> tuple:
    """The override in effect at each event: the most specific one, then the latest."""
    price = np.full(len(key), np.nan)
    on_demand = np.full(len(key), np.nan)
    for level in sorted(set(overrides["level"].tolist()), reverse=True):
        at_level = overrides["level"] == level
        index = _latest(overrides["key"][at_level], overrides["t"][at_level], key, t)
        fill = (index >= 0) & np.isnan(price)
        price[fill] = overrides["price"][at_level][index[fill]]
        on_demand[fill] = overrides["on_demand"][at_level][index[fill]]
    return price, on_demand


def _estimates(ids: _KeyIds, needed: np.ndarray, settings: EstimateSettings) -> tuple:
    """Estimated price and on-demand price per key id (NaN where not needed)."""
    price = np.full(len(ids.tuples), np.nan)
    on_demand = np.full(len(ids.tuples), np.nan)
    for key_id in np.unique(needed).tolist():
        provider, _, _, instance_type, gpu_model, capacity_type = ids.tuples[key_id]
        base = estimate_on_demand_per_gpu(provider, instance_type, gpu_model, settings)
        on_demand[key_id] = base
        price[key_id] = base * capacity_price_ratio(provider, capacity_type, settings)
    return price, on_demand


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
    ids = _KeyIds(keys)
    if ids.wanted == 0:
        return ResolvedPrices(pd.DataFrame(columns=PRICE_COLUMNS), [])
    start_s, end_s = int(pd.Timestamp(start).timestamp()), int(pd.Timestamp(end).timestamp())
    points = _book_arrays(book, ids, ttl)
    chosen = _override_arrays(overrides, ids)
    key, t = _events(len(ids.tuples), start_s, end_s, points, chosen)

    found = _latest(points["key"], points["t"], key, t)
    override_price, override_on_demand = _overrides_at(chosen, key, t)
    has_override = ~np.isnan(override_price)
    has_book = (found >= 0) & ~has_override
    current = has_book & (t < _take(points["until"], found, 0))
    source = np.select(
        [has_override, current, has_book],
        [SOURCE_OVERRIDE, SOURCE_API, SOURCE_CACHE],
        SOURCE_ESTIMATE,
    )
    book_price = _take(points["price"], found, np.nan)
    price = np.where(has_override, override_price, book_price)

    # The baseline: the override's own, else the on-demand key's own price at that moment.
    baseline_id = ids.baseline[key]
    priced = ~np.isnan(price)
    at = _latest(key[priced], t[priced], baseline_id, t)
    on_demand = np.where(
        np.isnan(override_on_demand),
        _take(price[priced], at, np.nan),
        override_on_demand,
    )
    estimate_price, estimate_on_demand = _estimates(
        ids, np.concatenate([key[~priced], baseline_id[np.isnan(on_demand)]]), settings
    )
    price = np.where(priced, price, estimate_price[key])
    on_demand = np.where(np.isnan(on_demand), estimate_on_demand[baseline_id], on_demand)
    confirmed = _take(points["confirmed"], found, 0)
    age = np.where(source == SOURCE_CACHE, t - confirmed, -1)

    # Only the wanted keys, and of each only the points where something changes.
    keep = key < ids.wanted
    changed = np.ones(len(key), dtype=bool)
    changed[1:] = (
        (key[1:] != key[:-1])
        | (price[1:] != price[:-1])
        | (on_demand[1:] != on_demand[:-1])
        | (source[1:] != source[:-1])
    )
    keep &= changed
    chosen_keys = [ids.tuples[i] for i in key[keep].tolist()]
    prices = pd.DataFrame(
        {
            **{c: [k[i] for k in chosen_keys] for i, c in enumerate(PRICE_KEY)},
            "price_per_gpu_hour": price[keep],
            "on_demand_price_per_gpu_hour": on_demand[keep],
            "source": source[keep],
            "effective_at": pd.to_datetime(t[keep], unit="s", utc=True),
        },
        columns=PRICE_COLUMNS,
    )
    oldest = int(age[keep].max()) if keep.any() else -1
    return ResolvedPrices(
        prices=prices,
        warnings=_estimate_warnings(prices),
        cache_age_max=timedelta(seconds=oldest) if oldest >= 0 else None,
    )


def _estimate_warnings(prices: pd.DataFrame) -> list[str]:
    if not (prices["source"].to_numpy() == SOURCE_ESTIMATE).any():
        return []
    estimated = prices.loc[prices["source"] == SOURCE_ESTIMATE, PRICE_KEY].drop_duplicates()
    if estimated.empty:
        return []
    examples = ", ".join("/".join(map(str, k)) for k in estimated.head(3).to_numpy())
    return [
        f"{len(estimated)} price key(s) have no price-book or override price in this window "
        f"and are priced by estimate, e.g. {examples}"
    ]
