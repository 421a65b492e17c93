"""canonical_gpu_model: every node-label convention that names a GPU model, and their order."""

import pytest

from gpu_cost_pipeline.core.gpus import (
    GKE_ACCELERATOR_LABEL,
    KARPENTER_GPU_MEMORY_LABEL,
    KARPENTER_GPU_NAME_LABEL,
    PRODUCT_LABEL,
    canonical_gpu_model,
    model_from_product,
    strip_product_suffixes,
)

INSTANCE_TYPE = "node.kubernetes.io/instance-type"
BETA_INSTANCE_TYPE = "beta.kubernetes.io/instance-type"


@pytest.mark.parametrize(
    ("product", "expected"),
    [
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA-A100-80GB-PCIe", "A100-80GB"),
        ("NVIDIA-A100-SXM4-40GB", "A100-40GB"),
        ("A100-SXM4-40GB-MIG-1g.5gb", "A100-40GB"),
        ("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", "A100-80GB"),
        ("Tesla-T4", "T4"),
        ("Tesla-T4-SHARED", "T4"),
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),
        ("NVIDIA-H100-80GB-HBM3-MIG-3g.40gb", "H100-80GB"),
        ("NVIDIA-H200", "H200-141GB"),
        ("NVIDIA-L4", "L4"),
        ("NVIDIA-L4-SHARED", "L4"),
        ("NVIDIA-L40S", "L40S"),
        ("NVIDIA-A10G", "A10G"),
        ("Tesla-V100-SXM2-16GB", "V100"),
        ("NVIDIA-RTX-PRO-6000-Blackwell-Server-Edition", "RTX-PRO-6000"),
        ("NVIDIA-RTX-6000-Ada-Generation", "RTX-6000-Ada"),
        ("NVIDIA-L40", "L40"),
        ("NVIDIA-B200", "B200"),
        ("NVIDIA-GB200", "GB200"),
        ("NVIDIA-A10", "A10"),
        ("NVIDIA-A16", "A16"),
        ("NVIDIA-H100-NVL", "H100-80GB"),
    ],
)
def test_gfd_product_label(product: str, expected: str) -> None:
    assert canonical_gpu_model({PRODUCT_LABEL: product}) == expected


@pytest.mark.parametrize(
    "product",
    [
        "NVIDIA-GH200-480GB",  # Grace Hopper: not an H200
        "NVIDIA-A40",  # not A10 and not A100
        "Tesla-K80",
    ],
)
def test_unknown_product_is_unknown(product: str) -> None:
    assert model_from_product(product) is None
    assert canonical_gpu_model({PRODUCT_LABEL: product}) == "unknown"


def test_unknown_product_label_wins_over_weaker_known_labels() -> None:
    labels = {
        PRODUCT_LABEL: "NVIDIA-GH200-480GB",
        GKE_ACCELERATOR_LABEL: "nvidia-l4",
        KARPENTER_GPU_NAME_LABEL: "h100",
        INSTANCE_TYPE: "p5.48xlarge",
    }
    assert canonical_gpu_model(labels) == "unknown"


@pytest.mark.parametrize(
    ("accelerator", "expected"),
    [
        ("nvidia-tesla-t4", "T4"),
        ("nvidia-tesla-v100", "V100"),
        ("nvidia-tesla-a100", "A100-40GB"),
        ("nvidia-a100-80gb", "A100-80GB"),
        ("nvidia-l4", "L4"),
        ("nvidia-h100-80gb", "H100-80GB"),
        ("nvidia-h100-mega-80gb", "H100-80GB"),
        ("nvidia-h200-141gb", "H200-141GB"),
        ("NVIDIA-TESLA-T4", "T4"),
        ("nvidia-b200", "B200"),
        ("nvidia-tesla-k80", "unknown"),
    ],
)
def test_gke_accelerator_label(accelerator: str, expected: str) -> None:
    assert canonical_gpu_model({GKE_ACCELERATOR_LABEL: accelerator}) == expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({KARPENTER_GPU_NAME_LABEL: "t4"}, "T4"),
        ({KARPENTER_GPU_NAME_LABEL: "a10g"}, "A10G"),
        ({KARPENTER_GPU_NAME_LABEL: "l4"}, "L4"),
        ({KARPENTER_GPU_NAME_LABEL: "l40s"}, "L40S"),
        ({KARPENTER_GPU_NAME_LABEL: "H100"}, "H100-80GB"),
        ({KARPENTER_GPU_NAME_LABEL: "h200"}, "H200-141GB"),
        ({KARPENTER_GPU_NAME_LABEL: "a100", KARPENTER_GPU_MEMORY_LABEL: "81920"}, "A100-80GB"),
        ({KARPENTER_GPU_NAME_LABEL: "a100", KARPENTER_GPU_MEMORY_LABEL: "40960"}, "A100-40GB"),
        ({KARPENTER_GPU_NAME_LABEL: "a100"}, "A100-40GB"),
        ({KARPENTER_GPU_NAME_LABEL: "a100", KARPENTER_GPU_MEMORY_LABEL: "lots"}, "A100-40GB"),
        ({KARPENTER_GPU_NAME_LABEL: "b200"}, "B200"),
        ({KARPENTER_GPU_NAME_LABEL: "k80"}, "unknown"),
    ],
)
def test_karpenter_gpu_name(labels: dict[str, str], expected: str) -> None:
    assert canonical_gpu_model(labels) == expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({INSTANCE_TYPE: "p5.48xlarge"}, "H100-80GB"),
        ({INSTANCE_TYPE: "g5.xlarge"}, "A10G"),
        ({INSTANCE_TYPE: "a2-ultragpu-1g"}, "A100-80GB"),
        ({INSTANCE_TYPE: "Standard_NC4as_T4_v3"}, "T4"),
        ({BETA_INSTANCE_TYPE: "p4d.24xlarge"}, "A100-40GB"),
        ({INSTANCE_TYPE: "m5.large"}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_instance_type_fallback(labels: dict[str, str], expected: str) -> None:
    assert canonical_gpu_model(labels) == expected


def test_label_order_of_trust() -> None:
    # product > GKE accelerator > Karpenter name > instance type
    labels = {
        PRODUCT_LABEL: "Tesla-T4",
        GKE_ACCELERATOR_LABEL: "nvidia-l4",
        KARPENTER_GPU_NAME_LABEL: "a10g",
        INSTANCE_TYPE: "p5.48xlarge",
    }
    assert canonical_gpu_model(labels) == "T4"
    del labels[PRODUCT_LABEL]
    assert canonical_gpu_model(labels) == "L4"
    del labels[GKE_ACCELERATOR_LABEL]
    assert canonical_gpu_model(labels) == "A10G"
    del labels[KARPENTER_GPU_NAME_LABEL]
    assert canonical_gpu_model(labels) == "H100-80GB"


def test_empty_product_label_falls_through() -> None:
    assert canonical_gpu_model({PRODUCT_LABEL: "", INSTANCE_TYPE: "g4dn.xlarge"}) == "T4"


def test_strip_product_suffixes() -> None:
    assert strip_product_suffixes("NVIDIA-L4-SHARED") == "NVIDIA-L4"
    assert strip_product_suffixes("A100-SXM4-40GB-MIG-1g.5gb") == "A100-SXM4-40GB"
    assert strip_product_suffixes("A100-SXM4-40GB-MIG-1g.5gb-SHARED") == "A100-SXM4-40GB"
    assert strip_product_suffixes("NVIDIA-H100-80GB-HBM3") == "NVIDIA-H100-80GB-HBM3"


@pytest.mark.parametrize(
    ("instance_type", "model", "count"),
    [
        ("p5.48xlarge", "H100-80GB", 8),
        ("p5e.48xlarge", "H200-141GB", 8),
        ("p6-b200.48xlarge", "B200", 8),
        ("g6e.12xlarge", "L40S", 4),
        ("g5.48xlarge", "A10G", 8),
        ("gr6.4xlarge", "L4", 1),
        ("a3-megagpu-8g", "H100-80GB", 8),
        ("a2-ultragpu-4g", "A100-80GB", 4),
        ("g2-standard-24", "L4", 2),
        ("Standard_NC40ads_H100_v5", "H100-80GB", 1),
        ("Standard_NV36ads_A10_v5", "A10", 1),
        ("Standard_ND96isr_H200_v5", "H200-141GB", 8),
    ],
)
def test_nodes_labelled_only_with_an_instance_type_get_model_and_count(
    instance_type: str, model: str, count: int
) -> None:
    from gpu_cost_pipeline.core.gpus import INSTANCE_TYPES

    assert canonical_gpu_model({INSTANCE_TYPE: instance_type}) == model
    assert INSTANCE_TYPES[instance_type].gpu_count == count
