"""Resources configured from the environment: one table of settings (the README's table).

Inside Dagster, set variables reach resources as ``dg.EnvVar``, so secrets such as the database
URL never enter run config or the UI; outside Dagster (the CLI) the same table gives plain values.
"""

import os
from dataclasses import dataclass
from typing import Any

import dagster as dg

from gpu_cost_pipeline.defs.pricing.resources import PriceCatalog
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.integrations.kubernetes import KubernetesResource
from gpu_cost_pipeline.store.cost_store import CostStore


@dataclass(frozen=True)
class Setting:
    """An environment variable and the resource field it sets; unset, the field keeps the
    resource's own default (documented in the README's table)."""

    variable: str
    field: str
    kind: type = str


STORE_SETTINGS = (
    Setting("GPU_COST_DATABASE_URL", "database_url"),
    Setting("GPU_COST_DATA_DIR", "data_dir"),
    Setting("GPU_COST_RETENTION_DAYS", "retention_days", int),
    Setting("GPU_COST_ROLLUP_RETENTION_DAYS", "rollup_retention_days", int),
)
SOURCE_SETTINGS = (
    Setting("GPU_COST_SOURCE", "source"),
    Setting("GPU_COST_CLUSTER", "cluster"),
    Setting("GPU_COST_CLOUD_PROVIDER", "default_provider"),
    Setting("GPU_COST_REGION", "default_region"),
    Setting("GPU_COST_MIG_CONVENTION", "mig_convention"),
    Setting("GPU_COST_SIMULATED_PODS", "simulated_gpu_pods", int),
    Setting("GPU_COST_SIMULATED_SEED", "simulated_seed", int),
    Setting("GPU_COST_CHUNK_MINUTES", "chunk_minutes", int),
)
KUBERNETES_SETTINGS = (
    Setting("KUBECONFIG", "kubeconfig"),
    Setting("GPU_COST_KUBE_CONTEXT", "context"),
    Setting("GPU_COST_KUBE_IN_CLUSTER", "in_cluster", bool),
)
PRICE_SETTINGS = (Setting("GPU_COST_UNKNOWN_GPU_PRICE", "unknown_gpu_price_per_hour", float),)

_ENV_VAR_KINDS = {str: dg.EnvVar, int: dg.EnvVar.int}
_TRUE = {"1", "true", "yes", "on"}


def _value(setting: Setting, raw: str, as_env_var: bool) -> Any:
    if as_env_var and setting.kind in _ENV_VAR_KINDS:  # EnvVar has no float or bool form
        return _ENV_VAR_KINDS[setting.kind](setting.variable)
    if setting.kind is bool:
        return raw.strip().lower() in _TRUE
    try:
        return setting.kind(raw)
    except ValueError:
        raise ValueError(
            f"{setting.variable}={raw!r} is not a valid {setting.kind.__name__}"
        ) from None


def _config(settings: tuple[Setting, ...], as_env_var: bool) -> dict[str, Any]:
    return {
        s.field: _value(s, os.environ[s.variable], as_env_var)
        for s in settings
        if os.environ.get(s.variable)
    }


def store_from_env(as_env_var: bool = False) -> CostStore:
    return CostStore(**_config(STORE_SETTINGS, as_env_var))


def usage_source_from_env(as_env_var: bool = False) -> UsageSource:
    kubernetes = KubernetesResource(**_config(KUBERNETES_SETTINGS, as_env_var))
    return UsageSource(**_config(SOURCE_SETTINGS, as_env_var), kubernetes=kubernetes)


def build_resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "store": store_from_env(as_env_var=True),
        "usage_source": usage_source_from_env(as_env_var=True),
        "prices": PriceCatalog(**_config(PRICE_SETTINGS, as_env_var=True)),
    }
