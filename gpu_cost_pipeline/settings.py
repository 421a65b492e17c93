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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


def _host_port(raw: str) -> tuple[str, int]:
    host, _, port = raw.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _Invalid("expected HOST:PORT, such as 0.0.0.0:9410")
    return host.strip("[]"), int(port)  # [::1]:9410 → ::1


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


def _http_url(raw: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid("expected an http:// or https:// URL such as http://prometheus:9090")
    return raw.strip().rstrip("/")


def _fraction(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # also refuses nan
        raise _Invalid("expected a fraction from 0 to 1, such as 0.30")
    return value


_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(\\.|[^"\\])*"\s*'
_MATCHERS = re.compile(f"^{_MATCHER}(,{_MATCHER})*$")


def _label_matchers(raw: str) -> str:
    if not _MATCHERS.match(raw):
        raise _Invalid('expected PromQL label matchers such as cluster="prod",env=~"p.*"')
    return raw.strip()


def _cron(raw: str) -> str:
    fields = raw.split()
    if len(fields) != 5 or not all(set(f) <= set("0123456789*/,-") for f in fields):
        raise _Invalid("expected a 5-field cron schedule such as '0 * * * *'")
    return " ".join(fields)


def _bigquery_table(raw: str) -> str:
    parts = raw.strip().strip("`").split(".")
    if len(parts) != 3 or not all(parts):
        raise _Invalid("expected a BigQuery table as project.dataset.table")
    return ".".join(parts)


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
        "`simulated`, `kubernetes` (live API: serves the minute just closed only) or "
        "`prometheus` (kube-state-metrics and DCGM history: backfills, utilization, seconds).",
        _choice("simulated", "kubernetes", "prometheus"),
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
        "Start of history, `YYYY-MM-DD-HH:MM` UTC: the first day partition of `gpu_cost_history` "
        "and `roi_report` (its day), and the earliest minute partition. Set it in a deployment: "
        "the default moves with the month (a warning says so).",
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
        "GPU_COST_PROMETHEUS_URL", "prometheus_url", None, "(empty)",
        "Base URL of the Prometheus that scrapes kube-state-metrics and the DCGM exporter, e.g. "
        "`http://prometheus.monitoring:9090`; required by the `prometheus` source. Treated "
        "as a secret (it may carry credentials).",
        _http_url, secret=True,
    ),
    Setting(
        "GPU_COST_PROMETHEUS_BEARER_TOKEN", "prometheus_bearer_token", None, "(empty)",
        "Bearer token for Prometheus (e.g. from a Secret). Never logged.",
        secret=True,
    ),
    Setting(
        "GPU_COST_PROMETHEUS_BEARER_TOKEN_FILE", "prometheus_bearer_token_file", None, "(empty)",
        "File holding the bearer token (a mounted Secret or service-account token); re-read "
        "for every window, so rotation needs no restart.",
    ),
    Setting(
        "GPU_COST_PROMETHEUS_USERNAME", "prometheus_username", None, "(empty)",
        "Basic auth user for Prometheus.",
    ),
    Setting(
        "GPU_COST_PROMETHEUS_PASSWORD", "prometheus_password", None, "(empty)",
        "Basic auth password (e.g. from a Secret). Never logged.",
        secret=True,
    ),
    Setting(
        "GPU_COST_PROMETHEUS_PASSWORD_FILE", "prometheus_password_file", None, "(empty)",
        "File holding the basic auth password (a mounted Secret).",
    ),
    Setting(
        "GPU_COST_PROMETHEUS_SELECTOR", "prometheus_selector", "", "(empty)",
        'Label matchers added to every query, e.g. `cluster="prod-us-east-1"` when one '
        "Prometheus (Thanos, Mimir) holds several clusters.",
        _label_matchers,
    ),
    Setting(
        "GPU_COST_CATCH_UP_HOURS", "catch_up_hours", 24, "`24`",
        "How far back the gap catch-up sensor looks for missing minutes: filled by one range "
        "run where the source sees the past, reported as gaps with the `kubernetes` source.",
        _integer(minimum=1),
    ),
    Setting(
        "GPU_COST_PRICE_TTL_MINUTES", "price_ttl_minutes", 120, "`120`",
        "A price-book price counts as current (`api`) this long after a fetch last confirmed it; "
        "after that it is used as `cache` (the newest known).",
        _integer(minimum=1),
    ),
    Setting(
        "GPU_COST_PRICE_BOOK_CRON", "price_book_cron", "0 * * * *", "`0 * * * *`",
        "Schedule of the price-book assets (UTC cron); hourly, as the seed's 1-hour cache.",
        _cron,
    ),
    Setting(
        "GPU_COST_PRICE_OVERRIDES", "price_overrides_file", None, "(none)",
        "YAML file of negotiated prices, loaded into `price_overrides` (see Prices).",
    ),
    Setting(
        "GPU_COST_GCP_API_KEY", "gcp_api_key", None, "(empty: application default credentials)",
        "API key for the GCP Cloud Billing Catalog. Never logged.",
        secret=True,
    ),
    Setting(
        "GPU_COST_GCP_BILLING_EXPORT", "gcp_billing_export", None, "(none: the Catalog)",
        "BigQuery `project.dataset.cloud_pricing_export` table: the account's own GCP prices.",
        _bigquery_table,
    ),
    Setting(
        "GPU_COST_GCP_CATALOG_URL", "gcp_catalog_url", "https://cloudbilling.googleapis.com",
        "`https://cloudbilling.googleapis.com`", "Base URL of the Cloud Billing Catalog API.",
        _http_url,
    ),
    Setting(
        "GPU_COST_AZURE_RETAIL_URL", "azure_retail_url",
        "https://prices.azure.com/api/retail/prices",
        "`https://prices.azure.com/api/retail/prices`", "Azure Retail Prices API.",
        _http_url,
    ),
    Setting(
        "GPU_COST_AZURE_SUBSCRIPTION_ID", "azure_subscription_id", None, "(none)",
        "With `GPU_COST_AZURE_OFFER_ID`: read Azure prices from RateCard (the offer's rates, "
        "`DefaultAzureCredential`) instead of retail prices.",
    ),
    Setting(
        "GPU_COST_AZURE_OFFER_ID", "azure_offer_id", None, "(none)",
        "RateCard offer, such as `MS-AZR-0003P`.",
    ),
    Setting(
        "GPU_COST_METRICS_ADDRESS", "metrics_address", ("127.0.0.1", 9410), "`127.0.0.1:9410`",
        "Where `gpu-autoscaler metrics` serves Prometheus metrics, `HOST:PORT` (`0.0.0.0:9410` "
        "in a container).",
        _host_port,
    ),
    Setting(
        "GPU_COST_METRICS_MAX_PODS", "metrics_max_pods", 20000, "`20000`",
        "Most `gpu_autoscaler_pod_cost_usd` series per scrape; running pods beyond the most "
        "expensive ones are summed under `pod=\"_other\"`.",
        _integer(minimum=1),
    ),
    Setting(
        "GPU_COST_INVESTMENT_MONTHLY_USD", "investment_monthly_usd", 0.0, "`0`",
        "What the autoscaler itself costs per month (its nodes, licences, people), in USD: the "
        "ROI report's payback days and net annual savings are computed against it.",
        _non_negative_number,
    ),
    Setting(
        "GPU_COST_WASTE_BASELINE_SHARE", "waste_baseline_share", 0.0, "`0`",
        "Share of GPU spend that was idle or allocated but unused before idle detection (your "
        "own measurement of that time, e.g. `0.35`): the baseline of the ROI report's waste "
        "elimination. `0` claims no waste elimination.",
        _fraction,
    ),
    Setting(
        "GPU_COST_IDLE_UTILIZATION", "idle_utilization", 0.05, "`0.05`",
        "A pod whose mean measured GPU utilization is below this is idle (`optimize`, "
        "recommendations).",
        _fraction,
    ),
    Setting(
        "GPU_COST_UNDERUTILIZED_UTILIZATION", "underutilized_utilization", 0.30, "`0.30`",
        "A pod whose mean measured GPU utilization is below this is underutilized.",
        _fraction,
    ),
    Setting(
        "GPU_COST_WASTE_MIN_HOURS", "waste_min_hours", 1.0, "`1`",
        "How long a pod must be measured (hours), or a node's GPUs held by no pod (GPU-hours), "
        "within the period before it is reported idle or underutilized.",
        _non_negative_number,
    ),
    Setting(
        "GPU_COST_INTERRUPTIBLE_LABEL", "interruptible_label", "gpu-autoscaler.io/interruptible",
        "`gpu-autoscaler.io/interruptible`",
        "Pod label that opts a workload in to spot: pods labelled `true` that ran on on-demand "
        "capacity are recommended for spot.",
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
    Setting(
        "GPU_COST_MINUTE_PARTITION_DAYS", "minute_partition_days", 3, "`3`",
        "How many days back (from today, 00:00 UTC) the minute partitions reach; older days are "
        "the day partitions of `gpu_cost_history`. Keeps the UI's partition pages fast (about "
        "1,440 partitions a day; see Performance).",
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
    prometheus_url: str | None
    prometheus_bearer_token: str | None
    prometheus_bearer_token_file: str | None
    prometheus_username: str | None
    prometheus_password: str | None
    prometheus_password_file: str | None
    prometheus_selector: str
    catch_up_hours: int
    price_ttl_minutes: int
    price_book_cron: str
    price_overrides_file: str | None
    gcp_api_key: str | None
    gcp_billing_export: str | None
    gcp_catalog_url: str
    azure_retail_url: str
    azure_subscription_id: str | None
    azure_offer_id: str | None
    metrics_address: tuple[str, int]
    metrics_max_pods: int
    investment_monthly_usd: float
    waste_baseline_share: float
    idle_utilization: float
    underutilized_utilization: float
    waste_min_hours: float
    interruptible_label: str
    specs_dir: str | None
    budget_timezone: str
    burn_rate_hours: int
    alert_max_attempts: int
    minute_partition_days: int

    def first_partition(self, now: datetime | None = None) -> str:
        """The configured first partition, else the 1st of the previous month (UTC)."""
        return self.partition_start or first_of_previous_month(now or datetime.now(UTC))

    def first_minute_partition(self, now: datetime | None = None) -> str:
        """The first minute partition: ``minute_partition_days`` before today (00:00 UTC), but
        never before the start of history."""
        today = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
        reach = (today - timedelta(days=self.minute_partition_days)).strftime(PARTITION_FORMAT)
        return max(reach, self.first_partition(now))  # the key format sorts as time


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
    if values.get("source") == "prometheus" and not values.get("prometheus_url"):
        problems.append(
            "GPU_COST_PROMETHEUS_URL is not set: GPU_COST_SOURCE=prometheus reads history from "
            "that Prometheus (e.g. http://prometheus.monitoring:9090)"
        )
    if problems:
        raise SettingsError("; ".join(problems))
    return Settings(**values)


def settings_table_markdown() -> str:
    """The README's Configuration table, generated from ``SETTINGS``."""
    lines = ["| name | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.variable}` | {s.documented_default} | {s.meaning} |" for s in SETTINGS]
    return "\n".join(lines)
