"""A deterministic synthetic GPU cluster that produces Kubernetes API objects for any window.

The cluster is a number of identical *groups* of nodes (group 0 also has the odd nodes: MIG single
strategy and a current GPU, the RTX PRO 6000 Blackwell). Every node has pod *slots*; a slot runs a
sequence of pods, one per epoch of a slot-specific length, each starting after a short gap and
sometimes skipped, so pods start and end at arbitrary seconds and some GPUs sit idle. Everything
is a pure function of (seed, time): the same window always yields the same objects, whichever
process asks.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from gpu_cost_pipeline.core.window_usage import ClusterObservation

MASK64 = (1 << 64) - 1
DUTY_CYCLE = 0.8  # rough share of slot time with a pod running, used to size the cluster
NODE_CREATED = "2020-01-01T00:00:00Z"  # before any window anyone will ask for


def _mix(*values: int) -> int:
    """splitmix64 over a tuple of ints: a stable hash (Python's hash() is salted per process)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state + (value & MASK64) + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        state = z ^ (z >> 31)
    return state


def _unit(*values: int) -> float:
    return _mix(*values) / float(1 << 64)


@dataclass(frozen=True)
class Pool:
    name: str
    instance_type: str
    labels: dict[str, str]
    capacity: dict[str, str]
    slots: tuple[tuple[str, int], ...]  # (GPU resource, amount) of the pod each slot runs
    nodes_per_group: int
    workload: str  # "training" | "inference"
    group_zero_only: bool = False


_GPU = "nvidia.com/gpu"

POOLS: tuple[Pool, ...] = (
    Pool(
        "h100-od",
        "p5.48xlarge",
        {
            "karpenter.sh/capacity-type": "on-demand",
            "karpenter.k8s.aws/instance-gpu-name": "h100",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            "nvidia.com/gpu.count": "8",
        },
        {_GPU: "8"},
        ((_GPU, 4), (_GPU, 2), (_GPU, 1), (_GPU, 1)),
        1,
        "training",
    ),
    Pool(
        "a100-spot",
        "p4de.24xlarge",
        {
            "karpenter.sh/capacity-type": "spot",
            "karpenter.k8s.aws/instance-gpu-name": "a100",
            "karpenter.k8s.aws/instance-gpu-memory": "81920",
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
            "nvidia.com/gpu.count": "8",
        },
        {_GPU: "8"},
        ((_GPU, 4), (_GPU, 4)),
        1,
        "training",
    ),
    Pool(
        "l4-timesliced",
        "g6.xlarge",
        {
            "eks.amazonaws.com/capacityType": "ON_DEMAND",
            "nvidia.com/gpu.product": "NVIDIA-L4-SHARED",
            "nvidia.com/gpu.count": "1",
            "nvidia.com/gpu.sharing-strategy": "time-slicing",
            "nvidia.com/gpu.replicas": "4",
        },
        {_GPU: "4"},
        ((_GPU, 1),) * 4,
        2,
        "inference",
    ),
    Pool(
        "a100-mig",
        "p4d.24xlarge",
        {
            "karpenter.sh/capacity-type": "on-demand",
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
            "nvidia.com/gpu.count": "8",
            "nvidia.com/mig.strategy": "mixed",
        },
        # GPU 0 as 7×1g.5gb, GPU 1 as 3×2g.10gb, GPU 2 as 2×3g.20gb, GPUs 3-7 whole.
        {
            _GPU: "5",
            "nvidia.com/mig-1g.5gb": "7",
            "nvidia.com/mig-2g.10gb": "3",
            "nvidia.com/mig-3g.20gb": "2",
        },
        (("nvidia.com/mig-1g.5gb", 1),) * 7
        + (("nvidia.com/mig-2g.10gb", 1),) * 3
        + (("nvidia.com/mig-3g.20gb", 1),) * 2
        + ((_GPU, 2), (_GPU, 2), (_GPU, 1)),
        1,
        "inference",
    ),
    Pool(
        "t4-spot",
        "g4dn.xlarge",
        {"eks.amazonaws.com/capacityType": "SPOT", "nvidia.com/gpu.product": "Tesla-T4"},
        {_GPU: "1"},
        ((_GPU, 1),),
        2,
        "inference",
    ),
    Pool(
        "a100-mig-single",
        "p4d.24xlarge",
        {
            "karpenter.sh/capacity-type": "on-demand",
            "nvidia.com/gpu.product": "A100-SXM4-40GB-MIG-1g.5gb",
            "nvidia.com/gpu.count": "56",  # GFD counts MIG devices under the single strategy
            "nvidia.com/mig.strategy": "single",
        },
        {_GPU: "56"},
        ((_GPU, 1),) * 12,
        1,
        "inference",
        group_zero_only=True,
    ),
    Pool(
        "rtx-pro",
        "g7e.2xlarge",
        {
            "karpenter.sh/capacity-type": "on-demand",
            "nvidia.com/gpu.product": "NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition",
            "nvidia.com/gpu.count": "1",
        },
        {_GPU: "1"},
        ((_GPU, 1),),
        1,
        "inference",
        group_zero_only=True,
    ),
)

# (team, project, cost center, namespaces)
TEAMS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("nlp-team", "language-models", "research-ml", ("ml-training", "research")),
    ("data-science", "forecasting", "analytics", ("data-science",)),
    ("vision", "image-models", "research-ml", ("ml-training", "vision")),
    ("inference-platform", "serving", "platform", ("ml-inference",)),
    ("ml-engineering", "recommendations", "product-ml", ("ml-inference", "ml-training")),
)
_EPOCH_MINUTES = {"training": (60, 360), "inference": (10, 120)}


@dataclass(frozen=True)
class _Slot:
    slot_id: int
    node: str
    resource: str
    amount: int
    workload: str
    epoch_seconds: int
    phase_seconds: int


def groups_for(gpu_pods: int) -> int:
    slots_per_group = sum(len(p.slots) * p.nodes_per_group for p in POOLS if not p.group_zero_only)
    return max(1, round(gpu_pods / (slots_per_group * DUTY_CYCLE)))


def _iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SimulatedCluster:
    """A cluster sized for about ``gpu_pods`` concurrently running GPU pods."""

    def __init__(self, gpu_pods: int = 80, seed: int = 42, region: str = "us-east-1") -> None:
        if gpu_pods < 1:
            raise ValueError(f"the simulated cluster needs at least 1 GPU pod, got {gpu_pods}")
        self.seed = seed
        self.region = region
        self.nodes: list[dict] = []
        self.slots: list[_Slot] = []
        for group in range(groups_for(gpu_pods)):
            for pool in POOLS:
                if pool.group_zero_only and group:
                    continue
                for copy in range(pool.nodes_per_group):
                    self._add_node(pool, group, copy)

    def _add_node(self, pool: Pool, group: int, copy: int) -> None:
        name = f"gpu-{pool.name}-{group:04d}-{copy}"
        node_index = len(self.nodes)
        zone = f"{self.region}{'abc'[_mix(self.seed, node_index) % 3]}"
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": pool.instance_type,
            "topology.kubernetes.io/region": self.region,
            "topology.kubernetes.io/zone": zone,
            "gpu-autoscaler.io/pool": pool.name,
            **pool.labels,
        }
        instance_id = f"i-{_mix(self.seed, node_index, 7) & 0xFFFFFFFFFFFFF:013x}"
        self.nodes.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "uid": str(uuid.UUID(int=_mix(self.seed, node_index, 1) << 64 | node_index)),
                    "labels": labels,
                    "creationTimestamp": NODE_CREATED,
                },
                "spec": {"providerID": f"aws:///{zone}/{instance_id}"},
                "status": {
                    "capacity": {"cpu": "96", "memory": "1056Gi", **pool.capacity},
                    "allocatable": {"cpu": "95", "memory": "1040Gi", **pool.capacity},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
        low, high = _EPOCH_MINUTES[pool.workload]
        for resource, amount in pool.slots:
            slot_id = len(self.slots)
            epoch_minutes = low + _mix(self.seed, slot_id, 2) % (high - low + 1)
            epoch_seconds = epoch_minutes * 60 + _mix(self.seed, slot_id, 3) % 60
            self.slots.append(
                _Slot(
                    slot_id,
                    name,
                    resource,
                    amount,
                    pool.workload,
                    epoch_seconds,
                    _mix(self.seed, slot_id, 4) % epoch_seconds,
                )
            )

    def observe(self, window_start: datetime, window_end: datetime) -> ClusterObservation:
        """Every pod that ran at some point in [window_start, window_end)."""
        start_s, end_s = int(window_start.timestamp()), int(window_end.timestamp())
        pods: list[dict] = []
        starts: list[int] = []
        ends: list[int] = []
        for slot in self.slots:
            first = (start_s - slot.phase_seconds) // slot.epoch_seconds
            last = (end_s - 1 - slot.phase_seconds) // slot.epoch_seconds
            for epoch in range(first, last + 1):
                if _unit(self.seed, slot.slot_id, epoch, 5) < 0.1:
                    continue  # this epoch the slot stays empty
                epoch_start = slot.phase_seconds + epoch * slot.epoch_seconds
                gap = int(_unit(self.seed, slot.slot_id, epoch, 6) * 0.25 * slot.epoch_seconds)
                pod_start, pod_end = epoch_start + gap, epoch_start + slot.epoch_seconds
                if pod_end <= start_s or pod_start >= end_s:
                    continue
                pods.append(self._pod(slot, epoch, pod_start))
                starts.append(pod_start)
                ends.append(pod_end)
        return ClusterObservation(
            nodes=self.nodes,
            pods=pods,
            pod_start_s=np.asarray(starts, dtype=np.int64),
            pod_end_s=np.asarray(ends, dtype=np.int64),
        )

    def _pod(self, slot: _Slot, epoch: int, started_s: int) -> dict:
        team, project, cost_center, namespaces = TEAMS[
            _mix(self.seed, slot.slot_id, 8) % len(TEAMS)
        ]
        namespace = namespaces[_mix(self.seed, slot.slot_id, 9) % len(namespaces)]
        kind = "train" if slot.workload == "training" else "serve"
        name = f"{project}-{kind}-{slot.slot_id:05d}-{epoch & 0xFFFFF:05x}"
        labels = {"app.kubernetes.io/name": f"{project}-{kind}", "project": project}
        annotations: dict[str, str] = {}
        if _unit(self.seed, slot.slot_id, epoch, 10) >= 0.1:  # about 1 pod in 10 has no team
            labels["team"] = team
            labels["cost-center"] = cost_center
        if slot.workload == "training":
            labels["experiment-id"] = f"exp-{project}-{epoch % 997:03d}"
            if _unit(self.seed, slot.slot_id, epoch, 11) < 0.2:
                annotations["gpu-autoscaler.io/cost-limit"] = "250"
        uid = uuid.UUID(
            int=(_mix(self.seed, slot.slot_id, epoch, 12) << 64) | _mix(slot.slot_id, epoch)
        )
        amount = str(slot.amount)
        metadata: dict = {
            "name": name,
            "namespace": namespace,
            "uid": str(uid),
            "labels": labels,
            "creationTimestamp": _iso(started_s - 5),
        }
        if annotations:
            metadata["annotations"] = annotations
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "nodeName": slot.node,
                "containers": [
                    {
                        "name": kind,
                        "image": f"registry.example.com/{project}:{kind}",
                        "resources": {
                            "requests": {"cpu": "4", slot.resource: amount},
                            "limits": {slot.resource: amount},
                        },
                    }
                ],
            },
            "status": {"phase": "Running", "startTime": _iso(started_s)},
        }
