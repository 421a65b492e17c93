"""The settings table: every value it documents is accepted, every invalid one is refused with
one line naming the variable, the value and what is allowed, and the README shows the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpu_cost_pipeline.settings import (
    SETTINGS,
    Settings,
    SettingsError,
    load_settings,
    settings_table_markdown,
)

README = Path(__file__).parents[1] / "README.md"

# One non-default valid value per documented variable (the code-location tests use it too).
NON_DEFAULT = {
    "GPU_COST_DATABASE_URL": "postgresql://costs:s3cret@db.example:5432/gpu_costs",
    "GPU_COST_DATA_DIR": "/tmp/gpu-cost-data",
    "GPU_COST_SOURCE": "kubernetes",
    "GPU_COST_CLUSTER": "prod-us-east-1",
    "KUBECONFIG": "/tmp/kubeconfig",
    "GPU_COST_KUBE_CONTEXT": "prod",
    "GPU_COST_KUBE_IN_CLUSTER": "false",
    "GPU_COST_CLOUD_PROVIDER": "gcp",
    "GPU_COST_REGION": "europe-west4",
    "GPU_COST_MIG_CONVENTION": "memory",
    "GPU_COST_UNKNOWN_GPU_PRICE": "3.10",
    "GPU_COST_SIMULATED_PODS": "12",
    "GPU_COST_SIMULATED_SEED": "7",
    "GPU_COST_PARTITION_START": "2026-11-01-00:00",
    "GPU_COST_CHUNK_MINUTES": "60",
    "GPU_COST_RETENTION_DAYS": "30",
    "GPU_COST_ROLLUP_RETENTION_DAYS": "365",
    "DAGSTER_HOME": "/tmp/dagster-home",
    "GPU_COST_PROMETHEUS_URL": "http://prometheus.monitoring:9090",
    "GPU_COST_PROMETHEUS_BEARER_TOKEN": "t0ken-s3cret",
    "GPU_COST_PROMETHEUS_BEARER_TOKEN_FILE": "/var/run/secrets/prometheus/token",
    "GPU_COST_PROMETHEUS_USERNAME": "costs",
    "GPU_COST_PROMETHEUS_PASSWORD": "pw-s3cret",
    "GPU_COST_PROMETHEUS_PASSWORD_FILE": "/var/run/secrets/prometheus/password",
    "GPU_COST_PROMETHEUS_SELECTOR": 'cluster="prod-us-east-1"',
    "GPU_COST_CATCH_UP_HOURS": "72",
    "GPU_COST_PRICE_TTL_MINUTES": "90",
    "GPU_COST_PRICE_BOOK_CRON": "15 */2 * * *",
    "GPU_COST_PRICE_OVERRIDES": "/tmp/price-overrides.yaml",
    "GPU_COST_GCP_API_KEY": "AIza-s3cret-key",
    "GPU_COST_GCP_BILLING_EXPORT": "billing-prj.pricing.cloud_pricing_export",
    "GPU_COST_GCP_CATALOG_URL": "http://127.0.0.1:9/catalog",
    "GPU_COST_AZURE_RETAIL_URL": "http://127.0.0.1:9/retail",
    "GPU_COST_AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "GPU_COST_AZURE_OFFER_ID": "MS-AZR-0003P",
    "GPU_COST_METRICS_ADDRESS": "0.0.0.0:9500",
    "GPU_COST_METRICS_MAX_PODS": "500",
    "GPU_COST_INVESTMENT_MONTHLY_USD": "2500",
    "GPU_COST_WASTE_BASELINE_SHARE": "0.35",
    "GPU_COST_IDLE_UTILIZATION": "0.02",
    "GPU_COST_UNDERUTILIZED_UTILIZATION": "0.5",
    "GPU_COST_WASTE_MIN_HOURS": "4",
    "GPU_COST_INTERRUPTIBLE_LABEL": "example.com/preemptible",
    "GPU_COST_SPECS_DIR": "/tmp/gpu-cost-specs",
    "GPU_COST_BUDGET_TIMEZONE": "Europe/Berlin",
    "GPU_COST_BURN_RATE_HOURS": "12",
    "GPU_COST_ALERT_MAX_ATTEMPTS": "2",
    "GPU_COST_MINUTE_PARTITION_DAYS": "2",
}

INVALID = [
    ("GPU_COST_SOURCE", "kubernets", "expected one of simulated, kubernetes, prometheus"),
    ("GPU_COST_CHUNK_MINUTES", "abc", "expected an integer ≥ 1"),
    ("GPU_COST_CHUNK_MINUTES", "0", "expected an integer ≥ 1"),
    ("GPU_COST_MIG_CONVENTION", "7", "expected one of compute, memory"),
    ("GPU_COST_CLOUD_PROVIDER", "ibm", "expected one of aws, gcp, azure"),
    ("GPU_COST_UNKNOWN_GPU_PRICE", "-1", "expected a number ≥ 0"),
    ("GPU_COST_UNKNOWN_GPU_PRICE", "nan", "expected a number ≥ 0"),
    ("GPU_COST_SIMULATED_SEED", "4.2", "expected an integer"),
    ("GPU_COST_KUBE_IN_CLUSTER", "maybe", "expected true, false or auto"),
    ("GPU_COST_METRICS_ADDRESS", "9410", "expected HOST:PORT, such as 0.0.0.0:9410"),
    ("GPU_COST_METRICS_ADDRESS", "0.0.0.0:99999", "expected HOST:PORT, such as 0.0.0.0:9410"),
    ("GPU_COST_PARTITION_START", "2026-11-01", "expected a UTC minute as YYYY-MM-DD-HH:MM"),
    ("GPU_COST_RETENTION_DAYS", "-5", "expected an integer ≥ 1"),
    ("GPU_COST_PROMETHEUS_SELECTOR", "cluster=prod", "expected PromQL label matchers"),
    ("GPU_COST_PRICE_TTL_MINUTES", "0", "expected an integer ≥ 1"),
    ("GPU_COST_PRICE_BOOK_CRON", "hourly", "expected a 5-field cron schedule"),
    ("GPU_COST_GCP_BILLING_EXPORT", "pricing_table", "expected a BigQuery table"),
    ("GPU_COST_AZURE_RETAIL_URL", "prices.azure.com", "expected an http:// or https:// URL"),
    ("GPU_COST_WASTE_BASELINE_SHARE", "35", "expected a fraction from 0 to 1"),
    ("GPU_COST_UNDERUTILIZED_UTILIZATION", "nan", "expected a fraction from 0 to 1"),
    ("GPU_COST_INVESTMENT_MONTHLY_USD", "-100", "expected a number ≥ 0"),
    ("GPU_COST_BUDGET_TIMEZONE", "Mars/Olympus", "expected an IANA time zone"),
    ("GPU_COST_BURN_RATE_HOURS", "0", "expected an integer ≥ 1"),
]


def test_every_setting_has_a_non_default_example():
    assert set(NON_DEFAULT) == {s.variable for s in SETTINGS}


def test_defaults_when_nothing_is_set():
    settings = load_settings({})
    assert settings == Settings(**{s.attribute: s.default for s in SETTINGS})
    assert settings.source == "simulated" and settings.database_url is None
    assert settings.chunk_minutes == 240 and settings.kube_in_cluster is None


def test_every_non_default_value_is_read():
    settings = load_settings(NON_DEFAULT)
    for setting in SETTINGS:
        assert getattr(settings, setting.attribute) != setting.default, setting.variable
    assert settings.kube_in_cluster is False and settings.unknown_gpu_price == 3.10


def test_empty_values_take_the_default():
    assert load_settings({"GPU_COST_SOURCE": "", "GPU_COST_CHUNK_MINUTES": "  "}) == load_settings(
        {}
    )


@pytest.mark.parametrize(("variable", "value", "allowed"), INVALID)
def test_an_invalid_value_gets_one_line_naming_variable_value_and_allowed(
    variable: str, value: str, allowed: str
):
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}={value!r} is not valid: {allowed}")
    assert "\n" not in message


def test_several_invalid_values_are_reported_together():
    with pytest.raises(SettingsError) as raised:
        load_settings({"GPU_COST_SOURCE": "kubernets", "GPU_COST_MIG_CONVENTION": "7"})
    assert "GPU_COST_SOURCE='kubernets'" in str(raised.value)
    assert "GPU_COST_MIG_CONVENTION='7'" in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://costs:s3cret@db/gpu_costs",
        "mysql://costs:s3cret@db/gpu_costs",
        "host=db password=s3cret dbname='unterminated",
    ],
)
def test_a_bad_database_url_is_refused_without_quoting_it(url: str):
    with pytest.raises(SettingsError) as raised:
        load_settings({"GPU_COST_DATABASE_URL": url})
    message = str(raised.value)
    assert message.startswith("GPU_COST_DATABASE_URL (value not shown) is not valid")
    assert "s3cret" not in message and "costs" not in message


def test_key_value_connection_strings_are_accepted():
    url = "host=db port=5432 dbname=gpu_costs user=costs password=s3cret"
    assert load_settings({"GPU_COST_DATABASE_URL": url}).database_url == url


def test_the_readme_shows_the_settings_table():
    readme = README.read_text()
    assert settings_table_markdown() in readme, (
        "README's Configuration table differs from gpu_cost_pipeline.settings.SETTINGS; "
        "regenerate it with: python -c 'from gpu_cost_pipeline.settings import "
        "settings_table_markdown as t; print(t())'"
    )
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))
    assert documented == {s.variable for s in SETTINGS}


def test_the_prometheus_source_needs_a_url_and_never_shows_it():
    with pytest.raises(SettingsError, match="GPU_COST_PROMETHEUS_URL is not set"):
        load_settings({"GPU_COST_SOURCE": "prometheus"})
    with pytest.raises(SettingsError) as raised:
        load_settings({"GPU_COST_PROMETHEUS_URL": "prometheus:9090?token=s3cret"})
    message = str(raised.value)
    assert message.startswith("GPU_COST_PROMETHEUS_URL (value not shown) is not valid")
    assert "s3cret" not in message
