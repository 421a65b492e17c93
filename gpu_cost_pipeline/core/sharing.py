"""How much of a physical GPU a pod holds: whole GPUs, MIG slices, time-slicing and MPS replicas.

``gpu_share`` is always in physical GPUs, so that price × share is the cost of what the pod holds
and the shares on a node add up to at most its GPU count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from gpu_cost_pipeline.core.gpus import MIG_PRODUCT_SUFFIX

WHOLE_GPU_RESOURCE = "nvidia.com/gpu"
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"
_MIG_RESOURCE = re.compile(r"^nvidia\.com/mig-(\d+)g\.(\d+)gb$")

# A100/H100 have 7 compute slices and 8 memory slices.
MIG_COMPUTE_SLICES = 7
MIG_MEMORY_SLICES = 8


class SharingMode(StrEnum):
    EXCLUSIVE = "exclusive"
    MIG = "mig"
    TIME_SLICING = "time-slicing"
    MPS = "mps"


class MigConvention(StrEnum):
    """How a MIG slice's share of its GPU is counted: ``compute`` (g/7, the usual choice) or
    ``memory`` (memory slices of 8)."""

    COMPUTE = "compute"
    MEMORY = "memory"


@dataclass(frozen=True)
class MigProfile:
    compute_slices: int
    memory_gb: int

    def fraction(self, gpu_memory_gb: int, convention: MigConvention) -> float:
        if convention is MigConvention.MEMORY and gpu_memory_gb > 0:
            memory_slices = round(self.memory_gb / gpu_memory_gb * MIG_MEMORY_SLICES)
            return min(1.0, max(1, memory_slices) / MIG_MEMORY_SLICES)
        return min(1.0, self.compute_slices / MIG_COMPUTE_SLICES)

    def instances_per_gpu(self, gpu_memory_gb: int) -> int:
        """How many slices of this profile one GPU holds (1g.10gb → 7, 1g.20gb → 4, 3g.40gb → 2)."""
        by_compute = MIG_COMPUTE_SLICES // self.compute_slices
        if gpu_memory_gb <= 0:
            return max(1, by_compute)
        memory_slices = max(1, round(self.memory_gb / gpu_memory_gb * MIG_MEMORY_SLICES))
        return max(1, min(by_compute, MIG_MEMORY_SLICES // memory_slices))


def mig_profile_of_resource(resource: str) -> MigProfile | None:
    match = _MIG_RESOURCE.match(resource)
    return MigProfile(int(match[1]), int(match[2])) if match else None


def mig_profile_of_product(product: str) -> MigProfile | None:
    """The MIG profile a single-strategy product label names, if any."""
    match = MIG_PRODUCT_SUFFIX.search(product.removesuffix("-SHARED"))
    return MigProfile(int(match[1]), int(match[2])) if match else None


def is_gpu_resource(resource: str) -> bool:
    return resource in (WHOLE_GPU_RESOURCE, SHARED_GPU_RESOURCE) or bool(
        _MIG_RESOURCE.match(resource)
    )


@dataclass(frozen=True)
class NodeSharing:
    """What a node's labels say about how its GPUs are shared."""

    gpu_count: int
    gpu_memory_gb: int
    sharing_strategy: str = "none"  # none | time-slicing | mps
    replicas: int = 1
    mig_single_profile: MigProfile | None = None


def pod_gpu_share(
    resource: str, amount: int, node: NodeSharing, convention: MigConvention
) -> tuple[float, SharingMode]:
    """Physical GPUs held by ``amount`` units of ``resource`` on ``node``, and the sharing mode.

    Raises ValueError for a resource that is not a GPU resource.
    """
    replicas = max(1, node.replicas)
    shared_by_replicas = node.sharing_strategy in ("time-slicing", "mps") and replicas > 1
    replica_mode = SharingMode.MPS if node.sharing_strategy == "mps" else SharingMode.TIME_SLICING

    mig = mig_profile_of_resource(resource)
    if mig is None and resource == WHOLE_GPU_RESOURCE and node.mig_single_profile is not None:
        mig = node.mig_single_profile
    if mig is not None:
        share = amount * mig.fraction(node.gpu_memory_gb, convention)
        return (share / replicas if shared_by_replicas else share), SharingMode.MIG

    if resource == SHARED_GPU_RESOURCE:
        return amount / replicas, replica_mode
    if resource == WHOLE_GPU_RESOURCE:
        if shared_by_replicas:
            return amount / replicas, replica_mode
        return float(amount), SharingMode.EXCLUSIVE
    raise ValueError(f"{resource!r} is not a GPU resource")
