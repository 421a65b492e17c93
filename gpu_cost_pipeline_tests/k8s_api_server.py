"""A small Kubernetes API server for tests: real HTTP on 127.0.0.1, real API JSON.

It serves the core/v1 node and pod lists the way kube-apiserver does, including what matters
to a client: chunked lists with opaque ``continue`` tokens (``limit``/``continue``), field
selectors, Status objects for errors, bearer-token authentication, and items ordered by their
storage key (namespace/name), as etcd returns them. Like the real server, list items carry
no ``apiVersion``/``kind`` (kubernetes/kubernetes#3030) unless ``item_type_meta=True``.

    with FakeKubernetesApi() as api:
        api.nodes = [make_node("gpu-1", capacity={"nvidia.com/gpu": "8"})]
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
"""

import base64
import binascii
import contextlib
import copy
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

DEFAULT_TOKEN = "s3cr3t-token-value"
DEFAULT_CREATION = "2024-01-01T00:00:00Z"
SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.2",
    "gitCommit": "5864a4677267e6adeae276ad85882a8714d69d9d",
    "gitTreeState": "clean",
    "buildDate": "2024-10-22T20:28:14Z",
    "goVersion": "go1.22.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}
EXPIRED_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, modified, "
    "or deleted between the time the first chunk was returned and now may show up in the list."
)
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}

_resource_versions = itertools.count(1000)


def _next_resource_version() -> str:
    return str(next(_resource_versions))


def rfc3339(value: str | datetime) -> str:
    """A Kubernetes timestamp: RFC 3339, UTC, whole seconds, ``Z`` suffix."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _quantities(values: dict[str, Any] | None) -> dict[str, str]:
    # The API serves every quantity as a string, whatever the manifest said.
    return {name: str(amount) for name, amount in (values or {}).items()}


def _uid(kind: str, *names: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(["k8s-fake", kind, *names])))


def make_node(
    name: str,
    labels: dict[str, str] | None = None,
    capacity: dict[str, Any] | None = None,
    allocatable: dict[str, Any] | None = None,
    provider_id: str | None = None,
    creation: str | datetime = DEFAULT_CREATION,
) -> dict:
    """A Node as the API serves it; ``capacity`` adds to (or overrides) CPU/memory/pods.

    ``allocatable`` defaults to the capacity.
    """
    full_capacity = {
        "cpu": "32",
        "ephemeral-storage": "203070420Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": "263853464Ki",
        "pods": "110",
        **_quantities(capacity),
    }
    full_allocatable = dict(full_capacity) if allocatable is None else _quantities(allocatable)
    created = rfc3339(creation)
    node_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        **(labels or {}),
    }
    spec: dict[str, Any] = {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}
    if provider_id is not None:
        spec["providerID"] = provider_id
    machine_id = _uid("machine", name).replace("-", "")
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": _uid("node", name),
            "resourceVersion": _next_resource_version(),
            "creationTimestamp": created,
            "labels": node_labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": {
            "capacity": full_capacity,
            "allocatable": full_allocatable,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastHeartbeatTime": created,
                    "lastTransitionTime": created,
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.0.0.10"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": machine_id,
                "systemUUID": _uid("system", name),
                "bootID": _uid("boot", name),
                "kernelVersion": "5.15.0-1071-azure",
                "osImage": "Ubuntu 22.04.5 LTS",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": SERVER_VERSION["gitVersion"],
                "kubeProxyVersion": SERVER_VERSION["gitVersion"],
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _container(name: str, requests: dict[str, str], limits: dict[str, str]) -> dict:
    resources: dict[str, dict[str, str]] = {}
    if limits:
        resources["limits"] = limits
    if requests:
        resources["requests"] = requests
    return {
        "name": name,
        "image": "nvcr.io/nvidia/pytorch:24.08-py3",
        "imagePullPolicy": "IfNotPresent",
        "resources": resources,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def _qos_class(containers: list[dict]) -> str:
    requests_seen = False
    guaranteed = True
    for container in containers:
        resources = container["resources"]
        requests = resources.get("requests", {})
        limits = resources.get("limits", {})
        requests_seen = requests_seen or bool(requests) or bool(limits)
        for compute in ("cpu", "memory"):
            if compute not in limits or requests.get(compute) != limits[compute]:
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def make_pod(
    name: str,
    namespace: str,
    node: str | None,
    requests: dict[str, Any],
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
    uid: str | None = None,
    start_time: str | datetime | None = None,
    init_requests: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> dict:
    """A Pod as the API serves it, with one container ``main`` (and ``init`` if asked).

    As the API server's defaulting does, a resource with a limit but no request gets a
    request equal to its limit. ``node=None`` makes an unscheduled pod (no nodeName, no
    startTime). ``start_time`` defaults to the creation time, 2024-01-01T00:00:00Z.
    """
    container_limits = _quantities(limits)
    container_requests = {**container_limits, **_quantities(requests)}
    containers = [_container("main", container_requests, container_limits)]
    init_containers = []
    if init_requests is not None:
        init_containers.append(_container("init", _quantities(init_requests), {}))
    started = rfc3339(start_time) if start_time is not None else DEFAULT_CREATION
    created = rfc3339(_parse_rfc3339(started) - timedelta(seconds=5))
    scheduled = node is not None
    ready = "True" if phase == "Running" else "False"
    conditions = [
        {"type": "PodScheduled", "status": "True" if scheduled else "False"},
    ]
    if scheduled:
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": ready},
            {"type": "ContainersReady", "status": ready},
            {"type": "PodScheduled", "status": "True"},
        ]
    for condition in conditions:
        condition["lastProbeTime"] = None
        condition["lastTransitionTime"] = started if scheduled else created
    if not scheduled:
        conditions[0].update(
            reason="Unschedulable",
            message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        )

    spec: dict[str, Any] = {
        "containers": containers,
        "dnsPolicy": "ClusterFirst",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "restartPolicy": "Always" if phase in ("Running", "Pending") else "Never",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "serviceAccount": "default",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
        "tolerations": [
            {
                "effect": "NoExecute",
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "tolerationSeconds": 300,
            },
            {
                "effect": "NoExecute",
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "tolerationSeconds": 300,
            },
        ],
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if scheduled:
        spec["nodeName"] = node

    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "qosClass": _qos_class(containers + init_containers),
    }
    if scheduled:
        if phase == "Running":
            state: dict[str, Any] = {"running": {"startedAt": started}}
        elif phase in ("Succeeded", "Failed"):
            state = {
                "terminated": {
                    "exitCode": 0 if phase == "Succeeded" else 1,
                    "reason": "Completed" if phase == "Succeeded" else "Error",
                    "startedAt": started,
                    "finishedAt": started,
                    "containerID": f"containerd://{_uid('ctr', namespace, name)}",
                }
            }
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        status.update(
            hostIP="10.0.0.10",
            hostIPs=[{"ip": "10.0.0.10"}],
            podIP="10.244.1.23",
            podIPs=[{"ip": "10.244.1.23"}],
            startTime=started,
            containerStatuses=[
                {
                    "name": "main",
                    "image": containers[0]["image"],
                    "imageID": "",
                    "ready": phase == "Running",
                    "restartCount": 0,
                    "started": phase == "Running",
                    "state": state,
                }
            ],
        )

    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or _uid("pod", namespace, name),
        "resourceVersion": _next_resource_version(),
        "creationTimestamp": created,
    }
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status}


def _status(code: int, message: str, reason: str | None = None, **details: Any) -> dict:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


@dataclass(frozen=True)
class ResourceType:
    """A kind the server stores generically: created, read, replaced, merge-patched, deleted."""

    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return "v1" if self.prefix == "/api/v1" else self.prefix.removeprefix("/apis/")


ADMISSION = "/apis/admissionregistration.k8s.io/v1"
GPU_AUTOSCALER = "/apis/gpu-autoscaler.io/v1alpha1"
RESOURCE_TYPES = (
    ResourceType("/api/v1", "secrets", "Secret", True),
    ResourceType("/api/v1", "events", "Event", True),
    ResourceType("/api/v1", "resourcequotas", "ResourceQuota", True, True),
    ResourceType(
        ADMISSION, "validatingadmissionpolicies", "ValidatingAdmissionPolicy", False, True
    ),
    ResourceType(
        ADMISSION, "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", False
    ),
    ResourceType(GPU_AUTOSCALER, "costbudgets", "CostBudget", True, True),
    ResourceType(GPU_AUTOSCALER, "costattributions", "CostAttribution", True, True),
    ResourceType(GPU_AUTOSCALER, "autoscalingpolicies", "AutoscalingPolicy", True, True),
)
MERGE_PATCH = "application/merge-patch+json"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as kube-apiserver applies ``application/merge-patch+json``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _status_success(rtype: ResourceType, obj: dict) -> dict:
    metadata = obj.get("metadata") or {}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": metadata.get("name"), "kind": rtype.plural, "uid": metadata.get("uid")},
    }


class _ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None, **details: Any):
        super().__init__(message)
        self.code = code
        self.body = _status(code, message, reason, **details)


def _field_value(obj: dict, path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


# The field labels kube-apiserver accepts for these kinds, narrowed to what tests need.
_FIELD_LABELS = {
    "pods": frozenset({"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"}),
    "nodes": frozenset({"metadata.name", "spec.unschedulable"}),
}


def _parse_field_selector(kind: str, selector: str) -> Callable[[dict], bool]:
    requirements: list[tuple[str, bool, str]] = []
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        if "!=" in term:
            field, value = term.split("!=", 1)
            equal = False
        elif "==" in term:
            field, value = term.split("==", 1)
            equal = True
        elif "=" in term:
            field, value = term.split("=", 1)
            equal = True
        else:
            raise _ApiError(400, f'invalid field selector: "{term}" has no operator')
        field = field.strip()
        if field not in _FIELD_LABELS[kind]:
            raise _ApiError(400, f'field label not supported: "{field}"')
        requirements.append((field, equal, value.strip()))

    def matches(obj: dict) -> bool:
        return all((_field_value(obj, f) == v) == eq for f, eq, v in requirements)

    return matches


def _storage_key(obj: dict) -> str:
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = metadata.get("name", "")
    return f"{namespace}/{name}" if namespace else name


def _encode_continue(resource_version: int, start: str) -> str:
    # The same shape kube-apiserver uses: unpadded URL-safe base64 of a small JSON document.
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": resource_version, "start": start})
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if document.get("v") != "meta.k8s.io/v1":
            raise ValueError("unknown version")
        return int(document["rv"]), str(document["start"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise _ApiError(400, f"continue key is not valid: {exc}") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: "FakeKubernetesApi"

    def __init__(self, api: "FakeKubernetesApi") -> None:
        self.api = api
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout test) or a stop() mid-request is not a test failure.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeKubernetesApi/1.0"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        code, payload_body = api._handle(self.command, self.path, dict(self.headers.items()), body)
        if api.delay_seconds:
            time.sleep(api.delay_seconds)
        payload = json.dumps(payload_body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", _uid("flowschema", "exempt"))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class FakeKubernetesApi:
    """A Kubernetes API server on 127.0.0.1 for tests, run in a background thread.

    Set ``nodes`` and ``pods`` (see ``make_node``/``make_pod``); read ``requests`` to see what
    the client asked for, as ``(method, path_with_query)`` tuples in arrival order.
    """

    def __init__(
        self,
        *,
        token: str | None = DEFAULT_TOKEN,
        item_type_meta: bool = False,
    ) -> None:
        self.token = token
        self.item_type_meta = item_type_meta
        self.nodes: list[dict] = []
        self.pods: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.delay_seconds = 0.0
        self._failures: list[int] = []
        self._failures_skip = 0
        self._expire_continue = 0
        # Objects of RESOURCE_TYPES by (plural, namespace or "", name).
        self.objects: dict[tuple[str, str, str], dict] = {}
        # False: the server has no ValidatingAdmissionPolicy API (before Kubernetes 1.30).
        self.serves_admission_policies = True
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> "FakeKubernetesApi":
        """Bind a free port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeKubernetesApi is already running")
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-k8s-api-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the port and drop kept-alive client connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.sockets_lock:
            open_sockets = list(server.open_sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeKubernetesApi":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeKubernetesApi is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(
        self,
        path: str | Path,
        *,
        context: str = "fake",
        namespace: str = "default",
    ) -> Path:
        """Write a kubeconfig whose current context points at this server; return its path."""
        user: dict[str, Any] = {"token": self.token} if self.token else {}
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "fake-cluster", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": user}],
            "contexts": [
                {
                    "name": context,
                    "context": {
                        "cluster": "fake-cluster",
                        "user": "fake-user",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": context,
        }
        target = Path(path)
        target.write_text(yaml.safe_dump(document, sort_keys=False))
        return target

    # --- fault injection -------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 500, *, after: int = 0) -> None:
        """Answer the next ``count`` requests (after letting ``after`` through) with a Status."""
        with self._lock:
            self._failures_skip = after
            self._failures = [status] * count

    def expire_continue_tokens(self, count: int = 1) -> None:
        """Answer the next ``count`` requests that carry a continue token with 410 Expired."""
        with self._lock:
            self._expire_continue = count

    def queries(self, path: str) -> list[dict[str, str]]:
        """The query parameters of each logged request to ``path``, in order."""
        result = []
        for _, logged in list(self.requests):
            parts = urlsplit(logged)
            if parts.path == path:
                query = parse_qs(parts.query, keep_blank_values=True)
                result.append({key: values[-1] for key, values in query.items()})
        return result

    # --- stored objects (RESOURCE_TYPES) ---------------------------------------------------

    def put(self, obj: dict) -> dict:
        """Store an object as if created through the API (uid, resourceVersion, generation)."""
        rtype = next(t for t in RESOURCE_TYPES if t.kind == obj["kind"])
        metadata = obj.setdefault("metadata", {})
        namespace = metadata.get("namespace", "") if rtype.namespaced else ""
        if rtype.namespaced and not namespace:
            metadata["namespace"] = namespace = "default"
        stored = self._created(rtype, obj)
        with self._lock:
            self.objects[(rtype.plural, namespace, metadata["name"])] = stored
        return stored

    def get_object(self, plural: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def objects_of(self, plural: str) -> list[dict]:
        with self._lock:
            found = [copy.deepcopy(o) for (p, _, _), o in self.objects.items() if p == plural]
        return sorted(found, key=_storage_key)

    def _created(self, rtype: ResourceType, obj: dict) -> dict:
        stored = copy.deepcopy(obj)
        stored["apiVersion"], stored["kind"] = rtype.api_version, rtype.kind
        metadata = stored.setdefault("metadata", {})
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata.setdefault("creationTimestamp", rfc3339(datetime.now(UTC)))
        metadata["resourceVersion"] = _next_resource_version()
        metadata["generation"] = 1
        if rtype.status_subresource:
            stored.pop("status", None)  # a create never sets status through the main resource
        return stored

    def _locate(self, path: str) -> tuple[ResourceType, str, str | None, str | None] | None:
        """(type, namespace, name, subresource) of a path to a stored kind, else None."""
        for rtype in RESOURCE_TYPES:
            if not path.startswith(rtype.prefix + "/"):
                continue
            segments = path[len(rtype.prefix) + 1 :].split("/")
            namespace = ""
            if rtype.namespaced and segments[0] == "namespaces" and len(segments) >= 3:
                namespace, segments = segments[1], segments[2:]
            if segments[0] != rtype.plural or len(segments) > 3:
                continue
            if rtype.prefix == ADMISSION and not self.serves_admission_policies:
                raise _ApiError(404, "the server could not find the requested resource")
            name = segments[1] if len(segments) > 1 else None
            subresource = segments[2] if len(segments) > 2 else None
            if subresource is not None and (
                subresource != "status" or not rtype.status_subresource
            ):
                raise _ApiError(404, "the server could not find the requested resource")
            return rtype, namespace, name, subresource
        return None

    def _read(self, path: str, query: dict) -> dict:
        located = self._locate(path)
        if located is None:
            raise _ApiError(404, "the server could not find the requested resource")
        rtype, namespace, name, _ = located
        if name is not None:
            obj = self.get_object(rtype.plural, namespace, name)
            if obj is None:
                raise self._not_found(rtype, name)
            return obj
        objects = [
            o
            for o in self.objects_of(rtype.plural)
            if not namespace or o["metadata"].get("namespace") == namespace
        ]
        listed = self._list(rtype.plural, f"{rtype.kind}List", rtype.kind, objects, query)
        if rtype.prefix == GPU_AUTOSCALER:
            # Custom resources are served unstructured: their list items keep apiVersion/kind.
            for item in listed["items"]:
                item["apiVersion"], item["kind"] = rtype.api_version, rtype.kind
        return listed | {"apiVersion": rtype.api_version}

    @staticmethod
    def _not_found(rtype: ResourceType, name: str) -> _ApiError:
        group = rtype.api_version.rpartition("/")[0]
        resource = f"{rtype.plural}.{group}" if group else rtype.plural
        return _ApiError(
            404, f'{resource} "{name}" not found', name=name, kind=rtype.plural, group=group
        )

    def _write(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict]:
        path = urlsplit(raw_path).path.rstrip("/")
        located = self._locate(path)
        if located is None:
            raise _ApiError(405, "the server does not allow this method on the requested resource")
        rtype, namespace, name, subresource = located
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        try:
            document = json.loads(body) if body else None
        except ValueError:
            raise _ApiError(400, "the request body is not JSON") from None
        with self._lock:
            key = (rtype.plural, namespace, name or "")
            current = self.objects.get(key)
            if method == "POST" and name is None:
                return self._create_locked(rtype, namespace, document)
            if name is None:
                raise _ApiError(
                    405, "the server does not allow this method on the requested resource"
                )
            if current is None:
                raise self._not_found(rtype, name)
            if method == "DELETE":
                del self.objects[key]
                return 200, _status_success(rtype, current)
            if method == "PATCH":
                if not content_type.startswith(MERGE_PATCH):
                    # What kube-apiserver says when a JSON patch (a list) was expected.
                    raise _ApiError(
                        400 if content_type.startswith("application/json-patch") else 415,
                        f"the body of the request was in an unknown format or not a list for "
                        f"content type {content_type or '(none)'}",
                    )
                updated = merge_patch(current, document)
            elif method == "PUT":
                if not isinstance(document, dict):
                    raise _ApiError(400, "the request body must be an object")
                sent_version = (document.get("metadata") or {}).get("resourceVersion")
                if sent_version and sent_version != current["metadata"]["resourceVersion"]:
                    raise _ApiError(
                        409,
                        f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object '
                        "has been modified; please apply your changes to the latest version "
                        "and try again",
                        "Conflict",
                    )
                updated = copy.deepcopy(document)
            else:
                raise _ApiError(
                    405, "the server does not allow this method on the requested resource"
                )
            self.objects[key] = self._updated_locked(rtype, current, updated, subresource)
            return 200, copy.deepcopy(self.objects[key])

    def _create_locked(
        self, rtype: ResourceType, namespace: str, document: Any
    ) -> tuple[int, dict]:
        if not isinstance(document, dict) or not (document.get("metadata") or {}).get("name"):
            raise _ApiError(422, f"{rtype.kind} is invalid: metadata.name: Required value")
        document.setdefault("metadata", {})
        if rtype.namespaced:
            document["metadata"]["namespace"] = namespace
        name = document["metadata"]["name"]
        if (rtype.plural, namespace, name) in self.objects:
            raise _ApiError(
                409, f'{rtype.plural} "{name}" already exists', "AlreadyExists", name=name
            )
        stored = self._created(rtype, document)
        self.objects[(rtype.plural, namespace, name)] = stored
        return 201, copy.deepcopy(stored)

    @staticmethod
    def _updated_locked(
        rtype: ResourceType, current: dict, updated: dict, subresource: str | None
    ) -> dict:
        """Keep identity fields; with a status subresource, /status changes only status and
        the main resource never does (as kube-apiserver's strategies do)."""
        if rtype.status_subresource:
            if subresource == "status":
                updated = {**copy.deepcopy(current), "status": updated.get("status")}
                if updated["status"] is None:
                    updated.pop("status")
            elif "status" in current:
                updated["status"] = copy.deepcopy(current["status"])
            else:
                updated.pop("status", None)
        metadata = updated.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "name", "namespace"):
            if field in current["metadata"]:
                metadata[field] = current["metadata"][field]
        metadata["resourceVersion"] = _next_resource_version()
        generation = current["metadata"].get("generation", 1)
        changed = {k: v for k, v in updated.items() if k not in ("metadata", "status")} != {
            k: v for k, v in current.items() if k not in ("metadata", "status")
        }
        metadata["generation"] = generation + 1 if changed else generation
        updated["apiVersion"], updated["kind"] = rtype.api_version, rtype.kind
        return updated

    # --- request handling ------------------------------------------------------------------

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, dict]:
        self._record(method, raw_path)
        try:
            with self._lock:
                if self._failures and self._failures_skip:
                    self._failures_skip -= 1
                elif self._failures:
                    code = self._failures.pop(0)
                    raise _ApiError(code, f"Internal error occurred: injected failure ({code})")
            if method != "GET":
                self._authenticate(headers)
                return self._write(method, raw_path, headers, body)
            return 200, self._route(raw_path, headers)
        except _ApiError as error:
            return error.code, error.body

    def _route(self, raw_path: str, headers: dict[str, str]) -> dict:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path == "/version":
            return dict(SERVER_VERSION)
        self._authenticate(headers)
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                ],
            }
        if path == "/api/v1/nodes":
            return self._list("nodes", "NodeList", "Node", self.nodes, query)
        if path == "/api/v1/pods":
            return self._list("pods", "PodList", "Pod", self.pods, query)
        segments = path.split("/")
        if (
            len(segments) == 6
            and segments[1:4] == ["api", "v1", "namespaces"]
            and segments[5] == "pods"
        ):
            namespace = segments[4]
            pods = [p for p in self.pods if p["metadata"].get("namespace") == namespace]
            return self._list("pods", "PodList", "Pod", pods, query)
        return self._read(path, query)

    def _authenticate(self, headers: dict[str, str]) -> None:
        if self.token is None:
            return
        supplied = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        scheme, _, credential = supplied.partition(" ")
        if scheme.lower() != "bearer" or credential.strip() != self.token:
            raise _ApiError(401, "Unauthorized")

    def _list(
        self, resource: str, list_kind: str, item_kind: str, objects: list[dict], query: dict
    ) -> dict:
        if query.get("watch") in ("1", "true"):
            raise _ApiError(400, "watch is not supported by FakeKubernetesApi")
        if "labelSelector" in query:
            raise _ApiError(400, "labelSelector is not supported by FakeKubernetesApi")
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise _ApiError(400, f"invalid limit: {query['limit']!r}") from None
        if limit < 0:
            raise _ApiError(400, "limit must be non-negative")

        selected = sorted(objects, key=_storage_key)
        field_selector = query.get("fieldSelector", "")
        if field_selector:
            matches = _parse_field_selector(resource, field_selector)
            selected = [obj for obj in selected if matches(obj)]

        list_version = int(_next_resource_version())
        token = query.get("continue", "")
        if token:
            token_version, start = _decode_continue(token)
            with self._lock:
                expire = self._expire_continue > 0
                if expire:
                    self._expire_continue -= 1
            if expire:
                raise _ApiError(410, EXPIRED_MESSAGE, "Expired")
            list_version = token_version
            selected = [obj for obj in selected if _storage_key(obj) >= start]

        page = selected[:limit] if limit else selected
        remaining = selected[len(page) :]
        metadata: dict[str, Any] = {"resourceVersion": str(list_version)}
        if remaining:
            metadata["continue"] = _encode_continue(list_version, _storage_key(page[-1]) + "\0")
            # kube-apiserver cannot count what a selector would keep, so it omits the count.
            if not field_selector:
                metadata["remainingItemCount"] = len(remaining)

        items = []
        for obj in page:
            item = json.loads(json.dumps(obj))
            if self.item_type_meta:
                item = {"apiVersion": "v1", "kind": item_kind, **item}
            else:
                item.pop("apiVersion", None)
                item.pop("kind", None)
            items.append(item)
        return {"kind": list_kind, "apiVersion": "v1", "metadata": metadata, "items": items}
