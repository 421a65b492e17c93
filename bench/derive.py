"""derive: in-process cost derivation, no database and no Dagster.

One day (1,440 minutes) of a simulated 1,000-pod cluster: derive_window_usage, resolve_window
(estimates: no live price API) and cost_rows, timed together; the simulation itself is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from bench._common import (
    BENCH_CLUSTER,
    SIMULATED_DAY,
    Stopwatch,
    clean_environment,
    peak_rss_mb,
    progress,
    report,
)
from gpu_cost_pipeline.core.costing import cost_rows
from gpu_cost_pipeline.core.pricing import (
    BOOK_MATCH_COLUMNS,
    OVERRIDE_MATCH_COLUMNS,
    PRICE_KEY,
    EstimateSettings,
    ResolvedPrices,
    resolve_window,
)
from gpu_cost_pipeline.core.simulation import ClusterObservation, SimulatedCluster
from gpu_cost_pipeline.core.usage import UsageSettings
from gpu_cost_pipeline.core.window_usage import derive_window_usage

PODS = 1000
# The UsageSource defaults, so the rows match what the pipeline derives.
USAGE_SETTINGS = UsageSettings(
    cluster=BENCH_CLUSTER, default_provider="aws", default_region="us-east-1"
)


@dataclass
class DerivedCosts:
    frame: pd.DataFrame  # COST_COLUMNS
    pod_rows: int
    idle_rows: int
    usage_s: float
    prices_s: float
    costs_s: float

    @property
    def seconds(self) -> float:
        return self.usage_s + self.prices_s + self.costs_s


def observe(pods: int, start: datetime, end: datetime) -> ClusterObservation:
    return SimulatedCluster(gpu_pods=pods, seed=42).observe(start, end)


def estimated_prices(nodes: pd.DataFrame, start: datetime, end: datetime) -> ResolvedPrices:
    """The nodes' prices over [start, end) with no price book or overrides stored: every key
    priced from the estimates, as the pipeline does on a fresh store."""
    return resolve_window(
        nodes[PRICE_KEY].drop_duplicates(ignore_index=True),
        start,
        end,
        pd.DataFrame(columns=BOOK_MATCH_COLUMNS),
        pd.DataFrame(columns=OVERRIDE_MATCH_COLUMNS),
        EstimateSettings(),
    )


def derive_costs(seen: ClusterObservation, start: datetime, end: datetime) -> DerivedCosts:
    """Cost rows for the window, each stage timed."""
    with Stopwatch() as usage_watch:
        usage = derive_window_usage(
            seen.nodes, seen.pods, seen.pod_start_s, seen.pod_end_s, start, end, USAGE_SETTINGS
        )
    with Stopwatch() as prices_watch:
        prices = estimated_prices(usage.nodes, start, end)
    with Stopwatch() as costs_watch:
        frame = cost_rows(usage.pods, usage.nodes, prices.prices)
    return DerivedCosts(
        frame=frame,
        pod_rows=len(usage.pods),
        idle_rows=len(frame) - len(usage.pods),
        usage_s=usage_watch.seconds,
        prices_s=prices_watch.seconds,
        costs_s=costs_watch.seconds,
    )


def one_day_costs(pods: int = PODS) -> DerivedCosts:
    start, end = SIMULATED_DAY, SIMULATED_DAY + timedelta(days=1)
    progress(f"simulating {pods} pods over {start:%Y-%m-%d} (not timed)")
    seen = observe(pods, start, end)
    progress(f"deriving costs from {len(seen.pods)} pods on {len(seen.nodes)} nodes")
    return derive_costs(seen, start, end)


def main() -> None:
    clean_environment()
    derived = one_day_costs()
    rows = len(derived.frame)
    report(
        "derive_cost_rows",
        rows,
        "rows",
        [f"{PODS} pods, 1440 minutes: {derived.pod_rows} pod-minute + {derived.idle_rows} idle"],
    )
    report(
        "derive_rows_per_s",
        rows / derived.seconds,
        "rows/s",
        [f"{rows} cost rows in {derived.seconds:.2f} s"],
    )
    report("derive_window_usage_s", derived.usage_s, "s")
    report("derive_resolve_prices_s", derived.prices_s, "s")
    report("derive_cost_rows_s", derived.costs_s, "s")
    report("derive_peak_rss_mb", peak_rss_mb(), "MB", ["whole day in one window"])


if __name__ == "__main__":
    main()
