"""CostAttribution and CostBudget (``gpu-autoscaler.io/v1alpha1``): the specs as the seed defines
them, parsed from the objects the cluster serves or from YAML files.

Parsing never stops at the first bad object: every object becomes either a spec or a
``SpecProblem`` naming the object, the field and what is wrong, so one typo in one budget leaves
every other budget running.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

API_GROUP = "gpu-autoscaler.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
ATTRIBUTION_KIND, BUDGET_KIND = "CostAttribution", "CostBudget"
PLURALS = {ATTRIBUTION_KIND: "costattributions", BUDGET_KIND: "costbudgets"}
DEFAULT_NAMESPACE = "default"  # for files whose objects name none, as kubectl apply would

SEVERITIES = ("info", "warning", "error", "critical")
CHANNEL_TYPES = ("slack", "email", "pagerduty", "webhook")
# What each channel needs, from `config` or `configSecretRefs` (checked when the spec is read;
# secret values themselves are read at send time).
REQUIRED_CHANNEL_KEYS = {
    "slack": ("webhook_url",),
    "email": ("smtp_host", "from", "to"),
    "pagerduty": ("routing_key",),
    "webhook": ("url",),
}
URL_KEYS = ("webhook_url", "url")


class _Model(BaseModel):
    # Unknown fields are refused: a misspelt `thresholdPercnt` must not silently mean "no alert".
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class SecretKeyRef(_Model):
    """A key of a Secret in the budget's own namespace."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


ConfigValue = str | int | float | bool | list[str]


class Channel(_Model):
    type: Literal["slack", "email", "pagerduty", "webhook"]
    config: dict[str, ConfigValue] = Field(default_factory=dict)
    configSecretRefs: dict[str, SecretKeyRef] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> Channel:
        given = set(self.config) | set(self.configSecretRefs)
        missing = [k for k in REQUIRED_CHANNEL_KEYS[self.type] if k not in given]
        if missing:
            raise ValueError(
                f"a {self.type} channel needs {', '.join(missing)} in config or configSecretRefs"
            )
        for key in URL_KEYS:
            value = self.config.get(key)
            if value is not None and not _is_http_url(str(value)):
                raise ValueError(f"config.{key} is not an http(s) URL")
        return self

    def describe(self) -> str:
        """What the channel is, safe to log and store (no URL, key or address of a secret)."""
        return self.type


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class Alert(_Model):
    name: str = Field(min_length=1)
    thresholdPercent: Annotated[float, Field(gt=0, le=1000)]
    severity: Literal["info", "warning", "error", "critical"] = "warning"
    channels: list[Channel] = Field(default_factory=list)


class ThrottleConfig(_Model):
    maxSpotInstances: Annotated[int, Field(ge=0)]


class Enforcement(_Model):
    action: Literal["alert", "throttle", "block"] = "alert"
    gracePeriodMinutes: Annotated[int, Field(ge=0)] = 0
    throttleConfig: ThrottleConfig | None = None

    @model_validator(mode="after")
    def _throttle_needs_config(self) -> Enforcement:
        if self.action == "throttle" and self.throttleConfig is None:
            raise ValueError("action throttle needs throttleConfig.maxSpotInstances")
        return self


class BudgetScope(_Model):
    namespaces: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    teams: list[str] = Field(default_factory=list)
    experimentID: str | None = None


class CostBudgetSpec(_Model):
    monthlyLimit: Annotated[float, Field(gt=0)]
    scope: BudgetScope = Field(default_factory=BudgetScope)
    alerts: list[Alert] = Field(default_factory=list)
    enforcement: Enforcement = Field(default_factory=Enforcement)
    enabled: bool = True

    @field_validator("alerts")
    @classmethod
    def _unique_alert_names(cls, alerts: list[Alert]) -> list[Alert]:
        names = [alert.name for alert in alerts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"alert names must be unique, repeated: {', '.join(duplicates)}")
        return alerts


class CostAttributionSpec(_Model):
    namespace: str | None = None
    team: str | None = None
    project: str | None = None
    experimentID: str | None = None
    costCenter: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    retentionDays: Annotated[int, Field(ge=1, le=365)] = 90

    @model_validator(mode="after")
    def _tags_agree_with_labels(self) -> CostAttributionSpec:
        clashes = [k for k, v in self.tags.items() if k in self.labels and self.labels[k] != v]
        if clashes:
            raise ValueError(f"tags and labels give different values for {', '.join(clashes)}")
        return self


@dataclass(frozen=True)
class Scope:
    """Which cost rows a spec covers. Every dimension given must match (AND); a list matches any
    of its values (OR); ``labels`` must all be on the pod. No dimension at all: the whole
    cluster, idle GPUs included."""

    namespaces: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()
    experiment_ids: tuple[str, ...] = ()
    cost_centers: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def is_cluster(self) -> bool:
        return not any(
            (
                self.namespaces,
                self.teams,
                self.projects,
                self.experiment_ids,
                self.cost_centers,
                self.labels,
            )
        )

    def columns(self) -> dict[str, tuple[str, ...]]:
        """The cost-row column each given dimension filters, with its allowed values."""
        pairs = {
            "namespace": self.namespaces,
            "team": self.teams,
            "project": self.projects,
            "experiment_id": self.experiment_ids,
            "cost_center": self.cost_centers,
        }
        return {column: values for column, values in pairs.items() if values}

    def describe(self) -> str:
        parts = [f"{column}={'|'.join(values)}" for column, values in self.columns().items()]
        parts += [f"label {key}={value}" for key, value in self.labels]
        return ", ".join(parts) or "whole cluster"


def _one(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


@dataclass(frozen=True)
class SpecRef:
    """Where a spec came from: its kind, namespace and name, and the cluster or file."""

    kind: str
    namespace: str
    name: str
    source: str  # "cluster" or a file path
    uid: str = ""
    generation: int = 0

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Budget:
    ref: SpecRef
    spec: CostBudgetSpec

    @property
    def scope(self) -> Scope:
        scope = self.spec.scope
        return Scope(
            namespaces=tuple(scope.namespaces),
            teams=tuple(scope.teams),
            experiment_ids=_one(scope.experimentID),
            labels=tuple(sorted(scope.labels.items())),
        )

    def alert(self, name: str) -> Alert | None:
        return next((a for a in self.spec.alerts if a.name == name), None)


@dataclass(frozen=True)
class Attribution:
    ref: SpecRef
    spec: CostAttributionSpec

    @property
    def scope(self) -> Scope:
        spec = self.spec
        return Scope(
            namespaces=_one(spec.namespace),
            teams=_one(spec.team),
            projects=_one(spec.project),
            experiment_ids=_one(spec.experimentID),
            cost_centers=_one(spec.costCenter),
            # Tags are matched as pod labels too (see the README): ML platforms set them so.
            labels=tuple(sorted({**spec.labels, **spec.tags}.items())),
        )


@dataclass(frozen=True)
class SpecProblem:
    """An object that could not be read; ``field`` is its path, e.g. spec.alerts[0].severity."""

    ref: SpecRef
    field: str
    message: str

    def __str__(self) -> str:
        where = f" ({self.ref.source})" if self.ref.source != "cluster" else ""
        return f"{self.ref}{where}: {self.field}: {self.message}"


@dataclass
class Specs:
    budgets: list[Budget] = field(default_factory=list)
    attributions: list[Attribution] = field(default_factory=list)
    problems: list[SpecProblem] = field(default_factory=list)

    def extend(self, other: Specs) -> None:
        self.budgets += other.budgets
        self.attributions += other.attributions
        self.problems += other.problems

    def budget(self, namespace: str, name: str) -> Budget | None:
        return next(
            (b for b in self.budgets if (b.ref.namespace, b.ref.name) == (namespace, name)), None
        )


def _field_path(location: Iterable[Any]) -> str:
    path = "spec"
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _problem_text(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "literal_error":
        return message.replace("Input should be", "expected")
    if (
        "input" in error
        and error["type"] not in ("missing",)
        and not isinstance(error["input"], dict | list)
    ):
        return f"{message} (got {error['input']!r})"
    return message


def parse_object(obj: Any, source: str) -> Specs:
    """One object as the API serves it (or a YAML document): a spec, or a problem."""
    result = Specs()
    if not isinstance(obj, dict):
        ref = SpecRef("object", DEFAULT_NAMESPACE, "?", source)
        result.problems.append(SpecProblem(ref, "(document)", "not a mapping"))
        return result
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    kind = str(obj.get("kind") or "object")
    ref = SpecRef(
        kind=kind,
        namespace=str(metadata.get("namespace") or DEFAULT_NAMESPACE),
        name=str(metadata.get("name") or "?"),
        source=source,
        uid=str(metadata.get("uid") or ""),
        generation=int(metadata.get("generation") or 0),
    )
    if kind not in PLURALS or obj.get("apiVersion") != API_VERSION:
        return result  # other kinds in the same folder or file are not ours
    if not metadata.get("name"):
        result.problems.append(SpecProblem(ref, "metadata.name", "required"))
        return result
    model = CostBudgetSpec if kind == BUDGET_KIND else CostAttributionSpec
    try:
        spec = model.model_validate(obj.get("spec") or {})
    except ValidationError as error:
        for detail in error.errors():
            result.problems.append(
                SpecProblem(ref, _field_path(detail["loc"]), _problem_text(detail))
            )
        return result
    if isinstance(spec, CostBudgetSpec):
        result.budgets.append(Budget(ref, spec))
    else:
        result.attributions.append(Attribution(ref, spec))
    return result


def parse_objects(objects: Iterable[Any], source: str) -> Specs:
    specs = Specs()
    for obj in objects:
        specs.extend(parse_object(obj, source))
    return specs


def parse_yaml(text: str, source: str) -> Specs:
    """Every CostAttribution and CostBudget in a (multi-document) YAML text; a file that is not
    YAML is one problem naming the file and the line."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        ref = SpecRef("file", DEFAULT_NAMESPACE, source, source)
        problem = getattr(error, "problem", None) or "not valid YAML"
        return Specs(problems=[SpecProblem(ref, "(file)", f"{line}{problem}")])
    items: list[Any] = []
    for document in documents:
        # `kubectl get -o yaml` writes a List of the objects.
        if isinstance(document, dict) and document.get("kind", "").endswith("List"):
            items += document.get("items") or []
        else:
            items.append(document)
    return parse_objects(items, source)
