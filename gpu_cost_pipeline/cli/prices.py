"""``gpu-autoscaler prices``: the price book in effect, what was priced by estimate, and
negotiated prices (overrides) set without SQL."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd
from rich.console import Console
from rich.table import Table

from gpu_cost_pipeline.core.overrides import (
    CAPACITY_TYPES,
    PROVIDERS,
    OverrideError,
    make_override,
    parse_time,
)
from gpu_cost_pipeline.core.pricing import PRICE_KEY, SOURCE_API, SOURCE_CACHE, SOURCE_OVERRIDE
from gpu_cost_pipeline.settings import load_settings
from gpu_cost_pipeline.store import price_book
from gpu_cost_pipeline.store.cost_store import CostStore

FORMATS = ["table", "json", "csv"]
KEY_HEADERS = {
    "provider": "Provider",
    "region": "Region",
    "zone": "Zone",
    "instance_type": "Instance type",
    "gpu_model": "GPU model",
    "capacity_type": "Capacity",
    "price_per_gpu_hour": "$/GPU-hour",
}
ORIGIN_CLI = "cli"


def add_parser(commands: argparse._SubParsersAction, duration: type) -> None:
    """Register ``prices`` (and ``prices override set|list|remove``) on the main parser."""
    prices = commands.add_parser(
        "prices",
        help="The price book in effect; --estimated: what was priced by estimate.",
        description="Without options: per provider/region/zone/instance type/GPU model/capacity "
        "type the price per GPU-hour in effect now, its source and age, and the overrides.",
    )
    prices.add_argument("--provider", choices=PROVIDERS, help="Only this provider.")
    prices.add_argument(
        "--estimated",
        action="store_true",
        help="List the windows and price keys priced by estimate, and the cost they cover.",
    )
    prices.add_argument(
        "--last", default="7d", type=duration, help="Period for --estimated (default 7d)."
    )
    prices.add_argument("--cluster", help="Cluster for --estimated (default $GPU_COST_CLUSTER).")
    prices.add_argument("--format", default="table", choices=FORMATS)
    prices.set_defaults(run=run_prices)

    actions = prices.add_subparsers(dest="prices_command")
    override = actions.add_parser("override", help="Negotiated prices (price overrides).")
    verbs = override.add_subparsers(dest="override_command", required=True)

    def key_arguments(parser: argparse.ArgumentParser, gpu_model_required: bool) -> None:
        parser.add_argument("--provider", required=True, choices=PROVIDERS)
        parser.add_argument("--capacity-type", required=True, choices=CAPACITY_TYPES)
        parser.add_argument(
            "--gpu-model",
            required=gpu_model_required,
            default="",
            help="Catalog model, e.g. H100-80GB (optional when the instance type is known).",
        )
        parser.add_argument("--region", default="", help="Empty (default) matches any.")
        parser.add_argument("--zone", default="", help="Empty (default) matches any.")
        parser.add_argument("--instance-type", default="", help="Empty (default) matches any.")

    set_ = verbs.add_parser("set", help="Add or replace an override.")
    key_arguments(set_, gpu_model_required=False)
    price = set_.add_mutually_exclusive_group(required=True)
    price.add_argument("--price-per-gpu-hour", help="USD per GPU-hour.")
    price.add_argument("--price-per-instance-hour", help="USD per instance-hour.")
    set_.add_argument("--gpu-count", help="GPUs per instance, when the catalog does not know it.")
    set_.add_argument("--on-demand-price-per-gpu-hour", help="Baseline for savings (optional).")
    set_.add_argument(
        "--effective-from", help="When it starts, ISO 8601 UTC (default: this minute)."
    )
    set_.add_argument("--note", default="", help="Why, e.g. 'EDP 2026: 18%% off'.")
    set_.set_defaults(run=run_override_set)

    list_ = verbs.add_parser("list", help="All overrides (from the CLI, the file, SQL).")
    list_.add_argument("--format", default="table", choices=FORMATS)
    list_.set_defaults(run=run_override_list)

    remove = verbs.add_parser("remove", help="Remove the overrides of exactly one key.")
    key_arguments(remove, gpu_model_required=False)
    remove.add_argument("--effective-from", help="Only the one starting then.")
    remove.set_defaults(run=run_override_remove)


def _store() -> CostStore:
    return CostStore.from_settings(load_settings())


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def book_listing(
    book: pd.DataFrame, overrides: pd.DataFrame, now: datetime, ttl: timedelta
) -> pd.DataFrame:
    """One row per price in effect now: book series (api while confirmed within the TTL, else
    cache) and overrides in effect (the latest per key)."""
    columns = [
        *PRICE_KEY,
        "price_per_gpu_hour",
        "source",
        "feed",
        "effective_since",
        "age_s",
        "term",
    ]
    stale = (pd.Timestamp(now) - book["confirmed_at"]) > pd.Timedelta(ttl)
    rows = book.assign(
        source=[SOURCE_CACHE if s else SOURCE_API for s in stale],
        effective_since=book["effective_at"],
        age_s=(pd.Timestamp(now) - book["confirmed_at"]).dt.total_seconds(),
    )
    active = overrides[overrides["effective_from"] <= pd.Timestamp(now)]
    active = active.sort_values("effective_from").drop_duplicates(PRICE_KEY, keep="last")
    overridden = active.assign(
        source=SOURCE_OVERRIDE,
        feed=active["origin"],
        effective_since=active["effective_from"],
        age_s=(pd.Timestamp(now) - active["effective_from"]).dt.total_seconds(),
        term=active["note"],
    )
    listing = pd.concat([rows[columns], overridden[columns]], ignore_index=True)
    return listing.sort_values([*PRICE_KEY, "source"], ignore_index=True)


def _print(frame: pd.DataFrame, form: str, title: str, console_columns: dict[str, str]) -> None:
    if form == "json":
        print(json.dumps(json.loads(frame.to_json(orient="records", date_format="iso")), indent=2))
    elif form == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        table = Table(title=title, title_justify="left")
        for header in console_columns.values():
            table.add_column(header, justify="right" if "$" in header else "left")
        for row in frame.to_dict("records"):
            table.add_row(*(_cell(row[column]) for column in console_columns))
        Console().print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, pd.Timestamp):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value) if value not in ("", None) else "*"


def run_prices(args: argparse.Namespace) -> int:
    if args.estimated:
        return run_estimated(args)
    settings = load_settings()
    now = datetime.now(UTC)
    with _store().connection() as conn:
        book = price_book.book_in_effect(conn, now, args.provider)
        overrides = price_book.list_overrides(conn)
        fetches = price_book.latest_fetches(conn)
    if args.provider:
        overrides = overrides[overrides["provider"] == args.provider]
    listing = book_listing(book, overrides, now, timedelta(minutes=settings.price_ttl_minutes))
    if listing.empty:
        print(
            "No price book yet: materialize aws_price_book / gcp_price_book / azure_price_book "
            "(or turn on their hourly schedules), or add overrides with `gpu-autoscaler prices override "
            "set`. Until then every price is an estimate.",
            file=sys.stderr,
        )
        _report_failures(fetches)
        return 2
    if args.format != "table":
        _print(listing, args.format, "", {})
        return 0
    shown = listing.assign(age=listing["age_s"].map(_age))
    _print(
        shown,
        "table",
        f"Prices in effect at {now:%Y-%m-%d %H:%M} UTC (api: confirmed within "
        f"{settings.price_ttl_minutes} min; cache: older, still the newest known)",
        {
            **KEY_HEADERS,
            "source": "Source",
            "feed": "From",
            "effective_since": "Effective since",
            "age": "Age",
        },
    )
    _report_failures(fetches)
    return 0


def _report_failures(fetches: pd.DataFrame) -> None:
    for row in fetches[fetches["status"] == "failed"].to_dict("records"):
        since = row["last_ok_at"]
        print(
            f"{row['provider']}: the last fetch failed at {row['finished_at']:%Y-%m-%d %H:%M} UTC "
            f"({row['message']}); last good fetch: "
            f"{f'{since:%Y-%m-%d %H:%M} UTC' if pd.notna(since) else 'never'}",
            file=sys.stderr,
        )


def estimated_windows(cost: pd.DataFrame) -> pd.DataFrame:
    """Consecutive hours of one price key priced by estimate, merged into windows."""
    key = ["provider", "region", "instance_type", "gpu_model", "capacity_type"]
    if cost.empty:
        return pd.DataFrame(columns=[*key, "start", "end", "minutes", "cost_usd"])
    cost = cost.sort_values([*key, "hour"])
    new_key = (cost[key] != cost[key].shift()).any(axis=1)
    gap = cost["hour"] != cost["hour"].shift() + pd.Timedelta(hours=1)
    cost = cost.assign(window=(new_key | gap).cumsum())
    windows = cost.groupby([*key, "window"], as_index=False).agg(
        start=("hour", "min"), last=("hour", "max"), minutes=("minutes", "sum"),
        cost_usd=("cost_usd", "sum"),
    )  # fmt: skip
    windows["end"] = windows["last"] + pd.Timedelta(hours=1)
    return windows[[*key, "start", "end", "minutes", "cost_usd"]]


def run_estimated(args: argparse.Namespace) -> int:
    settings = load_settings()
    cluster = args.cluster or settings.cluster
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - args.last
    with _store().connection() as conn:
        cost = price_book.estimated_cost(conn, cluster, start, end)
        total = price_book.total_cost(conn, cluster, start, end)
    windows = estimated_windows(cost)
    estimated = float(windows["cost_usd"].sum())
    if args.format == "json":
        print(
            json.dumps(
                {
                    "cluster": cluster,
                    "start": start.isoformat(),
                    "end": end.isoformat(),
                    "total_cost_usd": total,
                    "estimated_cost_usd": estimated,
                    "estimated_share": estimated / total if total else 0.0,
                    "windows": json.loads(windows.to_json(orient="records", date_format="iso")),
                },
                indent=2,
            )
        )
        return 0
    if args.format == "csv":
        windows.to_csv(sys.stdout, index=False)
        return 0
    share = f"{estimated / total:.1%}" if total else "–"
    print(
        f"Priced by estimate, cluster {cluster}, {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} "
        f"UTC: ${estimated:,.2f} of ${total:,.2f} ({share})."
    )
    if windows.empty:
        return 0
    _print(
        windows,
        "table",
        "Windows (whole hours containing estimate-priced minutes) and price keys",
        {
            "provider": "Provider",
            "region": "Region",
            "instance_type": "Instance type",
            "gpu_model": "GPU model",
            "capacity_type": "Capacity",
            "start": "From",
            "end": "To",
            "minutes": "Minutes",
            "cost_usd": "$ estimated",
        },
    )
    print(
        "To re-price them: fetch the price book (or add an override), then re-materialize "
        "those partitions (`gpu-autoscaler materialize`, or a backfill in the UI)."
    )
    return 0


def _key(args: argparse.Namespace) -> dict:
    return {
        "provider": args.provider,
        "region": args.region,
        "zone": args.zone,
        "instance_type": args.instance_type,
        "gpu_model": args.gpu_model,
        "capacity_type": args.capacity_type,
    }


def run_override_set(args: argparse.Namespace) -> int:
    fields = {
        **_key(args),
        "price_per_gpu_hour": args.price_per_gpu_hour,
        "price_per_instance_hour": args.price_per_instance_hour,
        "on_demand_price_per_gpu_hour": args.on_demand_price_per_gpu_hour,
        "gpu_count": args.gpu_count,
        "effective_from": args.effective_from
        or datetime.now(UTC).replace(second=0, microsecond=0).isoformat(),
        "note": args.note,
    }
    try:
        override = make_override(fields, "override")
    except OverrideError as error:
        print(f"gpu-autoscaler: error: {error}", file=sys.stderr)
        return 2
    with _store().connection() as conn, conn.transaction():
        price_book.upsert_override(conn, {**override, "origin": ORIGIN_CLI})
    print(
        f"Override set: {override['provider']}/{override['region'] or '*'}/"
        f"{override['zone'] or '*'}/{override['instance_type'] or '*'}/{override['gpu_model']}/"
        f"{override['capacity_type']} = ${override['price_per_gpu_hour']:.4f} per GPU-hour from "
        f"{override['effective_from']:%Y-%m-%d %H:%M} UTC. Windows materialized from then on "
        "use it; re-materialize earlier windows of that period to re-price them."
    )
    return 0


def run_override_list(args: argparse.Namespace) -> int:
    with _store().connection() as conn:
        overrides = price_book.list_overrides(conn)
    if overrides.empty and args.format == "table":
        print("No price overrides.", file=sys.stderr)
        return 0
    _print(
        overrides,
        args.format,
        "Price overrides (an empty region, zone or instance type matches any)",
        {
            **KEY_HEADERS,
            "price_per_instance_hour": "$/instance-hour",
            "effective_from": "From",
            "origin": "Set by",
            "note": "Note",
        },
    )
    return 0


def run_override_remove(args: argparse.Namespace) -> int:
    key = _key(args)
    try:
        if not key["gpu_model"]:
            key["gpu_model"] = make_override(
                {**key, "price_per_gpu_hour": 0, "effective_from": "2000-01-01"}, "override"
            )["gpu_model"]
        since = (
            parse_time(args.effective_from, "effective_from", "override")
            if args.effective_from
            else None
        )
    except OverrideError as error:
        print(f"gpu-autoscaler: error: {error}", file=sys.stderr)
        return 2
    with _store().connection() as conn, conn.transaction():
        removed = price_book.remove_overrides(conn, key, since)
    if not removed:
        print("No override matches exactly that key; see `prices override list`.", file=sys.stderr)
        return 1
    print(f"Removed {len(removed)} override(s). Re-materialize their windows to re-price them.")
    return 0
