"""The reads the Prometheus exporter makes on each scrape: four small queries over one
connection, each answered from an index or a rollup, whatever the history's length.

- the latest stored minute (backward scan of the (cluster, minute) index): the cluster's cost
  in it, the part priced from estimates, the pods that ran;
- the running pods' accumulated costs (the latest minute's rows joined to
  ``gpu_pod_cost_totals`` and ``gpu_pods``);
- the cluster's accumulated totals and savings (``gpu_cluster_cost_totals``, one row);
- budget utilization from ``cost_budget_status`` (written by the budget_status asset).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg


@dataclass(frozen=True)
class PodCost:
    namespace: str
    pod: str
    gpu_type: str
    capacity_type: str
    cost_usd: float


@dataclass(frozen=True)
class ExporterSnapshot:
    """What one scrape reports for one cluster."""

    latest_minute: datetime | None = None  # start of the newest minute with cost rows
    latest_minute_cost_usd: float = 0.0  # pods + idle, that minute
    latest_minute_estimated_cost_usd: float = 0.0  # the part priced from estimates
    total_cost_usd: float = 0.0  # accumulated, pods + idle
    spot_savings_usd: float = 0.0  # on-demand baseline − actual, pods only
    sharing_savings_usd: float = 0.0  # exclusive baseline − actual, pods only
    pods: list[PodCost] = field(default_factory=list)  # running in the latest minute
    budgets: dict[str, float] = field(default_factory=dict)  # budget name → % used

    @property
    def hourly_cost_rate_usd(self) -> float:
        return self.latest_minute_cost_usd * 60

    @property
    def estimated_price_share(self) -> float:
        if self.latest_minute_cost_usd <= 0:
            return 0.0
        return self.latest_minute_estimated_cost_usd / self.latest_minute_cost_usd


def read_snapshot(conn: psycopg.Connection, cluster: str) -> ExporterSnapshot:
    """Everything a scrape needs, in one read-only transaction (one consistent view)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        latest = conn.execute(
            "SELECT max(minute) FROM gpu_cost WHERE cluster = %s", (cluster,)
        ).fetchone()
        minute = latest[0] if latest else None
        cost, estimated = _minute_costs(conn, cluster, minute) if minute else (0.0, 0.0)
        total, spot, sharing = _totals(conn, cluster)
        return ExporterSnapshot(
            latest_minute=minute,
            latest_minute_cost_usd=cost,
            latest_minute_estimated_cost_usd=estimated,
            total_cost_usd=total,
            spot_savings_usd=spot,
            sharing_savings_usd=sharing,
            pods=running_pod_costs(conn, cluster, minute) if minute else [],
            budgets=budget_percentages(conn, cluster),
        )


def _minute_costs(conn: psycopg.Connection, cluster: str, minute: datetime) -> tuple[float, float]:
    row = conn.execute(
        "SELECT coalesce(sum(cost_usd), 0),"
        " coalesce(sum(cost_usd) FILTER (WHERE price_source = 'estimate'), 0)"
        " FROM gpu_cost WHERE cluster = %s AND minute >= %s AND minute < %s",
        (cluster, minute, minute + timedelta(minutes=1)),
    ).fetchone()
    return (float(row[0]), float(row[1])) if row else (0.0, 0.0)


def _totals(conn: psycopg.Connection, cluster: str) -> tuple[float, float, float]:
    row = conn.execute(
        "SELECT cost_usd, spot_savings_usd, sharing_savings_usd FROM gpu_cluster_cost_totals"
        " WHERE cluster = %s",
        (cluster,),
    ).fetchone()
    return (float(row[0]), float(row[1]), float(row[2])) if row else (0.0, 0.0, 0.0)


def running_pod_costs(conn: psycopg.Connection, cluster: str, minute: datetime) -> list[PodCost]:
    """The accumulated cost of every pod with a cost row in ``minute``, most expensive first.

    Grouped by the exported labels: a pod deleted and recreated under the same name within
    the minute (a StatefulSet's) would otherwise give two samples with one label set, and
    Prometheus rejects a whole scrape for that.
    """
    rows = conn.execute(
        """
        SELECT p.namespace, p.pod, c.gpu_model, c.capacity_type, sum(t.cost_usd) AS cost_usd
        FROM gpu_cost AS c
        JOIN gpu_pods AS p ON p.cluster = c.cluster AND p.pod_uid = c.pod_uid
        JOIN gpu_pod_cost_totals AS t ON t.cluster = c.cluster AND t.pod_uid = c.pod_uid
        WHERE c.cluster = %s AND c.minute >= %s AND c.minute < %s AND NOT c.is_idle
        GROUP BY 1, 2, 3, 4
        ORDER BY cost_usd DESC
        """,
        (cluster, minute, minute + timedelta(minutes=1)),
    ).fetchall()
    return [PodCost(ns, pod, gpu, capacity, float(cost)) for ns, pod, gpu, capacity, cost in rows]


def budget_percentages(conn: psycopg.Connection, cluster: str) -> dict[str, float]:
    """Budget → percentage of its monthly limit used, for every valid CostBudget.

    CostBudgets are namespaced but the seed's metric has only a ``budget`` label: a name that
    is unique in the cluster is exported as is, one used in several namespaces as
    ``namespace/name`` so that no two budgets share a series.
    """
    rows = conn.execute(
        "SELECT namespace, name, current_spend / monthly_limit * 100 FROM cost_budget_status"
        " WHERE cluster = %s AND problem IS NULL AND monthly_limit > 0"
        " AND current_spend IS NOT NULL",
        (cluster,),
    ).fetchall()
    namespaces_by_name = Counter(name for _, name, _ in rows)
    return {
        (name if namespaces_by_name[name] == 1 else f"{namespace}/{name}"): float(percentage)
        for namespace, name, percentage in rows
    }
