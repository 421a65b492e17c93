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
                "problem": record["problem"],
                "computedAt": record["computed_at"].isoformat(),
                "status": json.loads(record["status"]),
            }
        )
    return rows


def run_budgets(args: argparse.Namespace) -> int:
    rows = _read(args, "budgets")
    if rows is None:
        return 2
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="CostBudgets", title_justify="left")
    for column in (
        "Namespace",
        "Name",
        "Limit",
        "Spend",
        "% used",
        "Projected",
        "Status",
        "Enforcement",
        "Alerts fired",
        "Scope",
    ):
        table.add_column(
            column,
            justify="right" if column in ("Limit", "Spend", "% used", "Projected") else "left",
        )
    problems = []
    for row in rows:
        status = row["status"]
        if row["problem"]:
            problems.append(row)
            continue
        fired = [a["name"] for a in status.get("alertsFired", []) if a.get("firedAt")]
        enforcement = (
            status.get("enforcement", {}).get("action", "")
            if status.get("enforcementActive")
            else ""
        )
        table.add_row(
            row["namespace"],
            row["name"],
            _money(status.get("monthlyLimit")),
            _money(status.get("currentSpend")),
            f"{status.get('percentageUsed', 0):.1f}%",
            _money(status.get("projectedMonthlySpend")),
            status.get("budgetStatus", ""),
            f"{enforcement} active" if enforcement else "–",
            ", ".join(fired) or "–",
            status.get("scope", ""),
        )
    console = Console()
    console.print(table)
    _print_problems(console, problems)
    return 0


def run_attributions(args: argparse.Namespace) -> int:
    rows = _read(args, "attributions")
    if rows is None:
        return 2
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="CostAttributions", title_justify="left")
    for column in (
        "Namespace",
        "Name",
        "Scope",
        "Monthly",
        "Daily",
        "Hourly",
        "$/GPU-hour",
        "Active pods",
        "Active GPUs",
        "Total",
    ):
        table.add_column(
            column, justify="left" if column in ("Namespace", "Name", "Scope") else "right"
        )
    problems = []
    for row in rows:
        status = row["status"]
        if row["problem"] or "monthlyCost" not in status:
            if row["problem"]:
                problems.append(row)
            continue
        table.add_row(
            row["namespace"],
            row["name"],
            status.get("scope", ""),
            _money(status["monthlyCost"]),
            _money(status["dailyCost"]),
            _money(status["hourlyCost"]),
            _money(status["costPerGPUHour"]),
            str(status["activePods"]),
            str(status["activeGPUs"]),
            _money(status["totalCost"]),
        )
    console = Console()
    console.print(table)
    _print_problems(console, problems)
    return 0


def _print_problems(console: Console, rows: list[dict]) -> None:
    for row in rows:
        console.print(
            f"[red]invalid[/red] {row['namespace']}/{row['name']} ({row['source']}): {row['problem']}",
            highlight=False,
        )
