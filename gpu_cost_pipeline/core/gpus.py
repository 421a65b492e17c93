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
    # Partitionable into MIG instances of g/7 of the compute (1g … 7g): A100, H100, H200 and
    # the Blackwell data-centre parts. What the right-sizing recommendation may suggest.
    mig_capable: bool = False


GPU_MODELS: dict[str, GpuModel] = {
    model.name: model
    for model in (
        GpuModel("GB300", 288, mig_capable=True),
        GpuModel("B300", 288, mig_capable=True),
        GpuModel("GB200", 186, mig_capable=True),
        GpuModel("B200", 180, mig_capable=True),
        GpuModel("H200-141GB", 141, mig_capable=True),
        GpuModel("H100-80GB", 80, mig_capable=True),
        GpuModel("A100-80GB", 80, mig_capable=True),
        GpuModel("A100-40GB", 40, mig_capable=True),
        GpuModel("RTX-PRO-6000", 96),
        GpuModel("RTX-6000-Ada", 48),
        GpuModel("L40S", 48),
        GpuModel("L40", 48),
        GpuModel("L4", 24),
        GpuModel("A10G", 24),
        GpuModel("A10", 24),
        GpuModel("A16", 16),
        GpuModel("T4", 16),
        GpuModel("V100", 16),
        GpuModel("P100", 16),
        GpuModel("P4", 8),
        GpuModel("M60", 8),
    )
}


@dataclass(frozen=True)
class InstanceType:
    """A cloud instance type with GPUs. ``on_demand_price_per_hour`` is a reference list price
    for estimates (DOMAIN.md table) where one is known; the price books supply real prices.
    ``vcpus`` and ``memory_gib`` are kept for GCP machine types, whose host (cores and RAM) is
    priced separately from their GPUs."""

    provider: str
    name: str
    gpu_model: str
    gpu_count: int
    on_demand_price_per_hour: float | None = None
    vcpus: int = 0
    memory_gib: float = 0.0


def _sizes(
    provider: str, family: str, model: str, sizes: dict[str, int], prices: dict[str, float]
) -> list[InstanceType]:
    """One entry per size of a family: ``{"xlarge": 1, "12xlarge": 4}`` -> g5.xlarge, ..."""
    return [
        InstanceType(provider, f"{family}.{size}", model, gpus, prices.get(size))
        for size, gpus in sizes.items()
    ]


_ONE_GPU_SMALL = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1}
_AWS = [
    *_sizes("aws", "p3", "V100", {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}, {"2xlarge": 3.06}),
    InstanceType("aws", "p3dn.24xlarge", "V100", 8),
    InstanceType("aws", "p4d.24xlarge", "A100-40GB", 8, 21.96),
    InstanceType("aws", "p4de.24xlarge", "A100-80GB", 8, 27.45),
    InstanceType("aws", "p5.4xlarge", "H100-80GB", 1),
    InstanceType("aws", "p5.48xlarge", "H100-80GB", 8, 55.04),
    InstanceType("aws", "p5e.48xlarge", "H200-141GB", 8),
    InstanceType("aws", "p5en.48xlarge", "H200-141GB", 8, 63.296),
    InstanceType("aws", "p6-b200.48xlarge", "B200", 8),
    InstanceType("aws", "p6-b300.48xlarge", "B300", 8),
    InstanceType("aws", "p6e-gb200.36xlarge", "GB200", 4),
    *_sizes("aws", "g4dn", "T4", {**_ONE_GPU_SMALL, "12xlarge": 4, "metal": 8}, {"xlarge": 0.526}),
    *_sizes(
        "aws",
        "g5",
        "A10G",
        {**_ONE_GPU_SMALL, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
        {"xlarge": 1.006},
    ),
    *_sizes(
        "aws",
        "g6",
        "L4",
        {**_ONE_GPU_SMALL, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
        {"xlarge": 0.8048},
    ),
    *_sizes("aws", "gr6", "L4", {"4xlarge": 1, "8xlarge": 1}, {}),
    *_sizes(
        "aws",
        "g6e",
        "L40S",
        {**_ONE_GPU_SMALL, "12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
        {"xlarge": 1.861},
    ),
    # G7e (RTX PRO 6000 Blackwell Server Edition); GPU counts per size not confirmed here.
    *_sizes(
        "aws",
        "g7e",
        "RTX-PRO-6000",
        {"2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "12xlarge": 2, "24xlarge": 4, "48xlarge": 8},
        {},
    ),
]


def _gcp(name: str, model: str, gpus: int, vcpus: int, memory: float, price: float | None = None):
    return InstanceType("gcp", name, model, gpus, price, vcpus, memory)


_GCP = [
    _gcp("a2-highgpu-1g", "A100-40GB", 1, 12, 85, 3.673),
    _gcp("a2-highgpu-2g", "A100-40GB", 2, 24, 170),
    _gcp("a2-highgpu-4g", "A100-40GB", 4, 48, 340),
    _gcp("a2-highgpu-8g", "A100-40GB", 8, 96, 680),
    _gcp("a2-megagpu-16g", "A100-40GB", 16, 96, 1360),
    _gcp("a2-ultragpu-1g", "A100-80GB", 1, 12, 170, 5.069),
    _gcp("a2-ultragpu-2g", "A100-80GB", 2, 24, 340),
    _gcp("a2-ultragpu-4g", "A100-80GB", 4, 48, 680),
    _gcp("a2-ultragpu-8g", "A100-80GB", 8, 96, 1360),
    _gcp("a3-highgpu-1g", "H100-80GB", 1, 26, 234),
    _gcp("a3-highgpu-2g", "H100-80GB", 2, 52, 468),
    _gcp("a3-highgpu-4g", "H100-80GB", 4, 104, 936),
    _gcp("a3-highgpu-8g", "H100-80GB", 8, 208, 1872, 87.8),
    _gcp("a3-megagpu-8g", "H100-80GB", 8, 208, 1872),
    _gcp("a3-edgegpu-8g", "H100-80GB", 8, 208, 1872),
    _gcp("a3-ultragpu-8g", "H200-141GB", 8, 224, 2952),
    _gcp("a4-highgpu-8g", "B200", 8, 224, 3968),
    _gcp("a4x-highgpu-4g", "GB200", 4, 140, 884),
    _gcp("g2-standard-4", "L4", 1, 4, 16, 0.76),
    _gcp("g2-standard-8", "L4", 1, 8, 32),
    _gcp("g2-standard-12", "L4", 1, 12, 48),
    _gcp("g2-standard-16", "L4", 1, 16, 64),
    _gcp("g2-standard-24", "L4", 2, 24, 96),
    _gcp("g2-standard-32", "L4", 1, 32, 128),
    _gcp("g2-standard-48", "L4", 4, 48, 192),
    _gcp("g2-standard-96", "L4", 8, 96, 384),
    _gcp("g4-standard-48", "RTX-PRO-6000", 1, 48, 180),
    _gcp("g4-standard-96", "RTX-PRO-6000", 2, 96, 360),
    _gcp("g4-standard-192", "RTX-PRO-6000", 4, 192, 720),
    _gcp("g4-standard-384", "RTX-PRO-6000", 8, 384, 1440),
]


def _azure(name: str, model: str, gpus: int, price: float | None = None) -> InstanceType:
    return InstanceType("azure", f"Standard_{name}", model, gpus, price)


# Fractional-GPU sizes (NVadsA10 v5 below NV36) expose one virtual GPU to Kubernetes: counted as 1.
_AZURE = [
    _azure("NC4as_T4_v3", "T4", 1, 0.526),
    _azure("NC8as_T4_v3", "T4", 1),
    _azure("NC16as_T4_v3", "T4", 1),
    _azure("NC64as_T4_v3", "T4", 4),
    _azure("NC6s_v3", "V100", 1),
    _azure("NC12s_v3", "V100", 2),
    _azure("NC24s_v3", "V100", 4),
    _azure("NC24rs_v3", "V100", 4),
    _azure("ND40rs_v2", "V100", 8),
    _azure("NC24ads_A100_v4", "A100-80GB", 1, 3.673),
    _azure("NC48ads_A100_v4", "A100-80GB", 2),
    _azure("NC96ads_A100_v4", "A100-80GB", 4),
    _azure("ND96asr_v4", "A100-40GB", 8),
    _azure("ND96amsr_A100_v4", "A100-80GB", 8, 32.77),
    _azure("NC40ads_H100_v5", "H100-80GB", 1),
    _azure("NC80adis_H100_v5", "H100-80GB", 2),
    _azure("ND96isr_H100_v5", "H100-80GB", 8, 98.32),
    _azure("ND96isr_H200_v5", "H200-141GB", 8),
    _azure("ND128isr_NDR_GB200_v6", "GB200", 4),
    _azure("NV6ads_A10_v5", "A10", 1),
    _azure("NV12ads_A10_v5", "A10", 1),
    _azure("NV18ads_A10_v5", "A10", 1),
    _azure("NV36ads_A10_v5", "A10", 1),
    _azure("NV36adms_A10_v5", "A10", 1),
    _azure("NV72ads_A10_v5", "A10", 2),
    _azure("NV12s_v3", "M60", 1),
    _azure("NV24s_v3", "M60", 2),
    _azure("NV48s_v3", "M60", 4),
]

INSTANCE_TYPES: dict[str, InstanceType] = {it.name: it for it in (*_AWS, *_GCP, *_AZURE)}

# GKE accelerator label values (cloud.google.com/gke-accelerator).
_GKE_ACCELERATORS = {
    "nvidia-tesla-t4": "T4",
    "nvidia-tesla-v100": "V100",
    "nvidia-tesla-p100": "P100",
    "nvidia-tesla-p4": "P4",
    "nvidia-tesla-a100": "A100-40GB",
    "nvidia-a100-80gb": "A100-80GB",
    "nvidia-l4": "L4",
    "nvidia-h100-80gb": "H100-80GB",
    "nvidia-h100-mega-80gb": "H100-80GB",
    "nvidia-h200-141gb": "H200-141GB",
    "nvidia-b200": "B200",
    "nvidia-gb200": "GB200",
    "nvidia-rtx-pro-6000": "RTX-PRO-6000",
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
    "b200": "B200",
    "b300": "B300",
    "gb200": "GB200",
    "rtx-pro-6000": "RTX-PRO-6000",
}

# GPU Feature Discovery product names (NVML name, spaces -> '-'), matched by family pattern,
# most specific first (GB200 before B200, L40S before L40, A10G before A10).
_PRODUCT_PATTERNS: list[tuple[re.Pattern[str], str | None]] = [
    (re.compile(r"GH200"), None),  # Grace Hopper superchip: not an H200, not in the catalog
    (re.compile(r"GB300"), "GB300"),
    (re.compile(r"(^|-)B300($|-)"), "B300"),
    (re.compile(r"GB200"), "GB200"),
    (re.compile(r"(^|-)B200($|-)"), "B200"),
    (re.compile(r"H200"), "H200-141GB"),
    (re.compile(r"H100"), "H100-80GB"),
    (re.compile(r"A100.*80GB"), "A100-80GB"),
    (re.compile(r"A100"), "A100-40GB"),
    (re.compile(r"RTX-PRO-6000"), "RTX-PRO-6000"),
    (re.compile(r"RTX-6000-ADA"), "RTX-6000-Ada"),
    (re.compile(r"L40S"), "L40S"),
    (re.compile(r"(^|-)L40($|-)"), "L40"),
    (re.compile(r"(^|-)L4($|-)"), "L4"),
    (re.compile(r"A10G"), "A10G"),
    (re.compile(r"(^|-)A10($|-)"), "A10"),
    (re.compile(r"(^|-)A16($|-)"), "A16"),
    (re.compile(r"T4($|-)"), "T4"),
    (re.compile(r"V100"), "V100"),
    (re.compile(r"P100"), "P100"),
    (re.compile(r"(^|-)P4($|-)"), "P4"),
    (re.compile(r"M60"), "M60"),
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
