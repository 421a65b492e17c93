"""The ``gpu-autoscaler`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gpu_cost_pipeline.cli import budgets, cost, pipeline, prices, roi
from gpu_cost_pipeline.settings import load_settings

DURATION_HELP = "a duration such as 90m, 24h or 30d"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-autoscaler", description="GPU cost tracking for Kubernetes."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    cost_parser = commands.add_parser("cost", help="Show GPU cost for a recent period.")
    cost_parser.add_argument("--namespace", help="Only pods in this namespace.")
    cost_parser.add_argument("--team", help="Only pods labelled with this team.")
    cost_parser.add_argument(
        "--last",
        type=cost.parse_duration,
        help=f"Period to show, {DURATION_HELP} (default 24h; 30d with --roi).",
    )
    cost_parser.add_argument(
        "--format",
        default="summary",
        choices=["summary", "detailed", "json", "csv"],
        help="summary (default) and detailed are tables for people; json and csv are exact.",
    )
    cost_parser.add_argument(
        "--cluster", help="Cluster name (default: $GPU_COST_CLUSTER or 'default')."
    )
    _add_roi_arguments(cost_parser)
    cost_parser.set_defaults(run=_cost_or_roi)

    optimize = commands.add_parser(
        "optimize", help="List idle and underutilized GPUs, worst first, with what to do."
    )
    optimize.add_argument("--namespace", help="Only pods in this namespace.")
    optimize.add_argument("--team", help="Only pods labelled with this team.")
    optimize.add_argument(
        "--last", type=cost.parse_duration, help=f"Period, {DURATION_HELP} (default 7d)."
    )
    optimize.add_argument(
        "--format", default="table", choices=["table", "json", "csv"], help="(default table)"
    )
    optimize.add_argument(
        "--limit", type=int, default=50, help="Rows shown in the table (0: all; default 50)."
    )
    optimize.add_argument(
        "--cluster", help="Cluster name (default: $GPU_COST_CLUSTER or 'default')."
    )
    _add_period_arguments(optimize)
    optimize.set_defaults(run=roi.run_optimize)

    materialize = commands.add_parser(
        "materialize",
        help="Materialize the cost assets for recent minutes or a period: one run per day of "
        "minutes at most, with progress.",
    )
    materialize.add_argument(
        "--last",
        default="60m",
        type=cost.parse_duration,
        help=f"The most recent minutes, {DURATION_HELP} (default 60m).",
    )
    materialize.add_argument(
        "--from",
        dest="start",
        type=pipeline.parse_utc_minute,
        help="Start of a period (UTC, e.g. 2026-11-01 or '2026-11-01 06:30'); with --to.",
    )
    materialize.add_argument(
        "--to",
        dest="end",
        type=pipeline.parse_utc_minute,
        help="End of the period, exclusive (UTC); with --from.",
    )
    materialize.set_defaults(run=pipeline.run_materialize)

    prices.add_parser(commands, cost.parse_duration)
    for name, help_text, run in (
        (
            "budgets",
            "CostBudget statuses: spend, % used, projection, alerts, enforcement.",
            budgets.run_budgets,
        ),
        (
            "attributions",
            "CostAttribution statuses: monthly, daily, hourly cost, $/GPU-hour.",
            budgets.run_attributions,
        ),
    ):
        status_parser = commands.add_parser(name, help=help_text)
        status_parser.add_argument(
            "--format",
            default="table",
            choices=["table", "json"],
            help="table (default) for people; json has every status field.",
        )
        status_parser.add_argument(
            "--cluster", help="Cluster name (default: $GPU_COST_CLUSTER or 'default')."
        )
        status_parser.set_defaults(run=run)

    db = commands.add_parser("db", help="The embedded PostgreSQL server.")
    db.add_argument(
        "action",
        choices=["start", "stop", "status", "running"],
        help="running: exit 0 if the embedded server runs, 1 if not (for scripts).",
    )
    db.set_defaults(run=pipeline.run_db)

    metrics = commands.add_parser(
        "metrics",
        help="Serve Prometheus metrics read from the store on every scrape "
        "(address: $GPU_COST_METRICS_ADDRESS).",
    )
    metrics.add_argument("--once", action="store_true", help="Print one scrape on stdout and exit.")
    metrics.set_defaults(run=_run_metrics)
    return parser


def _run_metrics(args: argparse.Namespace) -> int:
    from gpu_cost_pipeline.metrics.server import run_metrics  # prometheus_client only here

    return run_metrics(args)


def _add_period_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="start",
        type=pipeline.parse_utc_minute,
        help="Start of a period instead of --last (UTC, e.g. 2026-11-01); with --to.",
    )
    parser.add_argument(
        "--to", dest="end", type=pipeline.parse_utc_minute, help="End of the period, exclusive."
    )


def _add_roi_arguments(cost_parser: argparse.ArgumentParser) -> None:
    cost_parser.add_argument(
        "--roi",
        action="store_true",
        help="The ROI report: savings from spot, sharing, autoscaling and waste elimination, "
        "payback, projected annual savings, recommendations.",
    )
    _add_period_arguments(cost_parser)


def _cost_or_roi(args: argparse.Namespace) -> int:
    return roi.run_roi(args) if args.roi else cost.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_settings()  # every command: a bad setting is reported before anything runs
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # one clear line for people; tracebacks are for developers
        print(f"gpu-autoscaler: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
