"""Pure parsing of the kubelet's pod resources into GPU allocations (no I/O, no gRPC).

The kubelet reports, per container, the device ids each device plugin handed out, as the
plugin spelled them. GPU device plugins spell them in a few ways, all handled here:

| id | plugin | meaning |
|---|---|---|
| `GPU-8f2c...` | NVIDIA k8s-device-plugin (uuid strategy) | a whole GPU by UUID |
| `MIG-5f4e...` | NVIDIA k8s-device-plugin, `nvidia.com/mig-*` | a MIG device by UUID |
| `MIG-GPU-8f2c.../1/0` | same, drivers before R470 | MIG device: parent, GI, CI |
| `nvidia0` | GKE's device plugin | a whole GPU by /dev/nvidiaN minor |
| `0`, `0:1` | NVIDIA k8s-device-plugin (index strategy) | GPU 0; MIG device 1 of GPU 0 |
| `...::3`, `.../vgpu3` | time-slicing / MPS replicas | replica 3 of the id before it |

Anything else (another vendor's resource, a malformed id) is ignored, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from node_exporter_ml.snapshot import DataKey

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
# NVIDIA's device plugin renames shared (time-sliced or MPS) resources to `<name>.shared`
# when `renameByDefault` is set; they are still whole GPUs or MIG devices.
SHARED_SUFFIX = ".shared"

_REPLICA = re.compile(r"^(?P<id>.+?)(?:::(?P<colon>\d+)|/vgpu(?P<vgpu>\d+))$")
_UUID_BODY = r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
_GPU_UUID = re.compile(rf"^GPU-{_UUID_BODY}$")
_MIG_UUID = re.compile(rf"^MIG-{_UUID_BODY}$")
_LEGACY_MIG = re.compile(rf"^MIG-(?P<gpu>GPU-{_UUID_BODY})/(?P<gi>\d+)/(?P<ci>\d+)$")
_MINOR = re.compile(r"^nvidia(?P<n>\d+)$")
_INDEX = re.compile(r"^(?P<n>\d+)(?::(?P<mig>\d+))?$")


@dataclass(frozen=True, slots=True)
class DeviceId:
    """One GPU device id as a device plugin reported it, taken apart.

    Exactly one of `gpu_uuid`, `mig_uuid`, `minor`, `index` names the device (a legacy
    MIG id sets `gpu_uuid` to its parent with `gpu_instance`/`compute_instance`).
    """

    raw: str
    gpu_uuid: str | None = None
    mig_uuid: str | None = None
    minor: int | None = None
    index: int | None = None
    mig_index: int | None = None
    gpu_instance: int | None = None
    compute_instance: int | None = None
    replica: int | None = None

    @property
    def is_mig(self) -> bool:
        """True when the id names a MIG device, not a whole GPU."""
        return (
            self.mig_uuid is not None or self.mig_index is not None or self.gpu_instance is not None
        )


@dataclass(frozen=True, slots=True)
class GpuAllocation:
    """One GPU (or MIG device) the kubelet assigned to one container."""

    namespace: str
    pod: str
    container: str
    resource: str
    device: DeviceId


@dataclass(frozen=True, slots=True)
class ContainerDevices:
    """The device ids of one resource assigned to one container (plain copy of the proto)."""

    resource_name: str
    device_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContainerResources:
    """One container's assigned devices (plain copy of the proto)."""

    name: str
    devices: tuple[ContainerDevices, ...] = ()


@dataclass(frozen=True, slots=True)
class PodResources:
    """One pod's assigned devices (plain copy of the proto)."""

    namespace: str
    name: str
    containers: tuple[ContainerResources, ...] = ()


@dataclass(frozen=True, slots=True)
class PodResourcesData:
    """What the podresources collector returns: the GPU allocations of the last List.

    `listed_at` is the Unix time the kubelet answered; `pods` counts every pod it listed
    (with or without GPUs).
    """

    allocations: tuple[GpuAllocation, ...] = ()
    listed_at: float = 0.0
    pods: int = 0
    ignored: tuple[str, ...] = field(default=(), compare=False)


PODRESOURCES = DataKey("podresources", PodResourcesData)


def is_gpu_resource(resource: str) -> bool:
    """True for `nvidia.com/gpu`, `nvidia.com/mig-<profile>` and their `.shared` renames."""
    name = resource.removesuffix(SHARED_SUFFIX)
    if name == GPU_RESOURCE:
        return True
    return name.startswith(MIG_RESOURCE_PREFIX) and len(name) > len(MIG_RESOURCE_PREFIX)


def parse_device_id(raw: str) -> DeviceId | None:
    """Take a GPU device plugin's device id apart; None when it is none of the known forms.

    >>> parse_device_id("GPU-8f2c0a4e-1b2c-3d4e-5f60-718293a4b5c6::2").replica
    2
    >>> parse_device_id("nvidia1").minor
    1
    """
    text = raw.strip()
    replica: int | None = None
    m = _REPLICA.match(text)
    if m is not None:
        text = m["id"]
        replica = int(m["colon"] if m["colon"] is not None else m["vgpu"])
    if _GPU_UUID.match(text):
        return DeviceId(raw, gpu_uuid=text, replica=replica)
    if _MIG_UUID.match(text):
        return DeviceId(raw, mig_uuid=text, replica=replica)
    if legacy := _LEGACY_MIG.match(text):
        return DeviceId(
            raw,
            gpu_uuid=legacy["gpu"],
            gpu_instance=int(legacy["gi"]),
            compute_instance=int(legacy["ci"]),
            replica=replica,
        )
    if minor := _MINOR.match(text):
        return DeviceId(raw, minor=int(minor["n"]), replica=replica)
    if index := _INDEX.match(text):
        mig = index["mig"]
        return DeviceId(
            raw,
            index=int(index["n"]),
            mig_index=int(mig) if mig is not None else None,
            replica=replica,
        )
    return None


def parse_allocations(
    pods: Iterable[PodResources],
) -> tuple[tuple[GpuAllocation, ...], tuple[str, ...]]:
    """Every GPU allocation in the kubelet's pod resources, and the GPU ids it could not read.

    Returns:
        The allocations in kubelet order (one per container and device id, replicas kept)
        and the raw ids of GPU resources that matched no known form, for a debug log.
    """
    allocations: list[GpuAllocation] = []
    unknown: list[str] = []
    for pod in pods:
        if not pod.name or not pod.namespace:
            continue
        for container in pod.containers:
            for devices in container.devices:
                if not is_gpu_resource(devices.resource_name):
                    continue
                for raw in devices.device_ids:
                    device = parse_device_id(raw)
                    if device is None:
                        unknown.append(f"{devices.resource_name}={raw}")
                        continue
                    allocations.append(
                        GpuAllocation(
                            pod.namespace, pod.name, container.name, devices.resource_name, device
                        )
                    )
    return tuple(allocations), tuple(unknown)
