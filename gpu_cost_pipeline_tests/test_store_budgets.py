"""The grouped month budget_status reads: the cache of closed hours agrees with a full read,
follows new hours, and is dropped when a cached hour is rewritten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpu_cost_pipeline.core.attribution import grouping_for
from gpu_cost_pipeline.core.specs import Scope
from gpu_cost_pipeline.store import budgets as budget_store
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline_tests.test_budgets_pipeline import CLUSTER, write_spend

SCOPES = [Scope(teams=("vision",)), Scope(teams=("nlp",)), Scope()]


def read(store: CostStore, now: datetime, start: datetime) -> tuple[float, float, dict]:
    grouping = grouping_for(SCOPES, ("namespace", "team", "gpu_model", "capacity_type"))
    with budget_store.session(store) as conn:
        frame = budget_store.month_costs(
            conn,
            CLUSTER,
            start,
            start + timedelta(days=40),
            grouping,
            now - timedelta(hours=2),
            now,
        )
        cache = conn.execute("SELECT count(*) FROM grouped_cost_cache").fetchone()[0]
    by_team = frame.groupby("team")["cost_usd"].sum().to_dict()
    return (
        float(frame["cost_usd"].sum()),
        float(frame["recent_cost_usd"].sum()),
        by_team | {"_cache": cache},
    )


def test_the_cache_of_closed_hours_agrees_and_drops_rewritten_hours(store: CostStore):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(hours=10)
    for hours_ago, team, cost in ((9, "vision", 10.0), (5, "nlp", 20.0), (1, "vision", 5.0)):
        write_spend(store, now - timedelta(hours=hours_ago), cost, team=team)
    total, recent, teams = read(store, now, start)
    assert (total, recent) == (35.0, 5.0) and teams["_cache"] == 1
    assert (teams["vision"], teams["nlp"]) == (15.0, 20.0)
    # Served from the cache: the same answer; new minutes of the open hours are read fresh.
    write_spend(store, now - timedelta(minutes=2), 1.0)
    assert read(store, now, start)[:2] == (36.0, 6.0)
    # A backfill rewrites a cached hour: the cache is dropped and the month re-read.
    write_spend(store, now - timedelta(hours=9), 100.0, team="vision")
    total, _, teams = read(store, now, start)
    assert total == 126.0 and teams["vision"] == 106.0
    # Later, more hours have closed: the cache is extended, not rebuilt, and still agrees.
    later = now + timedelta(hours=3)
    assert read(store, later, start)[0] == 126.0
