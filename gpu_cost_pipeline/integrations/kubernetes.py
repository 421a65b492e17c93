"""The pipeline's one way into a live Kubernetes API: GPU nodes and running GPU pods.

Objects come back as the raw JSON the API server serves (camelCase keys), read with
``_preload_content=False`` so the kubernetes client's slow model deserialisation is skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import urllib3
from dagster import ConfigurableResource, get_dagster_logger

if TYPE_CHECKING:  # the client takes over a second to import: only runs that use it pay
    from kubernetes import client as k8s_client

from gpu_cost_pipeline.core.sharing import is_gpu_resource

__all__ = [
    "CUSTOM_GROUP",
    "CUSTOM_VERSION",
    "GPU_NODE_LABELS",
    "KubernetesResource",
    "KubernetesSourceError",
    "is_gpu_node",
    "is_gpu_pod",
]

GPU_NODE_LABELS = ("nvidia.com/gpu.count", "nvidia.com/gpu.product")
CUSTOM_GROUP, CUSTOM_VERSION = "gpu-autoscaler.io", "v1alpha1"
MERGE_PATCH = "application/merge-patch+json"
EVENT_SOURCE = "gpu-autoscaler.io/cost-pipeline"
RUNNING_PODS_FIELD_SELECTOR = "status.phase=Running"

log = get_dagster_logger(__name__)


class KubernetesSourceError(RuntimeError):
    """The Kubernetes API could not be read.

    The message names the API server and the operation; it never carries credentials.
    ``status`` is the HTTP status when the server answered, else None.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        operation: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.operation = operation
        self.status = status


class _ContinueExpired(Exception):
    """The server answered 410 Gone to a request carrying a continue token."""


def _has_gpu_key(resources: Any) -> bool:
    return isinstance(resources, dict) and any(is_gpu_resource(k) for k in resources)


def is_gpu_pod(pod: dict) -> bool:
    """True when any container or init container requests or limits a GPU resource."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    for container in containers:
        resources = (container or {}).get("resources") or {}
        if _has_gpu_key(resources.get("requests")) or _has_gpu_key(resources.get("limits")):
            return True
    return False


def is_gpu_node(node: dict) -> bool:
    """True when the node advertises a GPU resource or carries a GPU feature-discovery label."""
    status = node.get("status") or {}
    if _has_gpu_key(status.get("capacity")) or _has_gpu_key(status.get("allocatable")):
        return True
    labels = (node.get("metadata") or {}).get("labels") or {}
    return any(label in labels for label in GPU_NODE_LABELS)


class _HideClientConfigLogs(logging.Filter):
    """The kubernetes client logs a failed exec credential plugin's output (which may hold a
    token) on the root logger: such records keep their level but lose their text."""

    _marker = os.sep.join(("", "kubernetes", "config", ""))

    def filter(self, record: logging.LogRecord) -> bool:
        if self._marker in record.pathname:
            record.msg = "kubernetes client configuration problem (details hidden: they may hold credentials)"
            record.args = ()
        return True


_client_log_filter = _HideClientConfigLogs()


def _config_problem(error: Exception) -> str:
    """A configuration error, safe to show: exec and OIDC credential plugins put their own
    output (which may hold tokens) in the message, so only the kind of failure is kept."""
    message = str(error)
    if message.lower().startswith("exec") or any(
        word in message.lower() for word in ("oidc", "auth-provider", "credential")
    ):
        return f"{type(error).__name__} from the credential plugin (its output is not shown)"
    return message.splitlines()[0][:200] if message else type(error).__name__


def _server_label(host_url: str) -> str:
    """scheme://host:port of the API server, without any userinfo or path."""
    parts = urlsplit(host_url)
    hostname = parts.hostname
    if not hostname:
        return "<unknown API server>"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{hostname}:{port}" if port else hostname
    return f"{parts.scheme}://{netloc}" if parts.scheme else netloc


def _describe_transport_error(exc: BaseException) -> str:
    """A short cause for a failed connection, taken from the innermost OS-level error.

    urllib3's own messages embed object reprs and, through a proxy, possibly the proxy URL
    with its userinfo, so only the OS error text or the exception type is used.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        reason = getattr(current, "reason", None)
        current = (
            reason
            if isinstance(reason, BaseException)
            else (current.__cause__ or current.__context__)
        )
    for error in reversed(chain):
        if isinstance(error, OSError) and not isinstance(error, urllib3.exceptions.HTTPError):
            if isinstance(error, TimeoutError):
                return "timed out"
            return error.strerror or type(error).__name__
    # urllib3's NewConnectionError subclasses its TimeoutError, so rule it out first.
    if any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        return "connection failed"
    if any(isinstance(e, urllib3.exceptions.TimeoutError) for e in chain):
        return "timed out"
    return type(exc).__name__


@contextmanager
def _api_errors(host: str, operation: str) -> Iterator[None]:
    """Turn the client's errors into KubernetesSourceError naming host and operation, never
    quoting headers, bodies or credentials."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        yield
    except ApiException as exc:
        # str(ApiException) dumps response headers and body; use status and reason only.
        if not exc.status:
            # The client reports TLS failures as status 0.
            message = f"Could not reach Kubernetes API server {host} while {operation}: TLS error"
        else:
            message = (
                f"Kubernetes API server {host} answered {exc.status} {exc.reason} "
                f"while {operation}{_status_message(exc)}"
            )
        raise KubernetesSourceError(
            message, host=host, operation=operation, status=exc.status or None
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubernetesSourceError(
            f"Could not reach Kubernetes API server {host} while {operation}: "
            f"{_describe_transport_error(exc)}",
            host=host,
            operation=operation,
        ) from None
    except ConfigException as exc:
        # Raised mid-request when an exec or OIDC credential refresh fails.
        raise KubernetesSourceError(
            f"Could not refresh credentials for Kubernetes API server {host} while "
            f"{operation}: {_config_problem(exc)}",
            host=host,
            operation=operation,
        ) from None
    except ValueError:
        raise KubernetesSourceError(
            f"Kubernetes API server {host} sent a response that is not JSON while {operation}",
            host=host,
            operation=operation,
        ) from None


def _status_message(exc: Any) -> str:
    """The Status message of a write the server refused (e.g. a webhook's or validation's
    reason); reads (lists) keep status and reason only, as before."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return ""
    if not isinstance(body, dict) or body.get("kind") != "Status":
        return ""
    message = str(body.get("message") or "")[:300]
    return f": {message}" if message and exc.status in (400, 404, 409, 422) else ""


_SNAKE = {
    "ValidatingAdmissionPolicy": "validating_admission_policy",
    "ValidatingAdmissionPolicyBinding": "validating_admission_policy_binding",
    "ResourceQuota": "resource_quota",
}
_ADMISSION_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def _version_of(current: dict) -> dict:
    version = (current.get("metadata") or {}).get("resourceVersion")
    return {"resourceVersion": version} if version else {}


class KubernetesResource(ConfigurableResource):
    """Read-only access to one Kubernetes cluster's nodes and pods.

    ``in_cluster=None`` picks the in-cluster service account when ``KUBERNETES_SERVICE_HOST``
    is set and no ``kubeconfig`` is given, else the kubeconfig (``kubeconfig=None`` means ``$KUBECONFIG`` or ~/.kube/config).
    """

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool | None = None
    page_size: int = 500
    request_timeout_seconds: float = 30.0

    def list_gpu_nodes(self) -> list[dict]:
        """Every node that has GPUs, as raw Node JSON objects."""
        nodes = self._list_all(
            "listing nodes",
            lambda api, **kwargs: api.list_node(**kwargs),
        )
        return [node for node in nodes if is_gpu_node(node)]

    def list_running_gpu_pods(self) -> list[dict]:
        """Every Running pod, in all namespaces, that requests GPUs, as raw Pod JSON objects."""
        pods = self._list_all(
            "listing pods",
            lambda api, **kwargs: api.list_pod_for_all_namespaces(
                field_selector=RUNNING_PODS_FIELD_SELECTOR, **kwargs
            ),
        )
        return [pod for pod in pods if is_gpu_pod(pod)]

    # --- writes and the budget machinery's objects ------------------------------------------
    # Specs, their status, Secrets (read at send time), Events, and what enforcement creates.

    def list_custom_objects(self, plural: str) -> list[dict]:
        """Every ``gpu-autoscaler.io/v1alpha1`` object of ``plural`` in all namespaces."""
        return self._list_all(
            f"listing {plural}",
            lambda api, **kwargs: api.list_cluster_custom_object(
                CUSTOM_GROUP, CUSTOM_VERSION, plural, **kwargs
            ),
            api_class="CustomObjectsApi",
        )

    def patch_status(self, plural: str, namespace: str, name: str, status: dict) -> dict:
        """Merge-patch the status subresource of one custom object."""
        return self._call(
            f"updating the status of {plural} {namespace}/{name}",
            "CustomObjectsApi",
            lambda api, **kw: api.patch_namespaced_custom_object_status(
                CUSTOM_GROUP, CUSTOM_VERSION, namespace, plural, name, {"status": status}, **kw
            ),
            content_type=MERGE_PATCH,
        )

    def replace_custom_object(self, plural: str, obj: dict) -> dict:
        """PUT a custom object back; its resourceVersion makes a concurrent change a 409."""
        metadata = obj["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        return self._call(
            f"updating {plural} {namespace}/{name}",
            "CustomObjectsApi",
            lambda api, **kw: api.replace_namespaced_custom_object(
                CUSTOM_GROUP, CUSTOM_VERSION, namespace, plural, name, obj, **kw
            ),
        )

    def read_secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded. Errors name the Secret and key, never a value."""
        secret = self._call(
            f"reading Secret {namespace}/{name}",
            "CoreV1Api",
            lambda api, **kw: api.read_namespaced_secret(name, namespace, **kw),
        )
        data = secret.get("data") or {}
        if key not in data:
            raise KubernetesSourceError(
                f"Secret {namespace}/{name} has no key {key!r}", operation="reading a Secret"
            )
        try:
            return base64.b64decode(data[key], validate=True).decode()
        except (ValueError, binascii.Error):
            raise KubernetesSourceError(
                f"Secret {namespace}/{name} key {key!r} is not base64 text",
                operation="reading a Secret",
            ) from None

    def create_event(
        self, involved: dict, reason: str, message: str, event_type: str = "Normal"
    ) -> dict:
        """A core/v1 Event on ``involved`` (apiVersion, kind, namespace, name, uid)."""
        namespace = involved.get("namespace") or "default"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"name": f"{involved['name']}.{uuid.uuid4().hex[:16]}"},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": EVENT_SOURCE},
            "reportingComponent": EVENT_SOURCE,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        return self._call(
            f"creating an Event for {involved.get('kind')} {namespace}/{involved['name']}",
            "CoreV1Api",
            lambda api, **kw: api.create_namespaced_event(namespace, body, **kw),
        )

    def apply(self, obj: dict) -> str:
        """Create ``obj``, or replace the object of that name: "created" or "replaced"."""
        create, replace, what = self._writers(obj)
        try:
            self._call(f"creating {what}", self._api_of(obj), create)
            return "created"
        except KubernetesSourceError as error:
            if error.status != 409:
                raise
        current = self._call(f"reading {what}", self._api_of(obj), self._reader(obj))
        body = {**obj, "metadata": {**obj["metadata"], **_version_of(current)}}
        self._call(
            f"replacing {what}", self._api_of(obj), lambda api, **kw: replace(api, body, **kw)
        )
        return "replaced"

    def delete(self, obj: dict) -> bool:
        """Delete the object ``obj`` names; False when it was already gone."""
        kind, name, namespace = (
            obj["kind"],
            obj["metadata"]["name"],
            obj["metadata"].get("namespace"),
        )
        method = _SNAKE[kind]
        args = (name, namespace) if namespace else (name,)
        try:
            self._call(
                f"deleting {kind} {'/'.join(filter(None, (namespace, name)))}",
                self._api_of(obj),
                lambda api, **kw: getattr(
                    api, f"delete_{'namespaced_' if namespace else ''}{method}"
                )(*args, **kw),
            )
        except KubernetesSourceError as error:
            if error.status == 404:
                return False
            raise
        return True

    def _writers(self, obj: dict) -> tuple[Callable, Callable, str]:
        kind, metadata = obj["kind"], obj["metadata"]
        namespace, name, method = metadata.get("namespace"), metadata["name"], _SNAKE[kind]
        scope = "namespaced_" if namespace else ""
        what = f"{kind} {'/'.join(filter(None, (namespace, name)))}"

        def create(api: Any, **kw: Any) -> Any:
            args = (namespace, obj) if namespace else (obj,)
            return getattr(api, f"create_{scope}{method}")(*args, **kw)

        def replace(api: Any, body: dict, **kw: Any) -> Any:
            args = (name, namespace, body) if namespace else (name, body)
            return getattr(api, f"replace_{scope}{method}")(*args, **kw)

        return create, replace, what

    def _reader(self, obj: dict) -> Callable:
        metadata, method = obj["metadata"], _SNAKE[obj["kind"]]
        namespace, name = metadata.get("namespace"), metadata["name"]
        if namespace:
            return lambda api, **kw: getattr(api, f"read_namespaced_{method}")(
                name, namespace, **kw
            )
        return lambda api, **kw: getattr(api, f"read_{method}")(name, **kw)

    @staticmethod
    def _api_of(obj: dict) -> str:
        return "AdmissionregistrationV1Api" if obj["kind"] in _ADMISSION_KINDS else "CoreV1Api"

    def _call(
        self,
        operation: str,
        api_class: str,
        call: Callable[..., Any],
        content_type: str | None = None,
    ) -> dict:
        """One request, answered as raw JSON; errors as KubernetesSourceError."""
        from kubernetes import client as k8s_client

        extra = {"_content_type": content_type} if content_type else {}
        with self._api_client(operation) as api_client:
            api = getattr(k8s_client, api_class)(api_client)
            host = _server_label(api_client.configuration.host)
            response = None
            try:
                with _api_errors(host, operation):
                    response = call(
                        api,
                        _preload_content=False,
                        _request_timeout=self.request_timeout_seconds,
                        **extra,
                    )
                    body = json.loads(response.data) if response.data else {}
            finally:
                if response is not None:
                    response.release_conn()
        return body if isinstance(body, dict) else {}

    def uses_in_cluster_config(self) -> bool:
        """Whether this resource talks to the API with the in-cluster service account."""
        if self.in_cluster is not None:
            return self.in_cluster
        if self.kubeconfig:  # an explicit kubeconfig wins over the pod's service account
            return False
        return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))

    @contextmanager
    def _api_client(self, operation: str) -> Iterator[k8s_client.ApiClient]:
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config
        from kubernetes.config.config_exception import ConfigException

        if _client_log_filter not in logging.getLogger().filters:
            logging.getLogger().addFilter(_client_log_filter)
        try:
            if self.uses_in_cluster_config():
                # Our own Configuration: load_incluster_config() without one would replace the
                # process-wide default that every other kubernetes client user shares.
                configuration = k8s_client.Configuration()
                k8s_config.load_incluster_config(client_configuration=configuration)
                api_client = k8s_client.ApiClient(configuration=configuration)
            else:
                # persist_config=False: a pipeline must never rewrite the user's kubeconfig.
                api_client = k8s_config.new_client_from_config(
                    config_file=self.kubeconfig, context=self.context, persist_config=False
                )
        except ConfigException as exc:
            raise KubernetesSourceError(
                f"Could not load Kubernetes client configuration from {self._config_source()} "
                f"before {operation}: {_config_problem(exc)}",
                operation=operation,
            ) from None
        except Exception as exc:
            # A YAML parse error quotes the offending kubeconfig line, which may hold a token.
            raise KubernetesSourceError(
                f"Could not load Kubernetes client configuration from {self._config_source()} "
                f"before {operation}: {type(exc).__name__}",
                operation=operation,
            ) from None
        try:
            yield api_client
        finally:
            api_client.close()
            # ApiClient.close() leaves the urllib3 pool's sockets open.
            api_client.rest_client.pool_manager.clear()

    def _config_source(self) -> str:
        if self.uses_in_cluster_config():
            return "the in-cluster service account"
        where = f"kubeconfig {self.kubeconfig}" if self.kubeconfig else "the default kubeconfig"
        return f"{where} (context {self.context})" if self.context else where

    def _list_all(
        self, operation: str, list_call: Callable[..., Any], api_class: str = "CoreV1Api"
    ) -> list[dict]:
        from kubernetes import client as k8s_client

        with self._api_client(operation) as api_client:
            api = getattr(k8s_client, api_class)(api_client)
            host = _server_label(api_client.configuration.host)
            try:
                return self._paginate(api, host, operation, list_call)
            except _ContinueExpired:
                # Pages from two snapshots could skip or repeat objects, so start over.
                log.warning(
                    "Kubernetes continue token expired while %s from %s; "
                    "restarting the listing from the beginning",
                    operation,
                    host,
                )
            try:
                return self._paginate(api, host, operation, list_call)
            except _ContinueExpired:
                raise KubernetesSourceError(
                    f"Kubernetes API server {host} answered 410 Gone (continue token expired) "
                    f"while {operation}, again after restarting the listing",
                    host=host,
                    operation=operation,
                    status=410,
                ) from None

    def _paginate(
        self,
        api: k8s_client.CoreV1Api,
        host: str,
        operation: str,
        list_call: Callable[..., Any],
    ) -> list[dict]:
        items: list[dict] = []
        seen_uids: set[str] = set()
        token: str | None = None
        while True:
            body = self._fetch_page(api, host, operation, list_call, token)
            for item in body.get("items") or []:
                uid = (item.get("metadata") or {}).get("uid")
                # One consistent list never repeats an object; a repeat means the pages are
                # going round in a circle, which would otherwise never end.
                if uid and uid in seen_uids:
                    raise KubernetesSourceError(
                        f"Kubernetes API server {host} returned object {uid} twice in one "
                        f"paginated list while {operation}",
                        host=host,
                        operation=operation,
                    )
                if uid:
                    seen_uids.add(uid)
                items.append(item)
            next_token = (body.get("metadata") or {}).get("continue") or None
            if next_token is None:
                return items
            if next_token == token:
                raise KubernetesSourceError(
                    f"Kubernetes API server {host} returned the same continue token twice "
                    f"while {operation}",
                    host=host,
                    operation=operation,
                )
            token = next_token

    def _fetch_page(
        self,
        api: Any,
        host: str,
        operation: str,
        list_call: Callable[..., Any],
        token: str | None,
    ) -> dict:
        from kubernetes.client.exceptions import ApiException

        response = None
        try:
            with _api_errors(host, operation):
                try:
                    response = list_call(
                        api,
                        limit=self.page_size,
                        _continue=token,
                        _preload_content=False,
                        _request_timeout=self.request_timeout_seconds,
                    )
                except ApiException as exc:
                    if exc.status == 410 and token is not None:
                        raise _ContinueExpired from None
                    raise
                body = json.loads(response.data)
        finally:
            if response is not None:
                response.release_conn()
        if not isinstance(body, dict):
            raise KubernetesSourceError(
                f"Kubernetes API server {host} sent a list that is not a JSON object while "
                f"{operation}",
                host=host,
                operation=operation,
            )
        return body
