"""Every setting of gpu_cost_pipeline, read and validated from the environment in one place.

``SETTINGS`` is the single table: the README's Configuration table is checked against it (a
test), the Dagster resources and the CLI both read it through ``load_settings()``. A bad value
fails at once, when the code location loads or the CLI starts, with one line naming the
variable, the value and what is allowed, never later inside a run. Secrets (the database URL)
are validated but never quoted; resources receive them as ``dg.EnvVar`` so they stay out of
run config and the UI.

No Dagster imports here: the CLI and the benchmarks use this module without the Dagster wiring.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"  # the minute partitions' key format, UTC


class SettingsError(ValueError):
    """One or more settings have invalid values; the message has one line per setting."""


class _Invalid(ValueError):
    """A value a parser rejects; the message says what is allowed."""


# Parsers: text in, typed value out, or _Invalid naming what is allowed.
def _text(raw: str) -> str:
    return raw


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise _Invalid(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _integer(minimum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            value = None
        if value is None or (minimum is not None and value < minimum):
            raise _Invalid("expected an integer" + (f" ≥ {minimum}" if minimum is not None else ""))
        return value

    return parse


def _non_negative_number(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise _Invalid("expected a number ≥ 0, such as 2.50")
    return value


_TRUE, _FALSE, _AUTO = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}, {"auto"}


def _true_false_or_auto(raw: str) -> bool | None:
    value = raw.strip().lower()
    if value in _TRUE | _FALSE | _AUTO:
        return None if value in _AUTO else value in _TRUE
    raise _Invalid("expected true, false or auto")


def _utc_minute(raw: str) -> str:
    try:
        datetime.strptime(raw.strip(), PARTITION_FORMAT)
    except ValueError:
        raise _Invalid(
            "expected a UTC minute as YYYY-MM-DD-HH:MM, such as 2026-01-01-00:00"
        ) from None
    return raw.strip()


def _time_zone(raw: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise _Invalid("expected an IANA time zone such as UTC or Europe/Berlin") from None
    return raw.strip()


def _database_url(raw: str) -> str:
    """A libpq connection URL or key=value string (psycopg's own parser decides)."""
    from psycopg.conninfo import conninfo_to_dict

    if "://" in raw and not raw.startswith(("postgresql://", "postgres://")):
        # e.g. SQLAlchemy's postgresql+psycopg2://, which libpq does not understand
        raise _Invalid("expected a postgresql:// or postgres:// URL (no +driver suffix)")
    try:
        conninfo_to_dict(raw)
    except Exception:  # its message may quote the value, which may hold a password
        raise _Invalid(
            "expected a libpq connection string such as postgresql://user:password@host:5432/db"
        ) from None
    return raw


@dataclass(frozen=True)
class Setting:
    """One environment variable: its documented default, meaning, and how it is read."""

    variable: str
    attribute: str  # the Settings field it sets
    default: Any  # the value when unset or empty
    documented_default: str  # the README's default column
    meaning: str
    parse: Callable[[str], Any] = _text
    secret: bool = False  # validated, never quoted; reaches resources as an EnvVar


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "GPU_COST_DATABASE_URL", "database_url", None, "(empty: embedded)",
        "`postgresql://` URL of an external PostgreSQL/TimescaleDB. Never logged.",
        _database_url, secret=True,
    ),
    Setting(
        "GPU_COST_DATA_DIR", "data_dir", ".data", "`.data`",
        "Folder of the embedded PostgreSQL (when no URL is set).",
    ),
    Setting(
        "GPU_COST_SOURCE", "source", "simulated", "`simulated`",
        "`simulated` or `kubernetes` (live API: serves the minute just closed only).",
        _choice("simulated", "kubernetes"),
    ),
    Setting(
        "GPU_COST_CLUSTER", "cluster", "default", "`default`",
        "Cluster name stored with every row; several clusters can share a database.",
    ),
    Setting(
        "KUBECONFIG", "kubeconfig", None, "`~/.kube/config`",
        "Kubeconfig for the `kubernetes` source.",
    ),
    Setting(
        "GPU_COST_KUBE_CONTEXT", "kube_context", None, "current context",
        "Kubeconfig context.",
    ),
    Setting(
        "GPU_COST_KUBE_IN_CLUSTER", "kube_in_cluster", None, "`auto`",
        "`true` to use the pod's service account, `false` for the kubeconfig; "
        "`auto` = in a pod and no `KUBECONFIG`.",
        _true_false_or_auto,
    ),
    Setting(
        "GPU_COST_CLOUD_PROVIDER", "cloud_provider", "aws", "`aws`",
        "Provider for nodes whose provider ID and labels name none (`aws`, `gcp`, `azure`).",
        _choice("aws", "gcp", "azure"),
    ),
    Setting(
        "GPU_COST_REGION", "region", "us-east-1", "`us-east-1`",
        "Region for nodes without `topology.kubernetes.io/region`.",
    ),
    Setting(
        "GPU_COST_MIG_CONVENTION", "mig_convention", "compute", "`compute`",
        "MIG slice share: `compute` (g/7) or `memory` (slices of 8).",
        _choice("compute", "memory"),
    ),
    Setting(
        "GPU_COST_UNKNOWN_GPU_PRICE", "unknown_gpu_price", 2.50, "`2.50`",
        "Estimated USD per GPU-hour for GPU models not in the catalog.",
        _non_negative_number,
    ),
    Setting(
        "GPU_COST_SIMULATED_PODS", "simulated_pods", 80, "`80`",
        "Size of the simulated cluster, in concurrently running GPU pods.",
        _integer(minimum=1),
    ),
    Setting(
        "GPU_COST_SIMULATED_SEED", "simulated_seed", 42, "`42`",
        "Seed of the simulated cluster (same seed, same minute → same pods).",
        _integer(),
    ),
    Setting(
        "GPU_COST_PARTITION_START", "partition_start", None, "1st of previous month",
        "First minute partition, `YYYY-MM-DD-HH:MM` UTC. Set it in a deployment: the default "
        "moves with the month (a warning says so).",
        _utc_minute,
    ),
    Setting(
        "GPU_COST_CHUNK_MINUTES", "chunk_minutes", 240, "`240`",
        "Minutes processed at a time within a window (bounds memory).",
        _integer(minimum=1),
    ),
    Setting(
        "GPU_COST_RETENTION_DAYS", "retention_days", 90, "`90`",
        "Days of minute rows kept.",
        _integer(minimum=1),
    ),
    Setting(
        "GPU_COST_ROLLUP_RETENTION_DAYS", "rollup_retention_days", 730, "`730`",
        "Days of hourly rollups kept.",
        _integer(minimum=1),
    ),
    Setting(
        "DAGSTER_HOME", "dagster_home", None, "`.data/dagster` (Makefile)",
        "Dagster instance (run history) used by `make run`, `make dev` and "
        "`gpu-autoscaler materialize`; its `dagster.yaml` may use PostgreSQL storage.",
    ),
    Setting(
        "GPU_COST_SPECS_DIR", "specs_dir", None, "(empty)",
        "Folder of CostAttribution/CostBudget YAML files, read on every sensor tick. Empty: the "
        "cluster's custom resources when `GPU_COST_SOURCE=kubernetes`, else none (`make run` and "
        "`make dev` use `examples/simulated`).",
    ),
    Setting(
        "GPU_COST_BUDGET_TIMEZONE", "budget_timezone", "UTC", "`UTC`",
        "Time zone of the budgets' calendar months (an IANA name such as `Europe/Berlin`).",
        _time_zone,
    ),
    Setting(
        "GPU_COST_BURN_RATE_HOURS", "burn_rate_hours", 6, "`6`",
        "Hours of recent cost whose rate projects a budget's month-end spend.",
        _integer(minimum=1),
    ),
    Setting(
        "GPU_COST_ALERT_MAX_ATTEMPTS", "alert_max_attempts", 4, "`4`",
        "Attempts per alert channel per run (429/5xx/connection errors; Retry-After honoured); "
        "a channel still failing is retried on the next sensor tick.",
        _integer(minimum=1),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Validated settings; build with ``load_settings()``."""

    database_url: str | None
    data_dir: str
    source: str
    cluster: str
    kubeconfig: str | None
    kube_context: str | None
    kube_in_cluster: bool | None
    cloud_provider: str
    region: str
    mig_convention: str
    unknown_gpu_price: float
    simulated_pods: int
    simulated_seed: int
    partition_start: str | None
    chunk_minutes: int
    retention_days: int
    rollup_retention_days: int
    dagster_home: str | None
    specs_dir: str | None
    budget_timezone: str
    burn_rate_hours: int
    alert_max_attempts: int

    def first_partition(self, now: datetime | None = None) -> str:
        """The configured first partition, else the 1st of the previous month (UTC)."""
        return self.partition_start or first_of_previous_month(now or datetime.now(UTC))


def first_of_previous_month(now: datetime) -> str:
    """The default first minute partition: enough history for a monthly budget."""
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}-01-00:00"


def variable_of(attribute: str) -> str:
    """The environment variable behind a Settings attribute."""
    return next(s.variable for s in SETTINGS if s.attribute == attribute)


def _describe(setting: Setting, raw: str) -> str:
    return (
        f"{setting.variable} (value not shown)" if setting.secret else f"{setting.variable}={raw!r}"
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from ``environ`` (default ``os.environ``); an unset or empty
    variable takes its default. Raises ``SettingsError`` listing every invalid one."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = environ.get(setting.variable, "")
        if not raw.strip():
            values[setting.attribute] = setting.default
            continue
        try:
            values[setting.attribute] = setting.parse(raw)
        except _Invalid as invalid:
            problems.append(f"{_describe(setting, raw)} is not valid: {invalid}")
    if problems:
        raise SettingsError("; ".join(problems))
    return Settings(**values)


def settings_table_markdown() -> str:
    """The README's Configuration table, generated from ``SETTINGS``."""
    lines = ["| name | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.variable}` | {s.documented_default} | {s.meaning} |" for s in SETTINGS]
    return "\n".join(lines)
