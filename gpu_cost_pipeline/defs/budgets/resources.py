"""SpecSource: where CostAttribution/CostBudget specs come from (the cluster's custom resources
or a folder of YAML files), where their statuses go, and how a channel's secrets are read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from gpu_cost_pipeline.core.specs import (
    API_VERSION,
    ATTRIBUTION_KIND,
    BUDGET_KIND,
    PLURALS,
    Budget,
    Channel,
    SpecRef,
    Specs,
    parse_objects,
    parse_yaml,
)
from gpu_cost_pipeline.integrations.kubernetes import KubernetesResource, KubernetesSourceError
from gpu_cost_pipeline.integrations.notify import RetryPolicy
from gpu_cost_pipeline.settings import Settings

CLUSTER = "cluster"


class SpecSource(dg.ConfigurableResource):
    """Specs and the budget settings. ``from_cluster``: read the custom resources through
    ``kubernetes`` and write their status subresource; else read ``specs_dir``."""

    kubernetes: KubernetesResource
    from_cluster: bool = False
    specs_dir: str | None = Field(default=None, description="Folder of YAML specs.")
    timezone: str = "UTC"
    burn_rate_hours: int = 6
    alert_max_attempts: int = 4
    alert_backoff_seconds: float = 1.0
    acts_on_cluster: bool = Field(
        default=False,
        description="Enforcement and Events reach the cluster; else they are recorded as a dry "
        "run (the embedded demo has no cluster).",
    )

    @classmethod
    def from_settings(cls, settings: Settings, kubernetes: KubernetesResource) -> SpecSource:
        return cls(
            kubernetes=kubernetes,
            from_cluster=not settings.specs_dir and settings.source == "kubernetes",
            specs_dir=settings.specs_dir,
            timezone=settings.budget_timezone,
            burn_rate_hours=settings.burn_rate_hours,
            alert_max_attempts=settings.alert_max_attempts,
            acts_on_cluster=settings.source == "kubernetes" or bool(settings.kubeconfig),
        )

    def describe(self) -> str:
        if self.from_cluster:
            return "the cluster's custom resources"
        return f"YAML files in {self.specs_dir}" if self.specs_dir else "no specs configured"

    def load(self) -> Specs:
        """Every spec, valid or not (invalid ones as problems). A source that cannot be read at
        all (API down, folder missing) raises: a tick must not mistake it for "no budgets"."""
        if self.from_cluster:
            specs = Specs()
            for kind in (ATTRIBUTION_KIND, BUDGET_KIND):
                objects = self.kubernetes.list_custom_objects(PLURALS[kind])
                # Items of custom resource lists carry apiVersion and kind; be lenient anyway.
                typed = [{"apiVersion": API_VERSION, "kind": kind, **o} for o in objects]
                specs.extend(parse_objects(typed, CLUSTER))
            return specs
        if not self.specs_dir:
            return Specs()
        folder = Path(self.specs_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"GPU_COST_SPECS_DIR {folder} is not a folder")
        specs = Specs()
        for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
            specs.extend(parse_yaml(path.read_text(), str(path)))
        return specs

    def publish_status(self, ref: SpecRef, status: dict) -> str | None:
        """Write a status to the object's status subresource (cluster specs only). Returns a
        problem to log instead of raising: one object's failure must not stop the others."""
        if ref.source != CLUSTER:
            return None
        try:
            self.kubernetes.patch_status(PLURALS[ref.kind], ref.namespace, ref.name, status)
        except KubernetesSourceError as error:
            return f"{ref}: status not written: {error}"
        return None

    def record_event(self, ref: SpecRef, reason: str, message: str, warning: bool) -> str | None:
        """A Kubernetes Event on a cluster spec (for alerts and enforcement)."""
        if ref.source != CLUSTER:
            return None
        involved = {
            "apiVersion": "gpu-autoscaler.io/v1alpha1",
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "uid": ref.uid,
        }
        try:
            self.kubernetes.create_event(
                involved, reason, message, "Warning" if warning else "Normal"
            )
        except KubernetesSourceError as error:
            return f"{ref}: event not recorded: {error}"
        return None

    def channel_settings(self, budget: Budget, channel: Channel) -> dict:
        """The channel's config with its configSecretRefs read now, from Secrets in the budget's
        namespace. Raises ValueError naming the budget, field and Secret (never a value)."""
        values: dict = dict(channel.config)
        for key, ref in channel.configSecretRefs.items():
            try:
                values[key] = self.kubernetes.read_secret_value(
                    budget.ref.namespace, ref.name, ref.key
                )
            except KubernetesSourceError as error:
                raise ValueError(
                    f"{budget.ref}: configSecretRefs.{key}: Secret "
                    f"{budget.ref.namespace}/{ref.name} key {ref.key!r} could not be read: "
                    f"{error}"
                ) from None
        return values

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.alert_max_attempts, backoff_seconds=self.alert_backoff_seconds
        )


def condition(ok: bool, reason: str, message: str, generation: int) -> dict:
    return {
        "type": "Ready",
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:1000],
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "observedGeneration": generation,
    }
