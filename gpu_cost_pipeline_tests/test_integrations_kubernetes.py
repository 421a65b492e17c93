"""KubernetesResource against a real HTTP Kubernetes API (FakeKubernetesApi), through sockets."""

import json
import logging
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml

from gpu_cost_pipeline.integrations.kubernetes import (
    KubernetesResource,
    KubernetesSourceError,
    is_gpu_node,
    is_gpu_pod,
)
from gpu_cost_pipeline_tests.k8s_api_server import (
    DEFAULT_TOKEN,
    FakeKubernetesApi,
    make_node,
    make_pod,
)

GPU = {"nvidia.com/gpu": "1", "cpu": "4", "memory": "16Gi"}
CPU_ONLY = {"cpu": "2", "memory": "4Gi"}


@pytest.fixture(autouse=True)
def _not_in_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    # in_cluster=None must pick the kubeconfig here even when the tests run inside a pod.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.fixture
def api():
    with FakeKubernetesApi() as server:
        yield server


@pytest.fixture
def kubeconfig(api: FakeKubernetesApi, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def resource(kubeconfig: Path) -> KubernetesResource:
    return KubernetesResource(kubeconfig=str(kubeconfig))


def names(objects: list[dict]) -> list[str]:
    return [obj["metadata"]["name"] for obj in objects]


def gpu_pods(count: int) -> list[dict]:
    return [make_pod(f"train-{i}", "ml", "gpu-node-1", GPU) for i in range(count)]


def assert_no_secret(error: BaseException) -> None:
    rendered = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), rendered):
        assert DEFAULT_TOKEN not in text
        assert "Bearer" not in text
        assert "HTTP response headers" not in text


# --- listing through the real kubernetes client -----------------------------------------------


def test_lists_gpu_nodes_as_raw_api_json(api: FakeKubernetesApi, resource: KubernetesResource):
    api.nodes = [
        make_node(
            "gpu-node-1",
            labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            capacity={"nvidia.com/gpu": 8},
            provider_id="aws:///us-east-1a/i-0abc",
        ),
        make_node("mig-node", capacity={"nvidia.com/mig-1g.10gb": "7"}),
        make_node("labelled-only", labels={"nvidia.com/gpu.count": "4"}),
        make_node("cpu-node"),
    ]

    nodes = resource.list_gpu_nodes()

    assert sorted(names(nodes)) == ["gpu-node-1", "labelled-only", "mig-node"]
    h100 = next(node for node in nodes if node["metadata"]["name"] == "gpu-node-1")
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert h100["spec"]["providerID"] == "aws:///us-east-1a/i-0abc"
    assert h100["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.")
    assert h100["metadata"]["creationTimestamp"] == "2024-01-01T00:00:00Z"
    assert api.queries("/api/v1/nodes") == [{"limit": "500"}]


def test_lists_running_gpu_pods_only(api: FakeKubernetesApi, resource: KubernetesResource):
    api.pods = [
        make_pod("train", "ml", "gpu-node-1", GPU, labels={"team": "research"}),
        make_pod("web", "default", "cpu-node", CPU_ONLY),
        make_pod("queued", "ml", None, GPU, phase="Pending"),
        make_pod("done", "ml", "gpu-node-1", GPU, phase="Succeeded"),
        make_pod("crashed", "ml", "gpu-node-1", GPU, phase="Failed"),
    ]

    pods = resource.list_running_gpu_pods()

    assert names(pods) == ["train"]
    (pod,) = pods
    assert pod["spec"]["nodeName"] == "gpu-node-1"
    assert pod["metadata"]["labels"] == {"team": "research"}
    assert pod["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert pod["status"]["startTime"] == "2024-01-01T00:00:00Z"
    # The phase filter runs on the server: the client sends the selector and filters only GPUs.
    assert api.queries("/api/v1/pods") == [
        {"fieldSelector": "status.phase=Running", "limit": "500"}
    ]


def test_init_container_only_and_limits_only_gpu_pods_count(
    api: FakeKubernetesApi, resource: KubernetesResource
):
    api.pods = [
        make_pod("init-gpu", "ml", "gpu-node-1", CPU_ONLY, init_requests={"nvidia.com/gpu": 1}),
        make_pod("limits-gpu", "ml", "gpu-node-1", {}, limits={"nvidia.com/gpu": 2}),
        make_pod("mig", "ml", "gpu-node-1", {"nvidia.com/mig-3g.40gb": 1}),
        make_pod("shared", "ml", "gpu-node-1", {"nvidia.com/gpu.shared": 1}),
        make_pod("cpu", "ml", "gpu-node-1", CPU_ONLY),
    ]

    assert sorted(names(resource.list_running_gpu_pods())) == [
        "init-gpu",
        "limits-gpu",
        "mig",
        "shared",
    ]


def test_pagination_follows_continue_and_returns_every_item_once(
    api: FakeKubernetesApi, kubeconfig: Path
):
    api.pods = [*gpu_pods(7), make_pod("web", "default", "cpu-node", CPU_ONLY)]
    resource = KubernetesResource(kubeconfig=str(kubeconfig), page_size=2)

    pods = resource.list_running_gpu_pods()

    assert sorted(names(pods)) == [f"train-{i}" for i in range(7)]
    assert len({pod["metadata"]["uid"] for pod in pods}) == 7
    queries = api.queries("/api/v1/pods")
    # 8 running pods in pages of 2: four requests, each after the first carrying a token.
    assert len(queries) == 4
    assert all(q["limit"] == "2" and q["fieldSelector"] == "status.phase=Running" for q in queries)
    assert "continue" not in queries[0]
    tokens = [q["continue"] for q in queries[1:]]
    assert all(tokens) and len(set(tokens)) == 3


def test_node_pagination(api: FakeKubernetesApi, kubeconfig: Path):
    api.nodes = [make_node(f"gpu-{i}", capacity={"nvidia.com/gpu": "8"}) for i in range(5)]
    resource = KubernetesResource(kubeconfig=str(kubeconfig), page_size=2)

    assert sorted(names(resource.list_gpu_nodes())) == [f"gpu-{i}" for i in range(5)]
    assert len(api.queries("/api/v1/nodes")) == 3


def test_context_is_honoured(api: FakeKubernetesApi, tmp_path: Path):
    path = api.write_kubeconfig(tmp_path / "kubeconfig", context="gpu-prod")
    api.nodes = [make_node("gpu-1", capacity={"nvidia.com/gpu": "1"})]

    assert names(KubernetesResource(kubeconfig=str(path), context="gpu-prod").list_gpu_nodes())
    with pytest.raises(KubernetesSourceError, match="context missing"):
        KubernetesResource(kubeconfig=str(path), context="missing").list_gpu_nodes()


def test_kubeconfig_and_global_client_configuration_stay_untouched(
    api: FakeKubernetesApi, kubeconfig: Path, resource: KubernetesResource
):
    before = kubeconfig.read_bytes()
    default_host = kubernetes.client.Configuration.get_default_copy().host

    resource.list_gpu_nodes()

    assert kubeconfig.read_bytes() == before
    assert kubernetes.client.Configuration.get_default_copy().host == default_host


def test_in_cluster_is_chosen_automatically_from_the_environment(
    api: FakeKubernetesApi, monkeypatch: pytest.MonkeyPatch
):
    loaded = []

    def fake_incluster(client_configuration=None, try_refresh_token=True):
        # Real in-cluster config needs a mounted service account and https; point it here.
        assert client_configuration is not None, "must not replace the global default"
        client_configuration.host = api.url
        client_configuration.api_key["authorization"] = f"Bearer {DEFAULT_TOKEN}"
        loaded.append(client_configuration)

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", fake_incluster)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    api.pods = gpu_pods(1)

    assert names(KubernetesResource().list_running_gpu_pods()) == ["train-0"]
    assert len(loaded) == 1
    # An explicit kubeconfig wins over the pod's service account.
    with pytest.raises(KubernetesSourceError, match="kubeconfig /nonexistent"):
        KubernetesResource(kubeconfig="/nonexistent").list_running_gpu_pods()
    assert len(loaded) == 1


def test_in_cluster_without_a_service_account_is_a_source_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(KubernetesSourceError, match="in-cluster service account"):
        KubernetesResource(in_cluster=True).list_gpu_nodes()


def test_resource_works_inside_a_dagster_asset(api: FakeKubernetesApi, kubeconfig: Path):
    api.pods = gpu_pods(3)

    @dg.asset
    def running_gpu_pods(kubernetes: KubernetesResource) -> int:
        return len(kubernetes.list_running_gpu_pods())

    result = dg.materialize(
        [running_gpu_pods],
        resources={"kubernetes": KubernetesResource(kubeconfig=str(kubeconfig), page_size=2)},
    )
    assert result.success
    assert result.output_for_node("running_gpu_pods") == 3


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "reason"), [(500, "Internal Server Error"), (403, "Forbidden")])
def test_server_error_names_operation_and_host_and_hides_the_token(
    api: FakeKubernetesApi, resource: KubernetesResource, status: int, reason: str
):
    api.pods = gpu_pods(1)
    api.fail_next(1, status=status)

    with pytest.raises(KubernetesSourceError) as caught:
        resource.list_running_gpu_pods()

    error = caught.value
    assert "listing pods" in str(error)
    assert f"127.0.0.1:{api.port}" in str(error)
    assert f"{status} {reason}" in str(error)
    assert (error.status, error.operation) == (status, "listing pods")
    assert error.__cause__ is None and error.__suppress_context__
    assert_no_secret(error)


def test_server_error_on_a_later_page_fails_the_whole_listing(
    api: FakeKubernetesApi, kubeconfig: Path
):
    api.nodes = [make_node(f"gpu-{i}", capacity={"nvidia.com/gpu": "8"}) for i in range(5)]
    api.fail_next(1, after=1)

    with pytest.raises(KubernetesSourceError, match=r"500 .* while listing nodes"):
        KubernetesResource(kubeconfig=str(kubeconfig), page_size=2).list_gpu_nodes()
    assert len(api.queries("/api/v1/nodes")) == 2


def test_wrong_token_is_a_401_source_error(api: FakeKubernetesApi, tmp_path: Path):
    path = api.write_kubeconfig(tmp_path / "kubeconfig")
    api.token = "another-token"

    with pytest.raises(KubernetesSourceError, match="401 Unauthorized while listing nodes") as e:
        KubernetesResource(kubeconfig=str(path)).list_gpu_nodes()
    assert_no_secret(e.value)


def test_expired_continue_token_restarts_the_listing_once(
    api: FakeKubernetesApi, kubeconfig: Path, caplog: pytest.LogCaptureFixture
):
    api.pods = gpu_pods(7)
    api.expire_continue_tokens(1)
    resource = KubernetesResource(kubeconfig=str(kubeconfig), page_size=2)

    with caplog.at_level(logging.WARNING):
        pods = resource.list_running_gpu_pods()

    assert sorted(names(pods)) == [f"train-{i}" for i in range(7)]
    queries = api.queries("/api/v1/pods")
    # First page, the expired second page, then a fresh four-page listing.
    assert len(queries) == 6
    assert "continue" not in queries[2]
    assert "restarting the listing from the beginning" in caplog.text
    assert "listing pods" in caplog.text


def test_continue_token_expiring_again_is_a_source_error(api: FakeKubernetesApi, kubeconfig: Path):
    api.pods = gpu_pods(7)
    api.expire_continue_tokens(2)

    with pytest.raises(KubernetesSourceError, match="410 Gone") as caught:
        KubernetesResource(kubeconfig=str(kubeconfig), page_size=2).list_running_gpu_pods()
    assert caught.value.status == 410
    assert len(api.queries("/api/v1/pods")) == 4


def test_server_down_is_a_source_error(tmp_path: Path):
    with FakeKubernetesApi() as stopped:
        path = stopped.write_kubeconfig(tmp_path / "kubeconfig")
        port = stopped.port
    # The port is closed now; nothing should be listening there.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0

    with pytest.raises(KubernetesSourceError) as caught:
        KubernetesResource(kubeconfig=str(path)).list_running_gpu_pods()

    message = str(caught.value)
    assert "Could not reach Kubernetes API server" in message
    assert f"127.0.0.1:{port}" in message and "listing pods" in message
    assert "refused" in message.lower()
    assert_no_secret(caught.value)


def test_slow_server_times_out(api: FakeKubernetesApi, kubeconfig: Path):
    api.delay_seconds = 1.0
    resource = KubernetesResource(kubeconfig=str(kubeconfig), request_timeout_seconds=0.1)

    started = time.monotonic()
    with pytest.raises(KubernetesSourceError, match="listing nodes: timed out"):
        resource.list_gpu_nodes()
    # urllib3 retries the GET a few times; each try is bounded by the timeout.
    assert time.monotonic() - started < 5


def test_missing_kubeconfig_is_a_source_error(tmp_path: Path):
    with pytest.raises(KubernetesSourceError, match=r"kubeconfig .*nope"):
        KubernetesResource(kubeconfig=str(tmp_path / "nope")).list_gpu_nodes()


def test_broken_kubeconfig_does_not_echo_its_contents(tmp_path: Path):
    path = tmp_path / "kubeconfig"
    path.write_text(f"users:\n- name: u\n  user: {{token: {DEFAULT_TOKEN}\n  : [unbalanced\n")

    with pytest.raises(KubernetesSourceError) as caught:
        KubernetesResource(kubeconfig=str(path)).list_gpu_nodes()
    assert_no_secret(caught.value)


# --- GPU predicates ----------------------------------------------------------------------------


def _pod_with(container: dict, init: dict | None = None) -> dict:
    spec: dict = {"containers": [container]}
    if init is not None:
        spec["initContainers"] = [init]
    return {"metadata": {"name": "p"}, "spec": spec}


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"requests": {"nvidia.com/gpu": "1"}}, True),
        ({"limits": {"nvidia.com/gpu": "1"}}, True),
        ({"requests": {"nvidia.com/gpu.shared": "1"}}, True),
        ({"limits": {"nvidia.com/mig-1g.5gb": "1"}}, True),
        ({"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}, False),
        ({"requests": {"amd.com/gpu": "1"}}, False),
        ({"requests": {"nvidia.com/gpu-foo": "1"}}, False),
        ({"requests": None, "limits": None}, False),
        ({}, False),
    ],
)
def test_is_gpu_pod(resources: dict, expected: bool):
    assert is_gpu_pod(_pod_with({"name": "c", "resources": resources})) is expected
    init_only = _pod_with({"name": "c"}, init={"name": "i", "resources": resources})
    assert is_gpu_pod(init_only) is expected


def test_is_gpu_pod_tolerates_sparse_objects():
    assert not is_gpu_pod({})
    assert not is_gpu_pod({"spec": {"containers": None}})
    assert not is_gpu_pod({"spec": {"containers": [{"name": "c", "resources": None}]}})


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"status": {"capacity": {"nvidia.com/gpu": "8"}}}, True),
        ({"status": {"allocatable": {"nvidia.com/gpu.shared": "16"}}}, True),
        ({"status": {"capacity": {"nvidia.com/mig-2g.20gb": "3"}}}, True),
        ({"metadata": {"labels": {"nvidia.com/gpu.count": "4"}}}, True),
        ({"metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-A100"}}}, True),
        ({"metadata": {"labels": {"nvidia.com/gpu.present": "true"}}}, False),
        ({"status": {"capacity": {"cpu": "8"}}, "metadata": {"labels": {}}}, False),
        ({"status": None, "metadata": None}, False),
        ({}, False),
    ],
)
def test_is_gpu_node(node: dict, expected: bool):
    assert is_gpu_node(node) is expected


# --- the fake server itself ---------------------------------------------------------------------


def _get(api: FakeKubernetesApi, path: str, token: str | None = DEFAULT_TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(api.url + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_fake_server_serves_api_shapes(api: FakeKubernetesApi):
    api.pods = [
        make_pod("a", "ml", "gpu-node-1", GPU),
        make_pod("b", "other", "gpu-node-2", GPU),
        make_pod("c", "ml", None, GPU, phase="Pending"),
    ]

    status, pod_list = _get(api, "/api/v1/pods?fieldSelector=spec.nodeName%3Dgpu-node-1")
    assert status == 200
    assert (pod_list["apiVersion"], pod_list["kind"]) == ("v1", "PodList")
    assert [p["metadata"]["name"] for p in pod_list["items"]] == ["a"]
    assert pod_list["metadata"]["resourceVersion"].isdigit()

    _, namespaced = _get(api, "/api/v1/namespaces/ml/pods?fieldSelector=status.phase%21%3DRunning")
    assert [p["metadata"]["name"] for p in namespaced["items"]] == ["c"]

    _, paged = _get(api, "/api/v1/pods?limit=1")
    assert paged["metadata"]["remainingItemCount"] == 2 and paged["metadata"]["continue"]

    assert _get(api, "/version", token=None)[1]["gitVersion"].startswith("v1.")
    assert _get(api, "/api")[1]["versions"] == ["v1"]


def test_fake_server_errors_are_status_objects(api: FakeKubernetesApi):
    code, body = _get(api, "/api/v1/pods?fieldSelector=spec.bogus%3D1")
    assert (code, body["kind"], body["reason"]) == (400, "Status", "BadRequest")
    assert "field label not supported" in body["message"]

    code, body = _get(api, "/apis/apps/v1/deployments")
    assert (code, body["reason"], body["code"]) == (404, "NotFound", 404)

    assert _get(api, "/api/v1/nodes", token="wrong")[0] == 401
    assert _get(api, "/api/v1/pods?continue=not-a-token")[0] == 400

    api.fail_next(2)
    assert _get(api, "/api/v1/nodes")[1]["reason"] == "InternalError"
    assert _get(api, "/api/v1/nodes")[0] == 500
    assert _get(api, "/api/v1/nodes")[0] == 200


def test_fake_server_list_items_omit_type_meta_like_kube_apiserver():
    node = make_node("n")
    assert (node["apiVersion"], node["kind"]) == ("v1", "Node")
    with FakeKubernetesApi() as plain, FakeKubernetesApi(item_type_meta=True) as typed:
        plain.nodes = typed.nodes = [node]
        assert "kind" not in _get(plain, "/api/v1/nodes")[1]["items"][0]
        assert _get(typed, "/api/v1/nodes")[1]["items"][0]["kind"] == "Node"


def test_credential_plugin_output_never_reaches_errors_or_logs(tmp_path: Path):
    """A failing exec credential plugin prints what it likes (here a token), and the kubernetes
    client logs that on the root logger. Run in a real process (pytest's stdin keeps the client
    from starting plugins): neither the error nor any log line may carry it."""
    plugin = tmp_path / "leaky-plugin"
    plugin.write_text(
        f"#!/bin/sh\ntouch {tmp_path}/plugin-ran\necho 'token=s3cr3t-from-plugin' >&2\nexit 1\n"
    )
    plugin.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    exec_user = {
        "exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin)}
    }
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "users": [{"name": "u", "user": exec_user}],
            }
        )
    )
    script = (
        "import logging; logging.basicConfig(level=logging.DEBUG)\n"
        "from gpu_cost_pipeline.integrations.kubernetes import KubernetesResource\n"
        f"KubernetesResource(kubeconfig={str(kubeconfig)!r}, in_cluster=False).list_gpu_nodes()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (tmp_path / "plugin-ran").exists(), done.stderr[-1500:]
    assert "KubernetesSourceError" in done.stderr and "listing nodes" in done.stderr
    assert "s3cr3t-from-plugin" not in done.stdout + done.stderr
    assert "details hidden" in done.stderr  # the failure itself is still logged
