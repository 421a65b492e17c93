"""``gpu-autoscaler materialize`` and ``gpu-autoscaler db``: run the pipeline without the UI."""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from gpu_cost_pipeline.settings import PARTITION_FORMAT, load_settings
from gpu_cost_pipeline.store.cost_store import CostStore
from gpu_cost_pipeline.store.embedded import embedded_server_running, stop_embedded_server


def _minute_bounds() -> tuple[datetime, datetime]:
    """Start of the first and of the last closed minute partition."""
    from gpu_cost_pipeline.defs.partitions import minute_partitions

    last_key = minute_partitions.get_last_partition_key()
    first_key = minute_partitions.get_first_partition_key()
    if last_key is None or first_key is None:
        raise ValueError("no minute partition has closed yet (check GPU_COST_PARTITION_START)")
    return (
        minute_partitions.time_window_for_partition_key(first_key).start,
        minute_partitions.time_window_for_partition_key(last_key).start,
    )


def partition_ranges(first: datetime, last: datetime, per_run: int) -> list[tuple[str, str]]:
    """Minute partitions [first, last] (partition starts) as (first, last) key ranges of at most
    ``per_run`` partitions each: one run per range, as the backfill policy does."""
    ranges = []
    range_start = first
    while range_start <= last:
        range_end = min(range_start + timedelta(minutes=per_run - 1), last)
        ranges.append(
            (range_start.strftime(PARTITION_FORMAT), range_end.strftime(PARTITION_FORMAT))
        )
        range_start = range_end + timedelta(minutes=1)
    return ranges


def recent_partition_ranges(minutes: int, per_run: int) -> list[tuple[str, str]]:
    """The ``minutes`` minute partitions that closed most recently, as key ranges."""
    earliest, last_start = _minute_bounds()
    first_start = max(last_start - timedelta(minutes=minutes - 1), earliest)
    return partition_ranges(first_start, last_start, per_run)


def period_partition_ranges(start: datetime, end: datetime, per_run: int) -> list[tuple[str, str]]:
    """The minute partitions of [start, end) as key ranges; a clear error when the period is
    empty or reaches outside the partitions (before the first, or not closed yet)."""
    earliest, latest = _minute_bounds()
    if end <= start:
        raise ValueError(f"--to {end:%Y-%m-%d %H:%M} is not after --from {start:%Y-%m-%d %H:%M}")
    if start < earliest:
        raise ValueError(
            f"--from {start:%Y-%m-%d %H:%M} is before the first minute partition "
            f"({earliest:%Y-%m-%d %H:%M} UTC, GPU_COST_MINUTE_PARTITION_DAYS); whole days "
            "before it are materialized as days: give --from and --to as dates (YYYY-MM-DD)"
        )
    last_start = end - timedelta(minutes=1)
    if last_start > latest:
        raise ValueError(
            f"--to {end:%Y-%m-%d %H:%M} is after the last closed minute "
            f"({latest + timedelta(minutes=1):%Y-%m-%d %H:%M} UTC)"
        )
    return partition_ranges(start, last_start, per_run)


@dataclass(frozen=True)
class PeriodPlan:
    """A period as runs: whole UTC days as gpu_cost_history partitions (one run each, one
    materialization per day), the partial days at its edges as minute ranges."""

    days: list[str]
    minute_ranges: list[tuple[str, str]]

    def minutes(self) -> int:
        ranges = sum(_minutes_in(first, last) for first, last in self.minute_ranges)
        return 1440 * len(self.days) + ranges


def period_plan(start: datetime, end: datetime, per_run: int) -> PeriodPlan:
    """Whole days of [start, end) that have closed and lie in the history's day partitions go
    to gpu_cost_history; the rest (partial days) to minute ranges, which must lie in the
    minute partitions."""
    from gpu_cost_pipeline.defs.partitions import daily_partitions

    if end <= start:
        raise ValueError(f"--to {end:%Y-%m-%d %H:%M} is not after --from {start:%Y-%m-%d %H:%M}")
    first_day = daily_partitions.start.astimezone(UTC)
    if start < first_day:
        raise ValueError(
            f"--from {start:%Y-%m-%d %H:%M} is before the start of history "
            f"({first_day:%Y-%m-%d} UTC, GPU_COST_PARTITION_START)"
        )
    day = timedelta(days=1)
    midnight = start.replace(hour=0, minute=0)
    days_start = midnight if start == midnight else midnight + day
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days_end = max(min(end.replace(hour=0, minute=0), today), days_start)
    if days_end == days_start:  # no whole closed day: all minutes
        return PeriodPlan([], period_partition_ranges(start, end, per_run))
    days = []
    while days_start + len(days) * day < days_end:
        days.append((days_start + len(days) * day).strftime("%Y-%m-%d"))
    edges = [(start, days_start), (days_end, end)]
    ranges = [r for a, b in edges if b > a for r in period_partition_ranges(a, b, per_run)]
    return PeriodPlan(days, ranges)


def parse_utc_minute(text: str) -> datetime:
    """``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM``, ``YYYY-MM-DDTHH:MM`` (UTC) to an aware minute."""
    cleaned = text.strip().replace("T", " ").removesuffix("Z")
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d", PARTITION_FORMAT):
        try:
            return datetime.strptime(cleaned, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a UTC time such as 2026-11-01 or '2026-11-01 06:30'"
    )


def run_materialize(args: argparse.Namespace) -> int:
    """In-process runs of gpu_cost_job over a period, one per day of minutes at most (as a
    backfill would), recorded in $DAGSTER_HOME when set (so `make dev` shows them), else in a
    throwaway instance. Progress after each run: partitions done, minutes per second, time
    left."""
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    from gpu_cost_pipeline.definitions import defs
    from gpu_cost_pipeline.defs.partitions import minute_backfill_policy

    per_run = minute_backfill_policy.max_partitions_per_run or 1440
    if args.start is not None or args.end is not None:
        if args.start is None or args.end is None:
            raise ValueError("--from and --to go together")
        plan = period_plan(args.start, args.end, per_run)
    else:
        minutes = max(1, int(args.last.total_seconds() // 60))
        plan = PeriodPlan([], recent_partition_ranges(minutes, per_run))
    instance = (
        dg.DagsterInstance.get() if load_settings().dagster_home else dg.DagsterInstance.ephemeral()
    )
    print(f"Materializing {_describe_plan(plan, per_run)} (UTC)")
    progress = Progress(total=plan.minutes())
    settings = load_settings()
    with instance:
        history = defs.resolve_job_def("gpu_cost_history_job")
        for day in plan.days:
            _run(history, instance, day, partition_key=day)
            progress.done(1440)
        minutes = defs.resolve_job_def("gpu_cost_job")
        for first, last in plan.minute_ranges:
            tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
            _run(minutes, instance, f"{first} … {last}", tags=tags)
            progress.done(_minutes_in(first, last))
        if settings.specs_dir or settings.source == "kubernetes":
            # Budgets and attributions follow the costs, as the sensor does under the daemon.
            for status_job in ("budget_status_job", "cost_attributions_job"):
                _run_status(defs.resolve_job_def(status_job), instance)
    return 0


def _describe_plan(plan: PeriodPlan, per_run: int) -> str:
    parts = []
    if plan.days:
        days = "1 day" if len(plan.days) == 1 else f"{len(plan.days)} days"
        parts.append(f"gpu_cost_history for {days}, {plan.days[0]} … {plan.days[-1]}, a run each")
    if plan.minute_ranges:
        ranges = plan.minute_ranges
        runs = "one run" if len(ranges) == 1 else f"{len(ranges)} runs of at most {per_run} minutes"
        parts.append(f"gpu_cost_job for {ranges[0][0]} … {ranges[-1][1]} as {runs}")
    return "; ".join(parts)


def _minutes_in(first: str, last: str) -> int:
    start = datetime.strptime(first, PARTITION_FORMAT)
    return int((datetime.strptime(last, PARTITION_FORMAT) - start).total_seconds() // 60) + 1


class Progress:
    """Partitions done of the total, minutes materialized per second, and time left."""

    def __init__(self, total: int) -> None:
        self.total, self.finished, self.started = total, 0, time.perf_counter()

    def done(self, minutes: int) -> None:
        self.finished += minutes
        elapsed = time.perf_counter() - self.started
        rate = self.finished / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.finished) / rate if rate > 0 else 0.0
        print(
            f"Progress: {self.finished}/{self.total} minute partitions "
            f"({self.finished / self.total:.0%}), {rate:,.1f} minutes/s, "
            f"{_duration(left)} left",
            flush=True,
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


STATUS_FIGURES = ("budgets", "attributions", "exceeded", "warning", "invalid_specs")


def _run_status(job, instance) -> None:
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )
    if not result.success:
        raise RuntimeError(f"run {result.run_id} of {job.name} failed: {_failure(result)}")
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        figures = {
            key: value.value
            for key, value in materialization.metadata.items()
            if key in STATUS_FIGURES
        }
        print(f"  {materialization.asset_key.to_user_string()}: {figures}")
    print(f"Run {result.run_id} ({job.name}) succeeded in {time.perf_counter() - started:.1f} s")


def _run(job, instance, label: str, **partition) -> None:
    """One in-process run of ``job`` for ``partition_key=`` or range ``tags=``."""
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        # Warnings (bad input, estimated prices) on the console; the full event log stays in
        # the instance for the UI.
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
        **partition,
    )
    elapsed = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"run {result.run_id} for {label} failed: {_failure(result)}")
    # Each minute partition carries its own figures: the run's are their sums.
    sums: dict[str, dict[str, float]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        figures = sums.setdefault(materialization.asset_key.to_user_string(), {})
        for key, value in materialization.metadata.items():
            if key in ("rows", "total_cost_usd", "gpu_hours", "unused_cost_usd"):
                figures[key] = figures.get(key, 0.0) + float(value.value)  # type: ignore[arg-type]
    for name, figures in sums.items():
        shown = {
            k: (round(v, 2) if k.endswith(("_usd", "_hours")) else int(v))
            for k, v in figures.items()
        }
        if shown:
            print(f"  {name}: {shown}")
    print(f"Run {result.run_id} ({label}) succeeded in {elapsed:.1f} s", flush=True)


def _failure(result) -> str:
    """The cause of the first failed step, not only that it failed."""
    for event in result.all_events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            cause = error.cause or error
            return f"step {event.step_key}: {cause.message.strip()}"
    failures = [e.message for e in result.all_events if e.is_failure]
    return failures[-1] if failures else "see the run's logs"


def run_db(args: argparse.Namespace) -> int:
    store = CostStore.from_settings(load_settings())
    embedded = not store.database_url
    if args.action == "running":
        return 0 if embedded and embedded_server_running(store.data_dir) else 1
    if args.action in ("start", "stop") and not embedded:
        print(f"Using an external database ({store.describe()}); nothing to {args.action}.")
        return 0
    if args.action == "stop":
        stopped = stop_embedded_server(store.data_dir)
        print(
            "Stopped the embedded PostgreSQL."
            if stopped
            else "The embedded PostgreSQL was not running."
        )
        return 0
    # start (embedded: starts it) and status: connect, migrate, say what the store is.
    with store.connection() as conn:
        version = conn.execute("SHOW server_version").fetchone()
    where = f"running in {store.data_dir}" if embedded else f"at {store.describe()}"
    kind = "Embedded PostgreSQL" if embedded else "PostgreSQL"
    print(f"{kind} {version[0] if version else '?'} {where} (store mode {store.mode()})")
    note = store.mode_note()
    if note:
        print(note)
    return 0
