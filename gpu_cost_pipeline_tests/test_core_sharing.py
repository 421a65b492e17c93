"""pod_gpu_share: physical GPUs held under whole GPUs, MIG, time-slicing and MPS."""

import pytest

from gpu_cost_pipeline.core.sharing import (
    MigConvention,
    MigProfile,
    NodeSharing,
    SharingMode,
    is_gpu_resource,
    mig_profile_of_product,
    mig_profile_of_resource,
    pod_gpu_share,
)

COMPUTE = MigConvention.COMPUTE
MEMORY = MigConvention.MEMORY


def test_whole_gpus_are_exclusive() -> None:
    node = NodeSharing(gpu_count=8, gpu_memory_gb=80)
    assert pod_gpu_share("nvidia.com/gpu", 1, node, COMPUTE) == (1.0, SharingMode.EXCLUSIVE)
    assert pod_gpu_share("nvidia.com/gpu", 4, node, COMPUTE) == (4.0, SharingMode.EXCLUSIVE)


def test_time_slicing_divides_by_replicas() -> None:
    node = NodeSharing(gpu_count=1, gpu_memory_gb=24, sharing_strategy="time-slicing", replicas=4)
    assert pod_gpu_share("nvidia.com/gpu", 1, node, COMPUTE) == (0.25, SharingMode.TIME_SLICING)
    assert pod_gpu_share("nvidia.com/gpu", 2, node, COMPUTE) == (0.5, SharingMode.TIME_SLICING)


def test_time_slicing_with_one_replica_is_exclusive() -> None:
    node = NodeSharing(gpu_count=1, gpu_memory_gb=24, sharing_strategy="time-slicing", replicas=1)
    assert pod_gpu_share("nvidia.com/gpu", 1, node, COMPUTE) == (1.0, SharingMode.EXCLUSIVE)


def test_mps_divides_by_replicas() -> None:
    node = NodeSharing(gpu_count=2, gpu_memory_gb=80, sharing_strategy="mps", replicas=8)
    assert pod_gpu_share("nvidia.com/gpu", 1, node, COMPUTE) == (0.125, SharingMode.MPS)


def test_shared_resource() -> None:
    time_sliced = NodeSharing(1, 24, sharing_strategy="time-slicing", replicas=4)
    assert pod_gpu_share("nvidia.com/gpu.shared", 1, time_sliced, COMPUTE) == (
        0.25,
        SharingMode.TIME_SLICING,
    )
    mps = NodeSharing(1, 24, sharing_strategy="mps", replicas=5)
    assert pod_gpu_share("nvidia.com/gpu.shared", 2, mps, COMPUTE) == (0.4, SharingMode.MPS)


@pytest.mark.parametrize(
    ("resource", "amount", "memory_gb", "expected"),
    [
        ("nvidia.com/mig-1g.5gb", 1, 40, 1 / 7),
        ("nvidia.com/mig-2g.10gb", 1, 40, 2 / 7),
        ("nvidia.com/mig-3g.20gb", 1, 40, 3 / 7),
        ("nvidia.com/mig-3g.20gb", 2, 40, 6 / 7),
        ("nvidia.com/mig-1g.10gb", 1, 80, 1 / 7),
        ("nvidia.com/mig-7g.80gb", 1, 80, 1.0),
    ],
)
def test_mig_mixed_compute_convention(
    resource: str, amount: int, memory_gb: int, expected: float
) -> None:
    node = NodeSharing(gpu_count=8, gpu_memory_gb=memory_gb)
    share, mode = pod_gpu_share(resource, amount, node, COMPUTE)
    assert share == pytest.approx(expected, rel=1e-12)
    assert mode is SharingMode.MIG


@pytest.mark.parametrize(
    ("resource", "memory_gb", "expected"),
    [
        ("nvidia.com/mig-1g.10gb", 80, 1 / 8),
        ("nvidia.com/mig-1g.20gb", 80, 2 / 8),
        ("nvidia.com/mig-3g.40gb", 80, 0.5),
        ("nvidia.com/mig-7g.80gb", 80, 1.0),
        ("nvidia.com/mig-1g.5gb", 40, 1 / 8),
        ("nvidia.com/mig-3g.20gb", 40, 0.5),
        # GPU memory unknown: falls back to compute slices
        ("nvidia.com/mig-1g.5gb", 0, 1 / 7),
    ],
)
def test_mig_memory_convention(resource: str, memory_gb: int, expected: float) -> None:
    node = NodeSharing(gpu_count=8, gpu_memory_gb=memory_gb)
    share, mode = pod_gpu_share(resource, 1, node, MEMORY)
    assert share == pytest.approx(expected, rel=1e-12)
    assert mode is SharingMode.MIG


def test_mig_single_strategy_whole_gpu_request_is_a_slice() -> None:
    node = NodeSharing(gpu_count=8, gpu_memory_gb=40, mig_single_profile=MigProfile(1, 5))
    share, mode = pod_gpu_share("nvidia.com/gpu", 1, node, COMPUTE)
    assert share == pytest.approx(1 / 7, rel=1e-12)
    assert mode is SharingMode.MIG
    share, _ = pod_gpu_share("nvidia.com/gpu", 3, node, COMPUTE)
    assert share == pytest.approx(3 / 7, rel=1e-12)


def test_mig_single_strategy_3g() -> None:
    node = NodeSharing(gpu_count=8, gpu_memory_gb=80, mig_single_profile=MigProfile(3, 40))
    assert pod_gpu_share("nvidia.com/gpu", 1, node, COMPUTE)[0] == pytest.approx(3 / 7)
    assert pod_gpu_share("nvidia.com/gpu", 1, node, MEMORY)[0] == pytest.approx(0.5)


def test_mig_slice_on_time_sliced_node_divides_by_replicas() -> None:
    node = NodeSharing(8, 40, sharing_strategy="time-slicing", replicas=2)
    share, mode = pod_gpu_share("nvidia.com/mig-1g.5gb", 1, node, COMPUTE)
    assert share == pytest.approx(1 / 14, rel=1e-12)
    assert mode is SharingMode.MIG


@pytest.mark.parametrize(
    ("profile", "memory_gb", "expected"),
    [
        (MigProfile(1, 10), 80, 7),
        (MigProfile(1, 20), 80, 4),
        (MigProfile(2, 20), 80, 3),
        (MigProfile(3, 40), 80, 2),
        (MigProfile(4, 40), 80, 1),
        (MigProfile(7, 80), 80, 1),
        (MigProfile(1, 5), 40, 7),
        (MigProfile(2, 10), 40, 3),
        (MigProfile(3, 20), 40, 2),
        (MigProfile(1, 5), 0, 7),  # memory unknown: by compute slices only
        (MigProfile(2, 10), 0, 3),
    ],
)
def test_instances_per_gpu(profile: MigProfile, memory_gb: int, expected: int) -> None:
    assert profile.instances_per_gpu(memory_gb) == expected


@pytest.mark.parametrize("resource", ["cpu", "memory", "amd.com/gpu", "nvidia.com/mig-1g"])
def test_non_gpu_resource_raises(resource: str) -> None:
    with pytest.raises(ValueError, match="not a GPU resource"):
        pod_gpu_share(resource, 1, NodeSharing(1, 24), COMPUTE)


def test_is_gpu_resource() -> None:
    assert is_gpu_resource("nvidia.com/gpu")
    assert is_gpu_resource("nvidia.com/gpu.shared")
    assert is_gpu_resource("nvidia.com/mig-3g.40gb")
    assert not is_gpu_resource("cpu")
    assert not is_gpu_resource("nvidia.com/gpu.count")


def test_mig_profile_parsing() -> None:
    assert mig_profile_of_resource("nvidia.com/mig-3g.40gb") == MigProfile(3, 40)
    assert mig_profile_of_resource("nvidia.com/gpu") is None
    assert mig_profile_of_product("A100-SXM4-40GB-MIG-1g.5gb") == MigProfile(1, 5)
    assert mig_profile_of_product("NVIDIA-H100-80GB-HBM3-MIG-2g.20gb-SHARED") == MigProfile(2, 20)
    assert mig_profile_of_product("NVIDIA-A100-SXM4-40GB") is None
