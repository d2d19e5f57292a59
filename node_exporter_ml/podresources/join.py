"""Pure correlation of kubelet GPU allocations with the GPUs and processes NVML sees.

Two answers per tick:

- every allocation, idle or busy, as (gpu index, uuid, namespace, pod, container);
- every process on a GPU whose pod is not one the GPU is allocated to (someone using a
  GPU outside the scheduler).

How a device id finds its GPU: `GPU-` UUIDs by UUID; `nvidiaN` by minor number when the
NVML data carries one, else by index (the two agree unless the driver numbered
/dev/nvidiaN differently from PCI order); plain `N` and `N:M` by index; `MIG-` UUIDs by the
MIG devices the NVML data lists under their parent GPU, when it lists them; legacy
`MIG-GPU-<uuid>/<gi>/<ci>` ids carry their parent. An id that finds no GPU keeps what it
says about itself (`uuid` = its UUID, `gpu` = "" unless it was an index).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from node_exporter_ml.podresources.devices import DeviceId, GpuAllocation
from node_exporter_ml.snapshot import GpuSample

WorkloadLabels = Callable[[int], Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class AllocationSeries:
    """One `nodeml_gpu_allocation_info` series."""

    gpu: str
    uuid: str
    namespace: str
    pod: str
    container: str
    gpu_instance: int | None = None
    compute_instance: int | None = None

    def labels(self) -> dict[str, str]:
        """The series' labels (`gpu_instance`/`compute_instance` only on MIG devices)."""
        out = {
            "gpu": self.gpu,
            "uuid": self.uuid,
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
        }
        if self.gpu_instance is not None:
            out["gpu_instance"] = str(self.gpu_instance)
        if self.compute_instance is not None:
            out["compute_instance"] = str(self.compute_instance)
        return out


@dataclass(frozen=True, slots=True)
class UnallocatedUse:
    """One `nodeml_gpu_unallocated_use` series: `pid` uses GPU `gpu` without an allocation."""

    gpu: str
    uuid: str
    pid: int

    def labels(self) -> dict[str, str]:
        """The series' labels."""
        return {"gpu": self.gpu, "uuid": self.uuid, "pid": str(self.pid)}


@dataclass(frozen=True, slots=True)
class AllocationJoin:
    """The outcome of one join."""

    allocations: tuple[AllocationSeries, ...] = ()
    unallocated: tuple[UnallocatedUse, ...] = ()


@dataclass(frozen=True, slots=True)
class _Target:
    gpu: GpuSample | None
    uuid: str
    index: int | None = None
    gpu_instance: int | None = None
    compute_instance: int | None = None
    mig: bool = False


class _GpuIndex:
    """Lookups from device-plugin ids to the GPUs of one NVML snapshot."""

    def __init__(self, gpus: Sequence[GpuSample]) -> None:
        self.by_uuid = {g.uuid: g for g in gpus}
        self.by_index = {g.index: g for g in gpus}
        # Neither field is in the core contract yet: read them when the nvml collector
        # provides them (`minor_number` int, `mig_devices` with uuid/gpu_instance/
        # compute_instance), and fall back to index matching and UUID-only matching.
        self.by_minor: dict[int, GpuSample] = {}
        self.mig: dict[str, tuple[GpuSample, int | None, int | None]] = {}
        for g in gpus:
            minor = getattr(g, "minor_number", None)
            if isinstance(minor, int):
                self.by_minor[minor] = g
            for m in getattr(g, "mig_devices", ()) or ():
                uuid = getattr(m, "uuid", "")
                if isinstance(uuid, str) and uuid:
                    gi = getattr(m, "gpu_instance", None)
                    ci = getattr(m, "compute_instance", None)
                    self.mig[uuid] = (
                        g,
                        gi if isinstance(gi, int) else None,
                        ci if isinstance(ci, int) else None,
                    )

    def resolve(self, device: DeviceId) -> _Target:
        if device.mig_uuid is not None:
            found = self.mig.get(device.mig_uuid)
            if found is None:
                return _Target(None, device.mig_uuid, mig=True)
            gpu, gi, ci = found
            return _Target(gpu, gpu.uuid, gpu.index, gi, ci, mig=True)
        if device.gpu_uuid is not None:
            by_uuid = self.by_uuid.get(device.gpu_uuid)
            return _Target(
                by_uuid,
                device.gpu_uuid,
                by_uuid.index if by_uuid is not None else None,
                device.gpu_instance,
                device.compute_instance,
                mig=device.is_mig,
            )
        if device.minor is not None:
            by_minor = (self.by_minor if self.by_minor else self.by_index).get(device.minor)
            if by_minor is None:
                return _Target(None, "")
            return _Target(by_minor, by_minor.uuid, by_minor.index)
        if device.index is not None:
            by_index = self.by_index.get(device.index)
            return _Target(
                by_index,
                by_index.uuid if by_index is not None else "",
                device.index,
                mig=device.is_mig,
            )
        return _Target(None, "")  # pragma: no cover - parse_device_id sets one of the above


@dataclass
class _Holders:
    """The pods allowed on one GPU: whole-GPU holders and MIG holders by (gi, ci)."""

    whole: set[tuple[str, str]]
    mig: set[tuple[tuple[str, str], int | None, int | None]]

    def allows(self, pod: tuple[str, str], gi: int | None, ci: int | None) -> bool:
        if pod in self.whole:
            return True
        for holder, hgi, hci in self.mig:
            if holder != pod:
                continue
            # A MIG allocation whose instance we could not resolve, or a process whose
            # instance NVML did not report, counts as allowed: flag only what we can prove.
            if hgi is None or gi is None:
                return True
            if hgi == gi and (hci is None or ci is None or hci == ci):
                return True
        return False


def _pod_of(labels: Mapping[str, str]) -> tuple[str, str] | None:
    pod = labels.get("pod")
    if not pod:
        return None
    return labels.get("namespace", ""), pod


MPS_SERVER_COMM = "nvidia-cuda-mps"  # comm of nvidia-cuda-mps-server, cut to 15 characters


def join_allocations(
    allocations: Iterable[GpuAllocation],
    gpus: Sequence[GpuSample],
    workload_labels: WorkloadLabels,
) -> AllocationJoin:
    """Allocation series for every allocation, and the processes using a GPU unallocated.

    Args:
        allocations: the kubelet's GPU allocations.
        gpus: the GPUs NVML sees now (empty when the nvml collector has no data: then
            allocations keep the ids the kubelet gave and nothing is flagged).
        workload_labels: the workload labels of a pid (`Snapshot.workload_labels`).

    A process counts as unallocated use when its workload is a pod other than the ones
    the GPU (or its MIG instance) is allocated to, or a workload outside any pod (a
    systemd unit). Only what can be proven is flagged: not a process with no workload
    labels at all, nor one of a pod holding a device that found no GPU (a MIG UUID when
    the NVML data lists no MIG devices, say), nor the MPS server (its clients are the
    processes that count).
    """
    index = _GpuIndex(gpus)
    series: dict[AllocationSeries, None] = {}
    holders: dict[str, _Holders] = {g.uuid: _Holders(set(), set()) for g in gpus}
    unresolved: set[tuple[str, str]] = set()  # pods holding a device we could not place
    for alloc in allocations:
        target = index.resolve(alloc.device)
        series[
            AllocationSeries(
                gpu=str(target.index) if target.index is not None else "",
                uuid=target.uuid,
                namespace=alloc.namespace,
                pod=alloc.pod,
                container=alloc.container,
                gpu_instance=target.gpu_instance,
                compute_instance=target.compute_instance,
            )
        ] = None
        holder = (alloc.namespace, alloc.pod)
        if target.gpu is None:
            unresolved.add(holder)
        else:
            held = holders[target.gpu.uuid]
            if target.mig:
                held.mig.add((holder, target.gpu_instance, target.compute_instance))
            else:
                held.whole.add(holder)

    flagged: dict[UnallocatedUse, None] = {}
    for gpu in gpus:
        held = holders[gpu.uuid]
        for proc in gpu.processes:
            if proc.comm.startswith(MPS_SERVER_COMM):
                continue  # the MPS server runs in the device plugin's pod, which holds no GPU
            labels = workload_labels(proc.pid)
            if not labels:
                continue
            pod = _pod_of(labels)
            if pod is not None and (
                pod in unresolved or held.allows(pod, proc.gpu_instance, proc.compute_instance)
            ):
                continue
            flagged[UnallocatedUse(str(gpu.index), gpu.uuid, proc.pid)] = None
    return AllocationJoin(tuple(series), tuple(flagged))
