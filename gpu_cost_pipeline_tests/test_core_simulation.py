"""SimulatedCluster: deterministic, varied, and consistent across window sizes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from gpu_cost_pipeline.core.simulation import SimulatedCluster, groups_for
from gpu_cost_pipeline.core.usage import UsageSettings, parse_nodes, parse_pods
from gpu_cost_pipeline.core.window_usage import derive_window_usage

SETTINGS = UsageSettings(cluster="sim")
T10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T10 + timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def cluster() -> SimulatedCluster:
    return SimulatedCluster(gpu_pods=40, seed=7)


def uids(observation) -> list[str]:
    return [pod["metadata"]["uid"] for pod in observation.pods]


def test_same_seed_same_observation() -> None:
    first = SimulatedCluster(gpu_pods=40, seed=7).observe(T10, at(30))
    second = SimulatedCluster(gpu_pods=40, seed=7).observe(T10, at(30))
    assert first.nodes == second.nodes
    assert first.pods == second.pods
    np.testing.assert_array_equal(first.pod_start_s, second.pod_start_s)
    np.testing.assert_array_equal(first.pod_end_s, second.pod_end_s)
    assert len(first.pods) > 0


def test_different_seed_differs() -> None:
    first = SimulatedCluster(gpu_pods=40, seed=7).observe(T10, at(30))
    other = SimulatedCluster(gpu_pods=40, seed=8).observe(T10, at(30))
    assert set(uids(first)).isdisjoint(uids(other))
    assert not np.array_equal(first.pod_start_s, other.pod_start_s)


def test_sizing() -> None:
    # 31 slots per group at a duty cycle of 0.8: 40 pods → 2 groups, 80 → 3
    assert groups_for(40) == 2
    assert groups_for(80) == 3
    assert groups_for(1) == 1
    with pytest.raises(ValueError):
        SimulatedCluster(gpu_pods=0)


def test_pods_start_and_end_over_time(cluster: SimulatedCluster) -> None:
    morning = set(uids(cluster.observe(T10, at(1))))
    afternoon = set(uids(cluster.observe(at(240), at(241))))
    assert morning and afternoon
    assert morning != afternoon
    # within a longer window some pods start and some end inside it
    observation = cluster.observe(T10, at(60))
    start, end = int(T10.timestamp()), int(at(60).timestamp())
    assert ((observation.pod_start_s > start) & (observation.pod_start_s < end)).any()
    assert ((observation.pod_end_s > start) & (observation.pod_end_s < end)).any()
    assert (observation.pod_start_s < observation.pod_end_s).all()
    assert (observation.pod_end_s > start).all()
    assert (observation.pod_start_s < end).all()


def test_the_pools_cover_the_cases(cluster: SimulatedCluster) -> None:
    parsed = parse_nodes(cluster.observe(T10, at(1)).nodes, SETTINGS)
    frame = parsed.frame.set_index("node")
    assert "RTX-PRO-6000" in set(frame["gpu_model"])  # a current GPU, in the catalog
    assert {"exclusive", "time-slicing", "mig"} <= set(frame["sharing_mode"])
    assert {"spot", "on-demand"} <= set(frame["capacity_type"])
    assert set(frame["provider"]) == {"aws"}
    mig = frame[frame["sharing_mode"] == "mig"].index
    singles = [n for n in mig if parsed.sharing[n].mig_single_profile is not None]
    mixed = [n for n in mig if parsed.sharing[n].mig_single_profile is None]
    assert singles and mixed
    assert frame.loc[singles[0], "gpu_count"] == 8
    time_sliced = frame[frame["sharing_mode"] == "time-slicing"].index
    assert all(parsed.sharing[n].replicas == 4 for n in time_sliced)
    assert parsed.issues == []  # every node's GPU model is in the catalog


def test_pods_parse_cleanly_and_some_lack_a_team(cluster: SimulatedCluster) -> None:
    observation = cluster.observe(T10, at(360))
    parsed = parse_nodes(observation.nodes, SETTINGS)
    pods, kept, issues = parse_pods(observation.pods, parsed, SETTINGS)
    assert issues == []
    assert len(kept) == len(observation.pods)
    assert (pods["team"] == "").any()
    assert (pods["team"] != "").any()
    assert pods["cost_limit_usd"].notna().any()
    assert {"exclusive", "time-slicing", "mig"} <= set(pods["sharing_mode"])


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


def test_one_long_window_equals_many_short_ones(cluster: SimulatedCluster) -> None:
    def usage(start: datetime, end: datetime):
        observation = cluster.observe(start, end)
        return derive_window_usage(
            observation.nodes,
            observation.pods,
            observation.pod_start_s,
            observation.pod_end_s,
            start,
            end,
            SETTINGS,
        )

    whole = usage(T10, at(60))
    minutes = [usage(at(m), at(m + 1)) for m in range(60)]
    pod_keys, node_keys = ["pod_uid", "minute"], ["node", "minute"]
    pods = _sorted(pd.concat([m.pods for m in minutes], ignore_index=True), pod_keys)
    nodes = _sorted(pd.concat([m.nodes for m in minutes], ignore_index=True), node_keys)
    assert len(whole.pods) > 60
    pd.testing.assert_frame_equal(
        _sorted(whole.pods, pod_keys), pods, check_exact=False, rtol=1e-12
    )
    pd.testing.assert_frame_equal(
        _sorted(whole.nodes, node_keys), nodes, check_exact=False, rtol=1e-12
    )
    assert len(whole.nodes) == 60 * len(cluster.nodes)
