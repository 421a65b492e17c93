"""The code location's resources, from the validated settings (``gpu_cost_pipeline.settings``).

Validated values reach the resources as plain values (so a bad one fails when the code location
loads, with a message naming the variable); secrets reach them as ``dg.EnvVar`` so they never
enter run config or the UI.
"""

import dagster as dg

from gpu_cost_pipeline.defs.budgets.resources import SpecSource
from gpu_cost_pipeline.defs.pricing.resources import price_resources
from gpu_cost_pipeline.defs.roi.resources import RoiConfig
from gpu_cost_pipeline.defs.usage.source import UsageSource
from gpu_cost_pipeline.integrations.kubernetes import KubernetesResource
from gpu_cost_pipeline.integrations.prometheus import PrometheusResource
from gpu_cost_pipeline.settings import Settings, load_settings, variable_of
from gpu_cost_pipeline.store.cost_store import CostStore


def kubernetes_from_settings(settings: Settings) -> KubernetesResource:
    return KubernetesResource(
        kubeconfig=settings.kubeconfig,
        context=settings.kube_context,
        in_cluster=settings.kube_in_cluster,
    )


def usage_source_from_settings(settings: Settings) -> UsageSource:
    return UsageSource(
        source=settings.source,
        cluster=settings.cluster,
        default_provider=settings.cloud_provider,
        default_region=settings.region,
        mig_convention=settings.mig_convention,
        simulated_gpu_pods=settings.simulated_pods,
        simulated_seed=settings.simulated_seed,
        chunk_minutes=settings.chunk_minutes,
        kubernetes=kubernetes_from_settings(settings),
        prometheus=prometheus_from_settings(settings),
    )


def _secret(settings: Settings, attribute: str) -> dg.EnvVar | None:
    """A set secret as an EnvVar (read by the resource at run time, never in run config)."""
    return dg.EnvVar(variable_of(attribute)) if getattr(settings, attribute) else None


def prometheus_from_settings(settings: Settings) -> PrometheusResource:
    return PrometheusResource(
        url=_secret(settings, "prometheus_url") or "",
        bearer_token=_secret(settings, "prometheus_bearer_token"),
        bearer_token_file=settings.prometheus_bearer_token_file,
        username=settings.prometheus_username,
        password=_secret(settings, "prometheus_password"),
        password_file=settings.prometheus_password_file,
        selector=settings.prometheus_selector,
    )


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or load_settings()
    return {
        "store": CostStore.from_settings(settings, secrets_as_env_vars=True),
        "usage_source": usage_source_from_settings(settings),
        **price_resources(settings),
        "roi": RoiConfig.from_settings(settings),
        "specs": SpecSource.from_settings(settings, kubernetes_from_settings(settings)),
    }
