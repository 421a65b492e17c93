"""The budget machinery's Kubernetes calls through the real client against the test API server:
custom objects and their status subresource (merge patch), Secrets, Events, admission policies
and bindings, ResourceQuotas, AutoscalingPolicies."""

from __future__ import annotations

import base64
import traceback
from pathlib import Path

import pytest

from gpu_cost_pipeline.core import enforcement
from gpu_cost_pipeline.core.specs import Budget, CostBudgetSpec, SpecRef
from gpu_cost_pipeline.integrations.kubernetes import KubernetesResource, KubernetesSourceError
from gpu_cost_pipeline_tests.k8s_api_server import FakeKubernetesApi


@pytest.fixture
def api():
    with FakeKubernetesApi() as server:
        yield server


@pytest.fixture
def kube(
    api: FakeKubernetesApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> KubernetesResource:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return KubernetesResource(
        kubeconfig=str(api.write_kubeconfig(tmp_path / "kubeconfig")), page_size=2
    )


def cost_budget(name: str, namespace: str = "ml", **spec) -> dict:
    return {
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "CostBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"monthlyLimit": 100, **spec},
    }


def test_lists_custom_objects_across_namespaces_with_pagination(api, kube):
    for i in range(5):
        api.put(cost_budget(f"b{i}", namespace=f"ns{i % 2}"))
    found = kube.list_custom_objects("costbudgets")
    assert sorted(o["metadata"]["name"] for o in found) == [f"b{i}" for i in range(5)]
    assert len(api.queries("/apis/gpu-autoscaler.io/v1alpha1/costbudgets")) == 3


def test_status_is_a_merge_patch_on_the_status_subresource(api, kube):
    api.put(cost_budget("team"))
    kube.patch_status("costbudgets", "ml", "team", {"currentSpend": 12.5, "breakdown": {"a": 1}})
    kube.patch_status("costbudgets", "ml", "team", {"percentageUsed": 12.5, "breakdown": {"b": 2}})
    stored = api.get_object("costbudgets", "ml", "team")
    assert stored["status"] == {
        "currentSpend": 12.5,
        "percentageUsed": 12.5,
        "breakdown": {"a": 1, "b": 2},
    }
    assert stored["spec"]["monthlyLimit"] == 100 and stored["metadata"]["generation"] == 1
    methods = [m for m, path in api.requests if path.endswith("/costbudgets/team/status")]
    assert methods == ["PATCH", "PATCH"]


def test_status_of_a_missing_object_is_a_404_naming_it(api, kube):
    with pytest.raises(KubernetesSourceError) as raised:
        kube.patch_status("costbudgets", "ml", "gone", {"currentSpend": 1})
    assert raised.value.status == 404 and "costbudgets ml/gone" in str(raised.value)


def test_reads_one_secret_key_and_never_shows_values(api, kube):
    api.put({"kind": "Secret", "metadata": {"name": "pd", "namespace": "ml"},
             "data": {"routing-key": base64.b64encode(b"R0UTE-ME").decode()}})  # fmt: skip
    assert kube.read_secret_value("ml", "pd", "routing-key") == "R0UTE-ME"
    with pytest.raises(KubernetesSourceError, match="Secret ml/pd has no key 'other'") as raised:
        kube.read_secret_value("ml", "pd", "other")
    assert "R0UTE" not in "".join(traceback.format_exception(raised.value))
    with pytest.raises(KubernetesSourceError) as missing:
        kube.read_secret_value("ml", "nope", "k")
    assert missing.value.status == 404 and "Secret ml/nope" in str(missing.value)


def test_events_are_created_on_the_involved_object(api, kube):
    involved = {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "ml",
        "name": "trainer",
        "uid": "u1",
    }
    kube.create_event(involved, "CostLimitExceeded", "over $100", "Warning")
    (event,) = api.objects_of("events")
    assert event["involvedObject"] == involved
    assert (event["reason"], event["type"], event["metadata"]["namespace"]) == (
        "CostLimitExceeded",
        "Warning",
        "ml",
    )


def budget_of(spec: dict) -> Budget:
    return Budget(
        SpecRef("CostBudget", "ml", "team", "cluster"), CostBudgetSpec.model_validate(spec)
    )


def test_block_objects_are_created_replaced_and_deleted(api, kube):
    budget = budget_of({"monthlyLimit": 100, "scope": {"teams": ["vision"]}})
    policy, binding = enforcement.block_objects(budget, 150.0)
    assert [kube.apply(policy), kube.apply(binding)] == ["created", "created"]
    updated = enforcement.block_objects(budget, 175.0)[0]
    assert kube.apply(updated) == "replaced"
    (stored,) = api.objects_of("validatingadmissionpolicies")
    assert "$175.00" in stored["spec"]["validations"][0]["message"]
    (stored_binding,) = api.objects_of("validatingadmissionpolicybindings")
    assert stored_binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert kube.delete(policy) and kube.delete(binding)
    assert not kube.delete(policy)  # already gone
    assert api.objects_of("validatingadmissionpolicies") == []


def test_without_the_policy_api_the_error_is_a_404(api, kube):
    api.serves_admission_policies = False
    policy, _ = enforcement.block_objects(budget_of({"monthlyLimit": 1}), 2.0)
    with pytest.raises(KubernetesSourceError) as raised:
        kube.apply(policy)
    assert raised.value.status == 404
    (quota,) = enforcement.quota_objects(
        budget_of({"monthlyLimit": 1, "scope": {"namespaces": ["ml"]}})
    )
    assert kube.apply(quota) == "created"
    assert (
        api.get_object("resourcequotas", "ml", quota["metadata"]["name"])["spec"]["hard"][
            "requests.nvidia.com/gpu"
        ]
        == "0"
    )


def test_autoscaling_policy_replace_detects_concurrent_changes(api, kube):
    api.put({"apiVersion": "gpu-autoscaler.io/v1alpha1", "kind": "AutoscalingPolicy",
             "metadata": {"name": "p", "namespace": "ml"},
             "spec": {"nodePools": [{"name": "s", "capacityType": "spot", "maxNodes": 9}]}})  # fmt: skip
    (policy,) = kube.list_custom_objects("autoscalingpolicies")
    policy = {"apiVersion": "gpu-autoscaler.io/v1alpha1", "kind": "AutoscalingPolicy", **policy}
    throttled, _ = enforcement.throttle(policy, 3, "ml/team")
    kube.replace_custom_object("autoscalingpolicies", throttled)
    assert api.get_object("autoscalingpolicies", "ml", "p")["spec"]["nodePools"][0]["maxNodes"] == 3
    with pytest.raises(KubernetesSourceError) as raised:  # the stale resourceVersion again
        kube.replace_custom_object("autoscalingpolicies", throttled)
    assert raised.value.status == 409


def test_a_json_patch_content_type_with_an_object_body_is_refused(api):
    """What the bare client sends for a dict body by default: the server must refuse it, as
    kube-apiserver does (which is why patch_status sets the merge-patch content type)."""
    import json
    import urllib.request

    api.put(cost_budget("team"))
    request = urllib.request.Request(
        f"{api.url}/apis/gpu-autoscaler.io/v1alpha1/namespaces/ml/costbudgets/team/status",
        data=json.dumps({"status": {"x": 1}}).encode(),
        method="PATCH",
        headers={
            "Content-Type": "application/json-patch+json",
            "Authorization": f"Bearer {api.token}",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request)
    assert raised.value.code == 400
