"""``gpu-autoscaler cost``: what GPUs cost over a recent period, and who spent it."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd
from rich.console import Console
from rich.table import Table

from gpu_cost_pipeline.core.costing import ATTRIBUTION_COLUMNS
from gpu_cost_pipeline.core.pricing import SOURCE_ESTIMATE
from gpu_cost_pipeline.settings import load_settings
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline.store.reports import (
    MEASURES,
    CostFilter,
    cost_breakdown,
    data_coverage,
    hours_in,
    hours_with_data,
    utilization_breakdown,
)

_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
DEFAULT_LAST = timedelta(hours=24)
UNLABELLED = "(none)"
IDLE = "(idle GPUs)"
VIEWS = {
    "summary": [("namespace", "Namespace"), ("team", "Team")],
    "detailed": [
        ("namespace", "Namespace"),
        ("team", "Team"),
        ("project", "Project"),
        ("experiment_id", "Experiment"),
        ("cost_center", "Cost center"),
        ("gpu_model", "GPU model"),
        ("capacity_type", "Capacity type"),
    ],
}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90m, 24h or 30d")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def period_bounds(args: argparse.Namespace, default_last: timedelta) -> tuple[datetime, datetime]:
    """[start, end) from --from/--to, else the --last duration (default ``default_last``)
    ending at the current minute."""
    if args.start or args.end:
        if not (args.start and args.end):
            raise ValueError("--from and --to go together")
        if args.start >= args.end:
            raise ValueError("--from must be before --to")
        return args.start, args.end
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    return end - (args.last or default_last), end


def _label(value: object, is_idle: bool, column: str) -> str:
    """Idle GPUs belong to no pod: they get their own line in attribution views."""
    if is_idle and column in ATTRIBUTION_COLUMNS:
        return IDLE
    return str(value) if value else UNLABELLED


def build_report(breakdown: pd.DataFrame, start: datetime, end: datetime, cluster: str) -> dict:
    """Exact figures (floats as computed) for every view; the renderers only format them."""
    total = breakdown[MEASURES].sum()
    idle = breakdown[breakdown["is_idle"]]
    estimated = breakdown.loc[breakdown["price_source"] == SOURCE_ESTIMATE, "cost_usd"].sum()

    def group(column: str) -> list[dict]:
        labels = [
            _label(value, idle, column)
            for value, idle in zip(breakdown[column], breakdown["is_idle"], strict=True)
        ]
        grouped = breakdown.assign(**{column: labels}).groupby(column)[MEASURES].sum()
        grouped = grouped.sort_values("cost_usd", ascending=False).reset_index()
        return grouped.rename(columns={column: "name"}).to_dict("records")

    return {
        "cluster": cluster,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "total_cost_usd": float(total.get("cost_usd", 0.0)),
        "on_demand_cost_usd": float(total.get("on_demand_cost_usd", 0.0)),
        "exclusive_cost_usd": float(total.get("exclusive_cost_usd", 0.0)),
        "gpu_hours": float(total.get("gpu_hours", 0.0)),
        "idle_cost_usd": float(idle["cost_usd"].sum()),
        "idle_gpu_hours": float(idle["gpu_hours"].sum()),
        "estimated_cost_usd": float(estimated),
        **{f"by_{column}": group(column) for column, _ in VIEWS["detailed"]},
    }


USAGE_SUMS = ["cost_usd", "allocated_gpu_hours", "idle_gpu_hours"]
USAGE_SUMS += ["measured_gpu_hours", "used_gpu_hours", "unused_cost_usd"]
SHOWN_PODS = 20


def utilization_report(usage: pd.DataFrame) -> dict[str, list[dict]]:
    """Allocated vs used vs idle per team, node and pod. ``utilization`` is used / measured
    GPU-hours and None (unknown) where nothing was measured; ``unused_cost_usd`` is what was
    paid for GPUs not in use: idle GPUs whole, measured pods × (1 − utilization); unmeasured
    pod time adds nothing (it is unknown, not unused)."""
    frame = usage.assign(
        allocated_gpu_hours=usage["gpu_hours"].where(~usage["is_idle"], 0.0),
        idle_gpu_hours=usage["gpu_hours"].where(usage["is_idle"], 0.0),
        team=[_label(t, i, "team") for t, i in zip(usage["team"], usage["is_idle"], strict=True)],
        pod=usage["pod"].where(~usage["is_idle"], IDLE),
    )

    def grouped(keys: list[str]) -> list[dict]:
        sums = frame.groupby(keys, as_index=False)[USAGE_SUMS].sum()
        measured, allocated = sums["measured_gpu_hours"], sums["allocated_gpu_hours"]
        sums["utilization"] = (sums["used_gpu_hours"] / measured).where(measured > 0)
        sums["measured_share"] = (measured / allocated).where(allocated > 0)
        sums = sums.sort_values(["unused_cost_usd", "cost_usd"], ascending=False)
        records = sums.astype(object).where(sums.notna(), None).to_dict("records")
        return [{k: float(v) if isinstance(v, float) else v for k, v in r.items()} for r in records]

    return {
        "by_team": grouped(["team"]),
        "by_node": grouped(["node", "gpu_model"]),
        "by_pod": grouped(["pod_uid", "pod", "namespace", "team", "node"]),
    }


def _utilization(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1%}"


def render_utilization(usage: dict[str, list[dict]], console: Console) -> None:
    """Allocated, idle and used side by side; unknown utilization shown as unknown."""
    views = [
        ("by_team", "team", [("team", "Team")]),
        ("by_node", "node", [("node", "Node"), ("gpu_model", "GPU model")]),
        ("by_pod", "pod", [("pod", "Pod"), ("namespace", "Namespace"), ("node", "Node")]),
    ]
    for key, noun, columns in views:
        rows = usage[key]
        table = Table(
            title=f"Allocated vs used vs idle, by {noun} (most paid for but unused first)",
            title_justify="left",
        )
        for _, title in columns:
            table.add_column(title)
        for title in ("Cost", "GPU-h allocated", "GPU-h idle", "Utilization", "Measured"):
            table.add_column(title, justify="right")
        table.add_column("Paid for but unused", justify="right")
        for row in rows[:SHOWN_PODS] if key == "by_pod" else rows:
            share = row["measured_share"]
            table.add_row(
                *[str(row[column]) or UNLABELLED for column, _ in columns],
                _money(row["cost_usd"]),
                f"{row['allocated_gpu_hours']:,.2f}",
                f"{row['idle_gpu_hours']:,.2f}",
                _utilization(row["utilization"]),
                "–" if share is None else f"{share:.0%}",
                _money(row["unused_cost_usd"]),
            )
        console.print(table)
        if key == "by_pod" and len(rows) > SHOWN_PODS:
            console.print(f"... and {len(rows) - SHOWN_PODS} more pods (--format json lists all)")
    console.print(
        "Utilization is DCGM's, measured by the prometheus source only; unknown where no "
        "series covered the pod. Paid for but unused = idle GPUs + measured cost × "
        "(1 − utilization); unmeasured time counts as neither."
    )


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def render_tables(report: dict, view: str, console: Console) -> None:
    total = report["total_cost_usd"]
    start = datetime.fromisoformat(report["start"])
    end = datetime.fromisoformat(report["end"])
    console.print(
        f"[bold]GPU cost[/bold] — cluster {report['cluster']} — "
        f"{start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC"
    )
    if report["hours_with_data"] < report["hours_in_period"]:
        console.print(
            f"[yellow]Only {report['hours_with_data']} of the {report['hours_in_period']} hours "
            "in this period have cost data; the rest were not materialized.[/yellow]"
        )
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_row("Total cost", _money(total))
    summary.add_row("GPU-hours", f"{report['gpu_hours']:,.2f}")
    summary.add_row(
        "Idle GPUs",
        f"{_money(report['idle_cost_usd'])} ({_share(report['idle_cost_usd'], total)} of cost, "
        f"{report['idle_gpu_hours']:,.2f} GPU-hours)",
    )
    for figures in report["by_capacity_type"]:
        summary.add_row(
            figures["name"].capitalize(),
            f"{_money(figures['cost_usd'])} ({_share(figures['cost_usd'], total)}, "
            f"{figures['gpu_hours']:,.2f} GPU-hours)",
        )
    summary.add_row("On-demand equivalent", _money(report["on_demand_cost_usd"]))
    if report["estimated_cost_usd"] > 0:
        summary.add_row(
            "Prices",
            f"{_share(report['estimated_cost_usd'], total)} of cost priced by estimate "
            "(list prices where no cloud price API answered)",
        )
    console.print(summary)
    for column, title in VIEWS[view]:
        table = Table(title=f"By {title.lower()}", title_justify="left")
        table.add_column(title)
        table.add_column("Cost", justify="right")
        table.add_column("Share", justify="right")
        table.add_column("GPU-hours", justify="right")
        for row in report[f"by_{column}"]:
            table.add_row(
                row["name"],
                _money(row["cost_usd"]),
                _share(row["cost_usd"], total),
                f"{row['gpu_hours']:,.2f}",
            )
        console.print(table)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    cluster = args.cluster or settings.cluster
    start, end = period_bounds(args, DEFAULT_LAST)
    store = CostStore.from_settings(settings)
    with store.connection() as conn:
        first, last = data_coverage(conn, cluster)
        if first is None:
            print(
                f"No cost data yet for cluster {cluster!r} in {store.describe()}. Materialize the "
                "cost assets first: `make run`, `gpu-autoscaler materialize --last 60m`, or the "
                "Dagster UI (`make dev`).",
                file=sys.stderr,
            )
            return 2
        cost_filter = CostFilter(cluster=cluster, namespace=args.namespace, team=args.team)
        breakdown = cost_breakdown(conn, start, end, cost_filter)
        covered = hours_with_data(conn, cluster, start, end)
        usage = (
            utilization_breakdown(conn, start, end, cost_filter)
            if args.format in ("detailed", "json")
            else None
        )
    if breakdown.empty:
        print(
            f"No cost rows for cluster {cluster!r} between {start:%Y-%m-%d %H:%M} and "
            f"{end:%Y-%m-%d %H:%M} UTC with these filters (data covers {first:%Y-%m-%d %H:%M} to "
            f"{last:%Y-%m-%d %H:%M} UTC).",
            file=sys.stderr,
        )
        return 2
    report = build_report(breakdown, start, end, cluster)
    # Say when part of the period has no data, so a short total is not misread.
    report["hours_with_data"] = covered
    report["hours_in_period"] = hours_in(start, end)
    if usage is not None:
        report["utilization"] = utilization_report(usage)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    elif args.format == "csv":
        breakdown.sort_values("cost_usd", ascending=False).to_csv(sys.stdout, index=False)
    else:
        console = Console()
        render_tables(report, args.format, console)
        if "utilization" in report:
            render_utilization(report["utilization"], console)
    return 0
