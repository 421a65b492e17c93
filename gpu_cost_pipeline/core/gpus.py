"""GPU model catalog and the node-label conventions that name a node's GPU model.

Pure data and lookups: no I/O. Canonical model names are short and stable (``A100-80GB``) because
they are stored in every cost row and used as price keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

UNKNOWN_GPU_MODEL = "unknown"


@dataclass(frozen=True)
class GpuModel:
    name: str
    memory_gb: int


GPU_MODELS: dict[str, GpuModel] = {
    model.name: model
    for model in (
        GpuModel("H200-141GB", 141),
        GpuModel("H100-80GB", 80),
        GpuModel("A100-80GB", 80),
        GpuModel("A100-40GB", 40),
        GpuModel("L40S", 48),
        GpuModel("L4", 24),
        GpuModel("A10G", 24),
        GpuModel("T4", 16),
        GpuModel("V100", 16),
    )
}


@dataclass(frozen=True)
class InstanceType:
    """A cloud instance type with GPUs, and its on-demand list price (DOMAIN.md reference table)."""

    provider: str
    name: str
    gpu_model: str
    gpu_count: int
    on_demand_price_per_hour: float


INSTANCE_TYPES: dict[str, InstanceType] = {
    it.name: it
    for it in (
        InstanceType("aws", "p5.48xlarge", "H100-80GB", 8, 55.04),
        InstanceType("aws", "p5en.48xlarge", "H200-141GB", 8, 63.296),
        InstanceType("aws", "p4d.24xlarge", "A100-40GB", 8, 21.96),
        InstanceType("aws", "p4de.24xlarge", "A100-80GB", 8, 27.45),
        InstanceType("aws", "g6e.xlarge", "L40S", 1, 1.861),
        InstanceType("aws", "g6.xlarge", "L4", 1, 0.8048),
        InstanceType("aws", "g5.xlarge", "A10G", 1, 1.006),
        InstanceType("aws", "g4dn.xlarge", "T4", 1, 0.526),
        InstanceType("aws", "p3.2xlarge", "V100", 1, 3.06),
        InstanceType("gcp", "a2-highgpu-1g", "A100-40GB", 1, 3.673),
        InstanceType("gcp", "a2-ultragpu-1g", "A100-80GB", 1, 5.069),
        InstanceType("gcp", "a3-highgpu-8g", "H100-80GB", 8, 87.8),
        InstanceType("gcp", "g2-standard-4", "L4", 1, 0.76),
        InstanceType("azure", "Standard_NC24ads_A100_v4", "A100-80GB", 1, 3.673),
        InstanceType("azure", "Standard_ND96amsr_A100_v4", "A100-80GB", 8, 32.77),
        InstanceType("azure", "Standard_ND96isr_H100_v5", "H100-80GB", 8, 98.32),
        InstanceType("azure", "Standard_NC4as_T4_v3", "T4", 1, 0.526),
    )
}

# GKE accelerator label values (cloud.google.com/gke-accelerator).
_GKE_ACCELERATORS = {
    "nvidia-tesla-t4": "T4",
    "nvidia-tesla-v100": "V100",
    "nvidia-tesla-a100": "A100-40GB",
    "nvidia-a100-80gb": "A100-80GB",
    "nvidia-l4": "L4",
    "nvidia-h100-80gb": "H100-80GB",
    "nvidia-h100-mega-80gb": "H100-80GB",
    "nvidia-h200-141gb": "H200-141GB",
}

# Karpenter's karpenter.k8s.aws/instance-gpu-name values; A100 needs the memory label too.
_KARPENTER_GPU_NAMES = {
    "t4": "T4",
    "a10g": "A10G",
    "l4": "L4",
    "l40s": "L40S",
    "v100": "V100",
    "h100": "H100-80GB",
    "h200": "H200-141GB",
}

# GPU Feature Discovery product names (NVML name, spaces -> '-'), matched by family pattern.
_PRODUCT_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"H200"), "H200-141GB"),
    (re.compile(r"H100"), "H100-80GB"),
    (re.compile(r"A100.*80GB"), "A100-80GB"),
    (re.compile(r"A100"), "A100-40GB"),
    (re.compile(r"L40S"), "L40S"),
    (re.compile(r"(^|-)L4($|-)"), "L4"),
    (re.compile(r"A10G"), "A10G"),
    (re.compile(r"T4($|-)"), "T4"),
    (re.compile(r"V100"), "V100"),
]

PRODUCT_LABEL = "nvidia.com/gpu.product"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
KARPENTER_GPU_NAME_LABEL = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MEMORY_LABEL = "karpenter.k8s.aws/instance-gpu-memory"
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")


# MIG single strategy names the profile in the product label: ``A100-SXM4-40GB-MIG-1g.5gb``.
MIG_PRODUCT_SUFFIX = re.compile(r"-MIG-(\d+)g\.(\d+)gb$", re.IGNORECASE)


def strip_product_suffixes(product: str) -> str:
    """Drop GFD's ``-SHARED`` suffix and the MIG single-strategy ``-MIG-<profile>`` tail."""
    return MIG_PRODUCT_SUFFIX.sub("", product.removesuffix("-SHARED"))


def model_from_product(product: str) -> str | None:
    base = strip_product_suffixes(product).upper()
    for pattern, model in _PRODUCT_PATTERNS:
        if pattern.search(base):
            return model
    return None


def instance_type_of(labels: Mapping[str, str]) -> str:
    for key in INSTANCE_TYPE_LABELS:
        if labels.get(key):
            return labels[key]
    return ""


def canonical_gpu_model(labels: Mapping[str, str]) -> str:
    """The node's GPU model from its labels, in order of trust; ``unknown`` when nothing matches.

    Order (DOMAIN.md): GPU Feature Discovery product, GKE accelerator, Karpenter GPU name,
    instance type through the catalog. A product label that names a model we do not know wins
    over weaker labels: the node is kept as ``unknown`` rather than guessed.
    """
    product = labels.get(PRODUCT_LABEL)
    if product:
        return model_from_product(product) or UNKNOWN_GPU_MODEL
    accelerator = labels.get(GKE_ACCELERATOR_LABEL)
    if accelerator:
        return _GKE_ACCELERATORS.get(accelerator.lower(), UNKNOWN_GPU_MODEL)
    karpenter_name = labels.get(KARPENTER_GPU_NAME_LABEL)
    if karpenter_name:
        name = karpenter_name.lower()
        if name == "a100":
            memory_mib = labels.get(KARPENTER_GPU_MEMORY_LABEL, "")
            return "A100-80GB" if memory_mib.isdigit() and int(memory_mib) > 50_000 else "A100-40GB"
        return _KARPENTER_GPU_NAMES.get(name, UNKNOWN_GPU_MODEL)
    instance = INSTANCE_TYPES.get(instance_type_of(labels))
    return instance.gpu_model if instance else UNKNOWN_GPU_MODEL
