"""Cost rows: one per pod per minute plus one idle row per node-minute with unheld GPUs.

    cost_usd           = price_per_gpu_hour           × gpu_share × seconds / 3600
    on_demand_cost_usd = on_demand_price_per_gpu_hour × gpu_share × seconds / 3600
    exclusive_cost_usd = price_per_gpu_hour × whole GPUs the pod would need alone × seconds / 3600

so that, per node-minute, pods + idle = price × GPUs on the node × seconds / 3600.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gpu_cost_pipeline.core.pricing import PRICE_KEY

COST_COLUMNS = [
    "minute",
    "cluster",
    "pod_uid",
    "namespace",
    "pod",
    "node",
    "team",
    "project",
    "experiment_id",
    "cost_center",
    "gpu_model",
    "capacity_type",
    "instance_type",
    "provider",
    "region",
    "zone",
    "sharing_mode",
    "is_idle",
    "gpu_share",
    "seconds",
    "gpu_hours",
    "price_per_gpu_hour",
    "on_demand_price_per_gpu_hour",
    "cost_usd",
    "on_demand_cost_usd",
    "exclusive_cost_usd",
    "price_source",
    "gpu_utilization",
]

IDLE_UID_PREFIX = "idle:"
_KEY_STRIDE = 1 << 36  # > any epoch second we will see, so (key code, time) packs into an int64


class MissingPriceError(ValueError):
    """Usage whose price key has no price point in effect."""


def _price_key_codes(usage: pd.DataFrame, points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One dense int64 code per distinct price key, shared by usage rows and price points.

    Factorizing column by column (re-densifying after each step so the codes never overflow)
    is far faster than merging on six string columns over millions of rows.
    """
    codes = np.zeros(len(usage) + len(points), dtype=np.int64)
    for column in PRICE_KEY:
        values = pd.concat([usage[column], points[column]], ignore_index=True)
        column_codes, uniques = pd.factorize(values, use_na_sentinel=False)
        codes = pd.factorize(codes * len(uniques) + column_codes)[0]
    return codes[: len(usage)], codes[len(usage) :]


def _epoch_seconds(times: pd.Series) -> pd.Series:
    """Epoch seconds whatever the datetime unit (pandas 3 uses us for Python datetimes)."""
    return times.astype("datetime64[s, UTC]").astype("int64")


def _attach_prices(usage: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """The price in effect at each row's minute: the latest price point for the row's key at or
    before that minute. Vectorized as one searchsorted over (key code, effective time)."""
    if len(prices) == 0 and len(usage) > 0:
        raise MissingPriceError(
            f"{len(usage)} usage rows and no price points; materialize gpu_prices for this window"
        )
    usage_codes, point_codes = _price_key_codes(usage, prices)
    point_seconds = _epoch_seconds(pd.to_datetime(prices["effective_at"], utc=True))
    order = np.lexsort((point_seconds.to_numpy(), point_codes))
    point_keys = point_codes[order] * _KEY_STRIDE + point_seconds.to_numpy()[order]
    row_seconds = _epoch_seconds(usage["minute"]).to_numpy()
    position = (
        np.searchsorted(point_keys, usage_codes * _KEY_STRIDE + row_seconds, side="right") - 1
    )
    found = (position >= 0) & (point_codes[order][np.maximum(position, 0)] == usage_codes)
    if not found.all():
        missing = usage.loc[~found, PRICE_KEY].drop_duplicates().head(5).to_dict("records")
        raise MissingPriceError(
            f"{int((~found).sum())} usage rows have no price in effect, e.g. keys {missing}; "
            "materialize gpu_prices for this window first"
        )
    chosen = order[position]
    return usage.assign(
        price_per_gpu_hour=prices["price_per_gpu_hour"].to_numpy(dtype="float64")[chosen],
        on_demand_price_per_gpu_hour=prices["on_demand_price_per_gpu_hour"].to_numpy(
            dtype="float64"
        )[chosen],
        price_source=prices["source"].to_numpy(dtype=object)[chosen],
    )


def cost_rows(
    pod_usage: pd.DataFrame, node_usage: pd.DataFrame, prices: pd.DataFrame
) -> pd.DataFrame:
    """Cost rows for a window from its pod usage, node usage and price points."""
    if "gpu_utilization" not in pod_usage:
        pod_usage = pod_usage.assign(gpu_utilization=np.nan)  # the source measured none
    pods = _attach_prices(pod_usage, prices)
    pods = pods.assign(is_idle=False)
    whole_gpus = np.where(
        pods["gpu_share"] > 0, np.maximum(1.0, np.ceil(pods["gpu_share"] - 1e-9)), 0.0
    )

    idle = node_usage[node_usage["idle_gpus"] > 0]
    idle = idle.assign(
        pod_uid=IDLE_UID_PREFIX + idle["node"],
        namespace="",
        pod="",
        team="",
        project="",
        experiment_id="",
        cost_center="",
        is_idle=True,
        gpu_share=idle["idle_gpus"],
        gpu_utilization=np.nan,  # no pod held these GPUs
    )
    idle = _attach_prices(idle, prices)

    rows = pd.concat([pods, idle], ignore_index=True)
    hours = rows["seconds"].to_numpy(dtype="float64") / 3600.0
    share = rows["gpu_share"].to_numpy(dtype="float64")
    price = rows["price_per_gpu_hour"].to_numpy(dtype="float64")
    exclusive_gpus = np.concatenate([whole_gpus, idle["gpu_share"].to_numpy(dtype="float64")])
    rows["gpu_hours"] = share * hours
    rows["cost_usd"] = price * share * hours
    rows["on_demand_cost_usd"] = (
        rows["on_demand_price_per_gpu_hour"].to_numpy(dtype="float64") * share * hours
    )
    rows["exclusive_cost_usd"] = price * exclusive_gpus * hours
    return rows[COST_COLUMNS]


def node_balance_error(
    costs: pd.DataFrame, node_usage: pd.DataFrame, prices: pd.DataFrame
) -> float:
    """Largest relative gap, over node-minutes, between pods + idle and the node's GPU cost."""
    if node_usage.empty:
        return 0.0
    nodes = _attach_prices(node_usage, prices)
    node_cost = nodes["price_per_gpu_hour"] * nodes["gpu_count"] * nodes["seconds"] / 3600.0
    expected = pd.Series(
        node_cost.to_numpy(), index=pd.MultiIndex.from_frame(nodes[["node", "minute"]])
    )
    actual = costs.groupby(["node", "minute"])["cost_usd"].sum()
    actual, expected = actual.align(expected, fill_value=0.0)
    scale = np.maximum(expected.abs(), 1e-12)
    return float(((actual - expected).abs() / scale).max())


# The dimensions a pod's cost is attributed to (idle rows have none).
ATTRIBUTION_COLUMNS = ["namespace", "team", "project", "experiment_id", "cost_center"]
POD_LOOKUP_COLUMNS = [*ATTRIBUTION_COLUMNS, "sharing_mode"]


def attach_attributes(
    pod_minutes: pd.DataFrame, pods: pd.DataFrame, node_minutes: pd.DataFrame
) -> pd.DataFrame:
    """Pod-minute rows with their pod's attribution and their node's price key.

    Looked up by index rather than merged, which keeps millions of rows fast. A node's price key
    is taken as fixed within a window (a node does not change instance or capacity type).
    """
    by_uid = pods.drop_duplicates("pod_uid").set_index("pod_uid")[POD_LOOKUP_COLUMNS]
    attribution = by_uid.reindex(pod_minutes["pod_uid"].to_numpy()).fillna("")
    by_node = node_minutes.drop_duplicates("node", keep="last").set_index("node")[PRICE_KEY]
    node_keys = by_node.reindex(pod_minutes["node"].to_numpy())
    if node_keys["gpu_model"].isna().any():
        missing = node_keys.index[node_keys["gpu_model"].isna()].unique()[:5].tolist()
        raise ValueError(f"pod usage on nodes with no node usage in the window: {missing}")
    return pd.concat(
        [
            pod_minutes.reset_index(drop=True),
            attribution.reset_index(drop=True),
            node_keys.reset_index(drop=True),
        ],
        axis=1,
    )


def cost_problems(costs: pd.DataFrame) -> dict[str, int]:
    """Counts for the data-quality checks of a window's cost rows."""
    negative = (costs[["cost_usd", "on_demand_cost_usd", "exclusive_cost_usd"]] < 0).any(axis=1)
    return {
        "negative_cost_rows": int(negative.sum()),
        "duplicate_pod_minutes": int(costs.duplicated(["pod_uid", "minute"]).sum()),
    }
