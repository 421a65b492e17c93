"""``gpu-autoscaler budgets`` and ``gpu-autoscaler attributions``: the statuses the pipeline
computed (as `kubectl get costbudgets` shows them on a cluster), from the store."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from gpu_cost_pipeline.settings import load_settings
from gpu_cost_pipeline.store import budgets as budget_store
from gpu_cost_pipeline.store.cost_store import CostStore

TABLES = {"budgets": "cost_budget_status", "attributions": "cost_attribution_status"}
KINDS = {"budgets": "CostBudget", "attributions": "CostAttribution"}


def _money(value: object) -> str:
    return f"${float(value):,.2f}" if isinstance(value, int | float) else "–"


def _read(args: argparse.Namespace, what: str) -> list[dict] | None:
    settings = load_settings()
    cluster = args.cluster or settings.cluster
    store = CostStore.from_settings(settings)
    with budget_store.session(store) as conn:
        frame = budget_store.read_statuses(conn, TABLES[what], cluster)
    if frame.empty:
        where = settings.specs_dir or (
            "the cluster"
            if settings.source == "kubernetes"
            else "nowhere (GPU_COST_SPECS_DIR is empty)"
        )
        print(
            f"No {KINDS[what]} statuses for cluster {cluster!r} yet. Specs are read from {where}; "
            "statuses appear after budget_status / cost_attributions run (`make run`, "
            "`gpu-autoscaler materialize`, or `make dev`).",
            file=sys.stderr,
        )
        return None
    rows = []
    for record in frame.to_dict("records"):
        rows.append(
            {
                "namespace": record["namespace"],
                "name": record["name"],
                "source": record["source"],
                "problem": record["problem"] if isinstance(record["problem"], str) else None,
                "computedAt": record["computed_at"].isoformat(),
                "status": json.loads(record["status"]),
            }
        )
    return rows


def _budget_row(row: dict) -> list[str] | None:
    status = row["status"]
    fired = [a["name"] for a in status.get("alertsFired", []) if a.get("firedAt")]
    active = (
        status.get("enforcement", {}).get("action") if status.get("enforcementActive") else None
    )
    return [
        f"{row['namespace']}/{row['name']}",
        _money(status.get("monthlyLimit")),
        _money(status.get("currentSpend")),
        f"{status.get('percentageUsed', 0):.1f}%",
        _money(status.get("projectedMonthlySpend")),
        status.get("budgetStatus", ""),
        f"{active} active" if active else "–",
        ", ".join(fired) or "–",
    ]


def _attribution_row(row: dict) -> list[str] | None:
    status = row["status"]
    if "monthlyCost" not in status:  # no cost data yet
        return None
    return [
        f"{row['namespace']}/{row['name']}",
        status.get("scope", ""),
        _money(status["monthlyCost"]),
        _money(status["dailyCost"]),
        _money(status["hourlyCost"]),
        _money(status["costPerGPUHour"]),
        str(status["activePods"]),
        str(status["activeGPUs"]),
    ]


VIEWS = {
    "budgets": (
        "CostBudgets",
        ("Budget", "Limit", "Spend", "Used", "Projected", "Status", "Enforcement", "Alerts fired"),
        ("Budget", "Status", "Enforcement", "Alerts fired"),
        _budget_row,
    ),
    "attributions": (
        "CostAttributions",
        ("Attribution", "Scope", "Monthly", "Daily", "Hourly", "$/GPU-hour", "Pods", "GPUs"),
        ("Attribution", "Scope"),
        _attribution_row,
    ),
}


def _run(args: argparse.Namespace, what: str) -> int:
    rows = _read(args, what)
    if rows is None:
        return 2
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    title, columns, left, render = VIEWS[what]
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    for row in rows:
        cells = None if row["problem"] else render(row)
        if cells:
            table.add_row(*cells)
    console = _console()
    console.print(table)
    _print_problems(console, [row for row in rows if row["problem"]])
    return 0


def run_budgets(args: argparse.Namespace) -> int:
    return _run(args, "budgets")


def run_attributions(args: argparse.Namespace) -> int:
    return _run(args, "attributions")


def _console() -> Console:
    # Piped output (make run, CI logs) gets room for every column instead of 80 characters.
    return Console() if sys.stdout.isatty() else Console(width=140)


def _print_problems(console: Console, rows: list[dict]) -> None:
    for row in rows:
        console.print(
            f"[red]invalid[/red] {row['namespace']}/{row['name']} ({row['source']}): {row['problem']}",
            highlight=False,
        )
