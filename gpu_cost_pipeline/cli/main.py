"""The ``gpu-autoscaler`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gpu_cost_pipeline.cli import budgets, cost, pipeline
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
        default="24h",
        type=cost.parse_duration,
        help=f"Period to show, {DURATION_HELP} (default 24h).",
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
    cost_parser.set_defaults(run=cost.run)

    materialize = commands.add_parser(
        "materialize", help="Materialize the cost assets for the most recent minutes, as one run."
    )
    materialize.add_argument(
        "--last",
        default="60m",
        type=cost.parse_duration,
        help=f"Minutes to materialize, {DURATION_HELP}.",
    )
    materialize.set_defaults(run=pipeline.run_materialize)

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
    return parser


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
