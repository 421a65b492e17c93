"""A real Prometheus for tests and benchmarks, loaded with a known history.

Debian's ``prometheus`` package provides the server and ``promtool`` (``make prometheus``
installs it; ``make test`` depends on that). History is written as OpenMetrics text in the exact
shapes kube-state-metrics and the DCGM exporter expose, imported with ``promtool tsdb
create-blocks-from openmetrics``, then a server is started on 127.0.0.1 over that folder:

    writer = OpenMetricsWriter(tmp_path / "om")
    write_cluster_history(writer, SimulatedCluster(40), start, end, scrape_s=15)
    with PrometheusServer(tmp_path / "tsdb", writer.files) as prometheus:
        requests.get(prometheus.url + "/api/v1/query", ...)

Other tests (e.g. an exporter's) can build their own series with ``OpenMetricsWriter`` or start a
server on an empty folder. Files are written one per 2-hour slice (promtool's block size), so an
import parses each sample once however long the history.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from gpu_cost_pipeline.core.kube_metrics import sanitize_label_name
from gpu_cost_pipeline.core.simulation import SimulatedCluster
from gpu_cost_pipeline.core.usage import parse_timestamp
from gpu_cost_pipeline_tests.postgres_servers import free_port

SLICE_SECONDS = 2 * 3600  # promtool's block range: one file per slice, one pass per file
INSTALL_HINT = "run `make prometheus` (apt-get install -y --no-install-recommends prometheus)"


def prometheus_binaries() -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool``; a clear error when the package is missing."""
    server, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not server or not promtool:
        raise RuntimeError(f"Prometheus is not installed: {INSTALL_HINT}")
    return server, promtool


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items())


@dataclass
class _Series:
    name: str
    labels: str
    times: np.ndarray  # int epoch seconds, ascending
    values: np.ndarray  # float, one per time


@dataclass
class OpenMetricsWriter:
    """Samples collected per family, written as one OpenMetrics file per 2-hour slice."""

    folder: Path
    families: dict[str, tuple[str, str, list[_Series]]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def add(
        self,
        name: str,
        labels: Mapping[str, str],
        times: Sequence[int] | np.ndarray,
        values: float | Sequence[float] | np.ndarray,
        help_text: str = "",
        kind: str = "gauge",
    ) -> None:
        times = np.asarray(times, dtype=np.int64)
        if times.size == 0:
            return
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), times.shape)
        family = self.families.setdefault(name, (kind, help_text, []))
        family[2].append(_Series(name, _labels(labels), times, values))

    def flush(self) -> list[Path]:
        """Write what was added (then forget it): one file per slice it touches."""
        self.folder.mkdir(parents=True, exist_ok=True)
        slices: set[int] = set()
        for _, _, series in self.families.values():
            for one in series:
                slices.update((np.unique(one.times // SLICE_SECONDS)).tolist())
        for slice_index in sorted(slices):
            path = self.folder / f"{slice_index}-{len(self.files)}.om"
            low, high = slice_index * SLICE_SECONDS, (slice_index + 1) * SLICE_SECONDS
            with path.open("w") as out:
                for name, (kind, help_text, series) in self.families.items():
                    out.write(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
                    for one in series:
                        lo, hi = np.searchsorted(one.times, [low, high])
                        prefix = f"{name}{{{one.labels}}} "
                        out.writelines(
                            f"{prefix}{value!r} {stamp}\n"
                            for stamp, value in zip(
                                one.times[lo:hi].tolist(), one.values[lo:hi].tolist(), strict=True
                            )
                        )
                out.write("# EOF\n")
            self.files.append(path)
        self.families.clear()
        return self.files


def import_openmetrics(files: Iterable[Path], tsdb: Path) -> None:
    """``promtool tsdb create-blocks-from openmetrics`` for each file into ``tsdb``."""
    _, promtool = prometheus_binaries()
    tsdb.mkdir(parents=True, exist_ok=True)
    for path in files:
        done = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(path), str(tsdb)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"promtool could not import {path}: {done.stderr[-2000:]}")


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a server process, and kill it if it has not exited after ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PrometheusServer:
    """``prometheus`` on 127.0.0.1 over ``tsdb`` (after importing ``files``), stopped on exit.

    ``basic_auth`` = (user, bcrypt hash) turns on Prometheus's own basic auth (web config).
    ``scrape_configs`` (Prometheus's own shape) make it scrape every ``scrape_interval``."""

    def __init__(
        self,
        tsdb: Path,
        files: Iterable[Path] = (),
        basic_auth: tuple[str, str] | None = None,
        extra_args: Sequence[str] = (),
        scrape_configs: Sequence[dict] = (),
        scrape_interval: str = "1h",
    ) -> None:
        self.tsdb = tsdb
        self.files = list(files)
        self.basic_auth = basic_auth
        self.extra_args = list(extra_args)
        self.scrape_configs = list(scrape_configs)
        self.scrape_interval = scrape_interval
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        server, _ = prometheus_binaries()
        import_openmetrics(self.files, self.tsdb)
        config = self.tsdb.parent / f"{self.tsdb.name}-prometheus.yml"
        config.write_text(  # JSON is YAML
            json.dumps(
                {
                    "global": {"scrape_interval": self.scrape_interval},
                    "scrape_configs": self.scrape_configs,
                }
            )
        )
        args = [
            server,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.tsdb}",
            "--storage.tsdb.retention.time=100y",  # imported history is old: keep it
            "--web.listen-address=127.0.0.1:0",
        ]
        if self.basic_auth:
            web = self.tsdb.parent / f"{self.tsdb.name}-web.yml"
            user, hashed = self.basic_auth
            web.write_text(f"basic_auth_users:\n  {user}: {json.dumps(hashed)}\n")
            args.append(f"--web.config.file={web}")
        # Its log goes to a file: a pipe nobody reads would block a long-running server.
        log_path = self.tsdb.parent / f"{self.tsdb.name}-prometheus.log"
        for _ in range(5):  # a port taken between probe and bind: try another
            self.port = free_port()
            args[4] = f"--web.listen-address=127.0.0.1:{self.port}"
            with open(log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [*args, *self.extra_args], stdout=subprocess.DEVNULL, stderr=log
                )
            if self._wait_ready():
                return self
            self._stop()
        log = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Prometheus did not become ready on 127.0.0.1: {log}")

    def _wait_ready(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return True
            except urllib.error.HTTPError as error:
                if error.code == 401:  # basic auth on: it answers, so it is up
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)

    def __exit__(self, *exc_info: object) -> None:
        self._stop()


# -- kube-state-metrics and DCGM exporter history of a simulated cluster ---------------------

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
LINGER_S = 90  # a completed pod stays listed (phase Succeeded) this long before deletion
KSM_HELP = {
    "kube_pod_info": "[STABLE] Information about pod.",
    "kube_pod_status_phase": "[STABLE] The pods current phase.",
    "kube_pod_start_time": "[STABLE] Start time in unix timestamp for a pod.",
    "kube_pod_completion_time": "[STABLE] Completion time in unix timestamp for a pod.",
    "kube_pod_labels": "[STABLE] Kubernetes labels converted to Prometheus labels.",
    "kube_pod_annotations": "Kubernetes annotations converted to Prometheus labels.",
    "kube_pod_container_resource_requests": "The number of requested request resource by a "
    "container. It is recommended to use the kube_pod_resource_requests metric exposed by "
    "kube-scheduler instead, as it is more precise.",
    "kube_node_info": "[STABLE] Information about a cluster node.",
    "kube_node_labels": "[STABLE] Kubernetes labels converted to Prometheus labels.",
    "kube_node_status_capacity": "The capacity for different resources of a node.",
    "kube_node_status_allocatable": "The allocatable for different resources of a node that "
    "are available for scheduling.",
    "kube_node_created": "[STABLE] Unix creation timestamp",
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "Ratio of time the graphics engine is active.",
}


def ksm_resource(resource: str) -> tuple[str, str]:
    """kube-state-metrics' (resource, unit) labels for a Kubernetes resource name."""
    if resource == "cpu":
        return "cpu", "core"
    if resource == "memory":
        return "memory", "byte"
    return sanitize_label_name(resource), "integer"


def _quantity(value: str) -> float:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _scrapes(start_s: int, end_s: int, scrape_s: int) -> np.ndarray:
    first = -(-start_s // scrape_s) * scrape_s
    return np.arange(first, end_s, scrape_s, dtype=np.int64)


def utilization_percent(uid: str, times: np.ndarray) -> np.ndarray:
    """A pod's DCGM_FI_DEV_GPU_UTIL (integer percent) at each time: a level per pod (some pods
    nearly idle) with a swing over time. Tests compute expected means from this."""
    level = int(uid.replace("-", "")[:8], 16) % 100
    swing = (times // 15 % 7 - 3) * 2
    return np.clip(level + swing, 0, 100).astype(np.float64)


@dataclass
class PodFate:
    """How a pod's history ends: ``completed`` (phase Succeeded, completion time, listed a
    while longer) or ``deleted`` (gone while running: its series just stop)."""

    end_s: int
    completed: bool


def default_fate(uid: str, end_s: int) -> PodFate:
    """One pod in five is deleted while running; the rest complete."""
    return PodFate(end_s, completed=int(uid[:2], 16) % 5 != 0)


def write_cluster_history(
    writer: OpenMetricsWriter,
    cluster: SimulatedCluster,
    start: datetime,
    end: datetime,
    scrape_s: int = 15,
    fate: Callable[[str, int], PodFate] = default_fate,
    allow_labels: bool = True,
    dcgm: bool | Callable[[str], bool] = True,
) -> dict[str, tuple[int, PodFate]]:
    """kube-state-metrics and DCGM exporter series of ``cluster`` for [start, end), scraped
    every ``scrape_s``, written in slices (memory stays bounded). Returns each pod's
    (start, fate) by uid. ``allow_labels=False`` is kube-state-metrics without a label
    allow-list: ``kube_*_labels`` carry no ``label_*``. ``dcgm`` may name the pods (by uid)
    the DCGM exporter reports."""
    start_s, end_s = int(start.timestamp()), int(end.timestamp())
    fates: dict[str, tuple[int, PodFate]] = {}
    slice_s = SLICE_SECONDS
    for piece_start in range(start_s - start_s % slice_s, end_s, slice_s):
        low, high = max(piece_start, start_s), min(piece_start + slice_s, end_s)
        _write_nodes(writer, cluster, low, high, scrape_s, allow_labels)
        seen = cluster.observe(
            datetime.fromtimestamp(low - LINGER_S, start.tzinfo),
            datetime.fromtimestamp(high, start.tzinfo),
        )
        for pod, pod_start, pod_end in zip(
            seen.pods, seen.pod_start_s.tolist(), seen.pod_end_s.tolist(), strict=True
        ):
            uid = pod["metadata"]["uid"]
            pod_fate = fate(uid, pod_end)
            fates[uid] = (pod_start, pod_fate)
            measured = dcgm(uid) if callable(dcgm) else dcgm
            _write_pod(
                writer, pod, pod_start, pod_fate, low, high, scrape_s, allow_labels, measured
            )
        if dcgm:
            _write_idle_gpus(writer, cluster, seen, low, high, scrape_s)
        writer.flush()
    return fates


def _write_nodes(
    writer: OpenMetricsWriter,
    cluster: SimulatedCluster,
    low: int,
    high: int,
    scrape_s: int,
    allow_labels: bool,
) -> None:
    times = _scrapes(low, high, scrape_s)
    for node in cluster.nodes:
        metadata, status = node["metadata"], node["status"]
        name = metadata["name"]
        writer.add(
            "kube_node_info",
            {
                "node": name,
                "kernel_version": "6.1.0-28-cloud-amd64",
                "os_image": "Amazon Linux 2023",
                "container_runtime_version": "containerd://1.7.22",
                "kubelet_version": "v1.31.2",
                "kubeproxy_version": "deprecated",
                "provider_id": node["spec"]["providerID"],
                "pod_cidr": "",
                "system_uuid": metadata["uid"],
                "internal_ip": "10.0.0.1",
            },
            times,
            1,
            KSM_HELP["kube_node_info"],
        )
        labels = {"node": name}
        if allow_labels:
            labels |= {f"label_{sanitize_label_name(k)}": v for k, v in metadata["labels"].items()}
        writer.add("kube_node_labels", labels, times, 1, KSM_HELP["kube_node_labels"])
        created = parse_timestamp(metadata["creationTimestamp"]) or 0
        writer.add(
            "kube_node_created", {"node": name}, times, created, KSM_HELP["kube_node_created"]
        )
        for family, values in (
            ("kube_node_status_capacity", status["capacity"]),
            ("kube_node_status_allocatable", status["allocatable"]),
        ):
            for resource, amount in values.items():
                resource_label, unit = ksm_resource(resource)
                writer.add(
                    family,
                    {"node": name, "resource": resource_label, "unit": unit},
                    times,
                    _quantity(amount),
                    KSM_HELP[family],
                )


def _write_pod(
    writer: OpenMetricsWriter,
    pod: dict,
    pod_start: int,
    fate: PodFate,
    low: int,
    high: int,
    scrape_s: int,
    allow_labels: bool,
    dcgm: bool,
) -> None:
    metadata, spec = pod["metadata"], pod["spec"]
    created = parse_timestamp(metadata["creationTimestamp"]) or pod_start
    gone = fate.end_s + LINGER_S if fate.completed else fate.end_s
    times = _scrapes(max(low, created), min(high, gone), scrape_s)
    if times.size == 0:
        return
    ident = {"namespace": metadata["namespace"], "pod": metadata["name"], "uid": metadata["uid"]}
    node = spec["nodeName"]
    writer.add(
        "kube_pod_info",
        {
            "namespace": ident["namespace"],
            "pod": ident["pod"],
            "uid": ident["uid"],
            "host_ip": "10.0.0.1",
            "pod_ip": "10.1.0.1",
            "node": node,
            "created_by_kind": "Job",
            "created_by_name": ident["pod"].rsplit("-", 1)[0],
            "priority_class": "",
            "host_network": "false",
        },
        times,
        1,
        KSM_HELP["kube_pod_info"],
    )
    phase = np.where(
        times < pod_start, "Pending", np.where(times < fate.end_s, "Running", "Succeeded")
    )
    for name in PHASES:
        writer.add(
            "kube_pod_status_phase",
            {**ident, "phase": name},
            times,
            (phase == name).astype(float),
            KSM_HELP["kube_pod_status_phase"],
        )
    started = times[times >= pod_start]
    writer.add("kube_pod_start_time", ident, started, pod_start, KSM_HELP["kube_pod_start_time"])
    if fate.completed:
        writer.add(
            "kube_pod_completion_time",
            ident,
            times[times >= fate.end_s],
            fate.end_s,
            KSM_HELP["kube_pod_completion_time"],
        )
    labels = dict(ident)
    if allow_labels:
        labels |= {f"label_{sanitize_label_name(k)}": v for k, v in metadata["labels"].items()}
    writer.add("kube_pod_labels", labels, times, 1, KSM_HELP["kube_pod_labels"])
    if allow_labels and metadata.get("annotations"):
        annotations = {
            f"annotation_{sanitize_label_name(k)}": v for k, v in metadata["annotations"].items()
        }
        writer.add(
            "kube_pod_annotations",
            {**ident, **annotations},
            times,
            1,
            KSM_HELP["kube_pod_annotations"],
        )
    for container in spec["containers"]:
        for resource, amount in container["resources"]["requests"].items():
            resource_label, unit = ksm_resource(resource)
            writer.add(
                "kube_pod_container_resource_requests",
                {
                    **ident,
                    "container": container["name"],
                    "node": node,
                    "resource": resource_label,
                    "unit": unit,
                },
                times,
                _quantity(amount),
                KSM_HELP["kube_pod_container_resource_requests"],
            )
    if dcgm:
        _write_pod_dcgm(writer, pod, times[(times >= pod_start) & (times < fate.end_s)])


def _write_pod_dcgm(writer: OpenMetricsWriter, pod: dict, times: np.ndarray) -> None:
    """The DCGM exporter's view of the pod's GPUs: DCGM_FI_DEV_GPU_UTIL per whole or
    time-sliced GPU, DCGM_FI_PROF_GR_ENGINE_ACTIVE (a ratio) per MIG instance. Scraped by a
    Prometheus without honor_labels, so the pod shows as exported_pod/exported_namespace and
    ``pod`` names the exporter's own pod."""
    metadata, spec = pod["metadata"], pod["spec"]
    container = spec["containers"][0]
    resource, amount = next(
        (r, int(a)) for r, a in container["resources"]["requests"].items() if r.startswith("nvidia")
    )
    percent = utilization_percent(metadata["uid"], times)
    base = {
        "Hostname": spec["nodeName"],
        "DCGM_FI_DRIVER_VERSION": "550.127.05",
        "container": "nvidia-dcgm-exporter",
        "namespace": "gpu-operator",
        "pod": f"nvidia-dcgm-exporter-{spec['nodeName'][-5:]}",
        "exported_container": container["name"],
        "exported_namespace": metadata["namespace"],
        "exported_pod": metadata["name"],
    }
    slot = int(metadata["name"].rsplit("-", 2)[1])
    if resource.startswith("nvidia.com/mig-"):
        profile = resource.removeprefix("nvidia.com/mig-")
        writer.add(
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
            {"gpu": "0", "UUID": f"GPU-{slot:08d}", "device": "nvidia0", "modelName":
             "NVIDIA A100-SXM4-40GB", "GPU_I_PROFILE": profile, "GPU_I_ID": str(slot % 7), **base},
            times,
            percent / 100,
            KSM_HELP["DCGM_FI_PROF_GR_ENGINE_ACTIVE"],
        )  # fmt: skip
        return
    for device in range(max(1, amount)):
        writer.add(
            "DCGM_FI_DEV_GPU_UTIL",
            {"gpu": str(device), "UUID": f"GPU-{slot:04d}{device:04d}", "device":
             f"nvidia{device}", "modelName": "NVIDIA GPU", **base},
            times,
            percent,
            KSM_HELP["DCGM_FI_DEV_GPU_UTIL"],
        )  # fmt: skip


def _write_idle_gpus(
    writer: OpenMetricsWriter, cluster: SimulatedCluster, seen, low: int, high: int, scrape_s: int
) -> None:
    """Whole GPUs of single-GPU exclusive nodes while no pod holds them: 0 %, no pod labels."""
    times = _scrapes(low, high, scrape_s)
    busy: dict[str, np.ndarray] = {}
    for pod, pod_start, pod_end in zip(
        seen.pods, seen.pod_start_s.tolist(), seen.pod_end_s.tolist(), strict=True
    ):
        node = pod["spec"]["nodeName"]
        mask = busy.setdefault(node, np.zeros(times.size, dtype=bool))
        mask |= (times >= pod_start) & (times < pod_end)
    for node in cluster.nodes:
        capacity = node["status"]["capacity"]
        labels = node["metadata"]["labels"]
        if capacity.get("nvidia.com/gpu") != "1" or "nvidia.com/gpu.replicas" in labels:
            continue
        name = node["metadata"]["name"]
        idle = times[~busy.get(name, np.zeros(times.size, dtype=bool))]
        writer.add(
            "DCGM_FI_DEV_GPU_UTIL",
            {"gpu": "0", "UUID": f"GPU-idle-{name}", "device": "nvidia0", "modelName": "NVIDIA GPU",
             "Hostname": name, "DCGM_FI_DRIVER_VERSION": "550.127.05",
             "container": "nvidia-dcgm-exporter", "namespace": "gpu-operator",
             "pod": f"nvidia-dcgm-exporter-{name[-5:]}"},
            idle,
            0,
            KSM_HELP["DCGM_FI_DEV_GPU_UTIL"],
        )  # fmt: skip


def history_server(
    folder: Path,
    cluster: SimulatedCluster,
    start: datetime,
    end: datetime,
    scrape_s: int = 15,
    **options,
) -> tuple[PrometheusServer, dict[str, tuple[int, PodFate]]]:
    """Write ``cluster``'s history, and a (not yet started) server over it."""
    writer = OpenMetricsWriter(folder / "openmetrics")
    fates = write_cluster_history(writer, cluster, start, end, scrape_s, **options)
    return PrometheusServer(folder / "tsdb", writer.files), fates


def free_port_url() -> str:
    """A URL where nothing listens (for connection-failure tests)."""
    return f"http://127.0.0.1:{free_port()}"


def iter_minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    cursor = start
    while cursor < end:
        yield cursor
        cursor = cursor.fromtimestamp(cursor.timestamp() + 60, cursor.tzinfo)
