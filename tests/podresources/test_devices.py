"""The pure parser: GPU device-plugin ids and the resources they come under."""

from __future__ import annotations

import pytest

from node_exporter_ml.podresources.devices import (
    ContainerDevices,
    ContainerResources,
    DeviceId,
    PodResources,
    is_gpu_resource,
    parse_allocations,
    parse_device_id,
)

U0 = "GPU-8f2c0a4e-1b2c-3d4e-5f60-718293a4b5c6"
M0 = "MIG-5f4e3d2c-1b0a-4f9e-8d7c-6b5a49382716"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(U0, DeviceId(U0, gpu_uuid=U0), id="GPU uuid"),
        pytest.param(f"{U0}::3", DeviceId(f"{U0}::3", gpu_uuid=U0, replica=3), id="uuid replica"),
        pytest.param(M0, DeviceId(M0, mig_uuid=M0), id="MIG uuid"),
        pytest.param(f"{M0}::0", DeviceId(f"{M0}::0", mig_uuid=M0, replica=0), id="MIG replica"),
        pytest.param(
            f"MIG-{U0}/7/0",
            DeviceId(f"MIG-{U0}/7/0", gpu_uuid=U0, gpu_instance=7, compute_instance=0),
            id="legacy MIG id (R450-R465)",
        ),
        pytest.param("nvidia0", DeviceId("nvidia0", minor=0), id="GKE nvidiaN"),
        pytest.param("nvidia12", DeviceId("nvidia12", minor=12), id="GKE two digits"),
        pytest.param(
            "nvidia1/vgpu4", DeviceId("nvidia1/vgpu4", minor=1, replica=4), id="GKE time-sharing"
        ),
        pytest.param("3", DeviceId("3", index=3), id="index strategy"),
        pytest.param("0:2", DeviceId("0:2", index=0, mig_index=2), id="index strategy MIG"),
        pytest.param("1::5", DeviceId("1::5", index=1, replica=5), id="index replica"),
    ],
)
def test_parse_device_id(raw, expected):
    assert parse_device_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("GPU-", id="uuid prefix only"),
        pytest.param("GPU-8f2c0a4e", id="truncated uuid"),
        pytest.param("GPU-zz2c0a4e-1b2c-3d4e-5f60-718293a4b5c6", id="not hex"),
        pytest.param("nvidia", id="nvidia without number"),
        pytest.param("nvidiactl", id="control device"),
        pytest.param("nvidia0/gi1", id="unknown suffix"),
        pytest.param(f"{U0}::", id="empty replica"),
        pytest.param(f"{U0}::x", id="bad replica"),
        pytest.param("-1", id="negative index"),
        pytest.param("0000:3b:00.0", id="PCI address"),
    ],
)
def test_unknown_ids_are_ignored(raw):
    assert parse_device_id(raw) is None


@pytest.mark.parametrize(
    ("resource", "gpu"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/gpu.shared", True),
        ("nvidia.com/mig-1g.10gb", True),
        ("nvidia.com/mig-3g.40gb.shared", True),
        ("nvidia.com/mig-", False),
        ("nvidia.com/gpus", False),
        ("amd.com/gpu", False),
        ("example.com/gpu", False),
        ("", False),
    ],
)
def test_is_gpu_resource(resource, gpu):
    assert is_gpu_resource(resource) is gpu


def test_parse_allocations_keeps_gpus_and_drops_the_rest():
    pods = [
        PodResources(
            "ml",
            "llm-0",
            (
                ContainerResources(
                    "server",
                    (
                        ContainerDevices("nvidia.com/gpu", (U0, "garbage", "nvidia1")),
                        ContainerDevices("example.com/fpga", ("fpga0",)),
                        ContainerDevices("amd.com/gpu", ("0000:3b:00.0",)),
                    ),
                ),
                ContainerResources("sidecar"),
            ),
        ),
        PodResources(
            "ml",
            "mig-job",
            (ContainerResources("w", (ContainerDevices("nvidia.com/mig-1g.10gb", (M0,)),)),),
        ),
        PodResources(
            "", "nameless", (ContainerResources("c", (ContainerDevices("nvidia.com/gpu", (U0,)),)),)
        ),
    ]
    allocations, unknown = parse_allocations(pods)
    assert [(a.namespace, a.pod, a.container, a.resource, a.device.raw) for a in allocations] == [
        ("ml", "llm-0", "server", "nvidia.com/gpu", U0),
        ("ml", "llm-0", "server", "nvidia.com/gpu", "nvidia1"),
        ("ml", "mig-job", "w", "nvidia.com/mig-1g.10gb", M0),
    ]
    assert unknown == ("nvidia.com/gpu=garbage",)
