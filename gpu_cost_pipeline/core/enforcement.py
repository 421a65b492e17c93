"""What enforcement writes to the cluster, as plain objects: the block policy and its binding,
the ResourceQuota fallback, and the throttle's caps on AutoscalingPolicy spot pools with the
values they replace (so a lift restores them exactly).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re

from gpu_cost_pipeline.core.sharing import SHARED_GPU_RESOURCE, WHOLE_GPU_RESOURCE
from gpu_cost_pipeline.core.specs import Budget, Scope

MANAGED_BY = "gpu-autoscaler.io/cost-pipeline"
BUDGET_LABEL = "gpu-autoscaler.io/budget"
THROTTLE_ANNOTATION = "gpu-autoscaler.io/throttled-by"
# The label keys the usage parser reads team and experiment from, in its order of preference.
TEAM_LABELS = ("team", "gpu-autoscaler.io/team")
EXPERIMENT_LABELS = ("experiment-id", "gpu-autoscaler.io/experiment-id")
# Quota keys for the namespace-only fallback: whole and shared GPUs and the MIG profiles of
# A100/H100 (a ResourceQuota cannot name resources by prefix).
MIG_PROFILES = (
    "1g.5gb", "1g.10gb", "1g.20gb", "2g.10gb", "2g.20gb", "3g.20gb", "3g.40gb", "4g.20gb",
    "4g.40gb", "7g.40gb", "7g.80gb", "1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb",
    "7g.94gb", "1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb",
)  # fmt: skip


def object_name(budget: Budget) -> str:
    """A DNS-1123 name for the objects of one budget, unique per namespace/name."""
    base = re.sub(
        r"[^a-z0-9-]+", "-", f"gpu-budget-{budget.ref.namespace}-{budget.ref.name}".lower()
    )
    digest = hashlib.sha256(f"{budget.ref.namespace}/{budget.ref.name}".encode()).hexdigest()[:8]
    return f"{base[:52].strip('-')}-{digest}"


def _cel_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid CEL string literal


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_cel_string(v) for v in values) + "]"


def _first_label(keys: tuple[str, ...]) -> str:
    """CEL for the parser's first non-empty label among ``keys`` ('' when none)."""
    expression = '""'
    for key in reversed(keys):
        label = f"object.metadata.labels[{_cel_string(key)}]"
        expression = (
            f"(has(object.metadata.labels) && {_cel_string(key)} in object.metadata.labels && "
            f'{label} != "" ? {label} : {expression})'
        )
    return expression


REQUESTS_GPU = (
    "[has(object.spec.initContainers) ? object.spec.initContainers : [], object.spec.containers]"
    ".exists(list, list.exists(c, has(c.resources) && ("
    "(has(c.resources.requests) && c.resources.requests.exists(r, {gpu})) || "
    "(has(c.resources.limits) && c.resources.limits.exists(r, {gpu})))))"
).format(
    gpu=f'r == "{WHOLE_GPU_RESOURCE}" || r == "{SHARED_GPU_RESOURCE}" || r.startsWith("nvidia.com/mig-")'
)


def scope_condition(scope: Scope) -> str:
    """CEL that is true for a pod inside the scope. Namespaces and plain labels are matched by the
    binding's selectors; team and experiment follow the parser's label keys."""
    conditions = []
    if scope.teams:
        conditions.append(f"{_first_label(TEAM_LABELS)} in {_cel_list(scope.teams)}")
    if scope.experiment_ids:
        conditions.append(f"{_first_label(EXPERIMENT_LABELS)} in {_cel_list(scope.experiment_ids)}")
    return " && ".join(conditions) or "true"


def block_expression(scope: Scope) -> str:
    """The policy's validation: false (deny) for a pod in scope that requests or limits a GPU."""
    return f"!(({scope_condition(scope)}) && {REQUESTS_GPU})"


def block_message(budget: Budget, spend: float) -> str:
    limit = budget.spec.monthlyLimit
    return (
        f"GPU pods are blocked by CostBudget {budget.ref.namespace}/{budget.ref.name}: "
        f"${spend:,.2f} spent of its ${limit:,.2f} monthly limit ({spend / limit:.0%}). "
        "Running pods and CPU-only pods are not affected; the block lifts at the next month "
        "or when the limit is raised."
    )


def _labels(budget: Budget) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY.split("/")[1],
        BUDGET_LABEL: object_name(budget),
    }


def block_objects(budget: Budget, spend: float) -> list[dict]:
    """A ValidatingAdmissionPolicy and its binding denying CREATE of GPU pods in scope."""
    name, scope = object_name(budget), budget.scope
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": _labels(budget)},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": block_expression(scope),
                    "message": block_message(budget, spend),
                    "reason": "Forbidden",
                }
            ],
        },
    }
    match: dict = {}
    if scope.namespaces:
        match["namespaceSelector"] = {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": list(scope.namespaces),
                }
            ]
        }
    if scope.labels:
        match["objectSelector"] = {"matchLabels": dict(scope.labels)}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": _labels(budget)},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": match},
    }
    return [policy, binding]


def quota_fallback_possible(scope: Scope) -> bool:
    """A ResourceQuota can only say "no GPUs in this namespace"."""
    return bool(scope.namespaces) and not any(
        (scope.teams, scope.projects, scope.experiment_ids, scope.cost_centers, scope.labels)
    )


def quota_objects(budget: Budget) -> list[dict]:
    """One ResourceQuota per namespace in scope allowing zero GPU requests of any kind."""
    hard = {f"requests.{WHOLE_GPU_RESOURCE}": "0", f"requests.{SHARED_GPU_RESOURCE}": "0"}
    hard |= {f"requests.nvidia.com/mig-{profile}": "0" for profile in MIG_PROFILES}
    return [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": object_name(budget), "namespace": ns, "labels": _labels(budget)},
            "spec": {"hard": hard},
        }
        for ns in budget.scope.namespaces
    ]


# --- throttle ----------------------------------------------------------------------------------

SPOT = "spot"
CAP_FIELD = "maxNodes"  # the node pool field the throttle caps


def policies_in_scope(policies: list[dict], scope: Scope) -> list[dict]:
    """AutoscalingPolicies in the scope's namespaces (all of them when it names none)."""
    if not scope.namespaces:
        return policies
    return [p for p in policies if (p.get("metadata") or {}).get("namespace") in scope.namespaces]


def throttle(policy: dict, cap: int, owner: str) -> tuple[dict, dict[str, int | None]]:
    """The policy with each spot pool capped at ``cap`` nodes, and each capped pool's previous
    value (None: the field was absent). Pools already at or under the cap are left alone."""
    updated = copy.deepcopy(policy)
    previous: dict[str, int | None] = {}
    for pool in (updated.get("spec") or {}).get("nodePools") or []:
        if str(pool.get("capacityType", "")).lower() != SPOT:
            continue
        current = pool.get(CAP_FIELD)
        if current is not None and int(current) <= cap:
            continue
        previous[str(pool.get("name"))] = current
        pool[CAP_FIELD] = cap
    if previous:
        annotations = updated.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[THROTTLE_ANNOTATION] = owner
    return updated, previous


def restore(policy: dict, previous: dict[str, int | None], cap: int) -> tuple[dict, list[str]]:
    """The policy with the throttled pools back at their previous values. A pool someone changed
    since (no longer at the cap) keeps their value; its name is returned."""
    updated = copy.deepcopy(policy)
    changed_since: list[str] = []
    for pool in (updated.get("spec") or {}).get("nodePools") or []:
        name = str(pool.get("name"))
        if name not in previous:
            continue
        if pool.get(CAP_FIELD) != cap:
            changed_since.append(name)
            continue
        if previous[name] is None:
            pool.pop(CAP_FIELD, None)
        else:
            pool[CAP_FIELD] = previous[name]
    annotations = (updated.get("metadata") or {}).get("annotations") or {}
    annotations.pop(THROTTLE_ANNOTATION, None)
    return updated, changed_since
