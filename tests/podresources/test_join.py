"""The pure join: allocations x NVML GPUs x process workloads."""

from __future__ import annotations

from dataclasses import dataclass

from node_exporter_ml.podresources.devices import GpuAllocation, parse_device_id
from node_exporter_ml.podresources.join import (
    AllocationSeries,
    UnallocatedUse,
    join_allocations,
)
from node_exporter_ml.snapshot import GpuProcessSample, GpuSample

U0 = "GPU-8f2c0a4e-1b2c-3d4e-5f60-718293a4b5c6"
U1 = "GPU-3b7a1c2d-4e5f-6071-8293-a4b5c6d7e8f9"
M0 = "MIG-5f4e3d2c-1b0a-4f9e-8d7c-6b5a49382716"
M1 = "MIG-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def alloc(device_id, namespace="ml", pod="llm-0", container="server", resource="nvidia.com/gpu"):
    device = parse_device_id(device_id)
    assert device is not None
    return GpuAllocation(namespace, pod, container, resource, device)


def workloads(mapping):
    return lambda pid: mapping.get(pid, {})


POD_A = {"namespace": "ml", "pod": "llm-0", "container": "server"}
POD_B = {"namespace": "research", "pod": "notebook", "container": "jupyter"}


def test_idle_allocated_gpu_shows_its_pod():
    gpus = [GpuSample(0, U0), GpuSample(1, U1)]
    joined = join_allocations([alloc(U1, "research", "batch-7", "train")], gpus, workloads({}))
    assert joined.allocations == (AllocationSeries("1", U1, "research", "batch-7", "train"),)
    assert joined.unallocated == ()


def test_process_of_another_pod_is_flagged_the_allocated_one_is_not():
    gpus = [
        GpuSample(0, U0, processes=(GpuProcessSample(100), GpuProcessSample(200))),
        GpuSample(1, U1, processes=(GpuProcessSample(300),)),
    ]
    joined = join_allocations([alloc(U0)], gpus, workloads({100: POD_A, 200: POD_B, 300: POD_A}))
    # 200 is in a pod that holds no GPU; 300 is llm-0's, but on a GPU it was not given.
    assert joined.unallocated == (UnallocatedUse("0", U0, 200), UnallocatedUse("1", U1, 300))


def test_host_process_is_flagged_unattributed_is_not():
    gpus = [GpuSample(0, U0, processes=(GpuProcessSample(10), GpuProcessSample(11)))]
    joined = join_allocations([alloc(U0)], gpus, workloads({10: {"unit": "train.service"}}))
    assert joined.unallocated == (UnallocatedUse("0", U0, 10),)


def test_mps_server_is_not_flagged_its_unallocated_clients_are():
    # Under MPS the server runs in the device plugin's daemon pod, which holds no GPU.
    server = GpuProcessSample(50, comm="nvidia-cuda-mps")
    clients = (GpuProcessSample(100, mps_client=True), GpuProcessSample(200, mps_client=True))
    gpus = [GpuSample(0, U0, processes=(server, *clients))]
    mps_pod = {"namespace": "gpu-operator", "pod": "mps-control-daemon", "container": "mps"}
    joined = join_allocations([alloc(U0)], gpus, workloads({50: mps_pod, 100: POD_A, 200: POD_B}))
    assert joined.unallocated == (UnallocatedUse("0", U0, 200),)


def test_gpu_allocated_to_nobody_used_by_a_pod_is_flagged():
    gpus = [GpuSample(0, U0, processes=(GpuProcessSample(100),))]
    joined = join_allocations([], gpus, workloads({100: POD_A}))
    assert joined.allocations == ()
    assert joined.unallocated == (UnallocatedUse("0", U0, 100),)


def test_time_sliced_replicas_one_series_per_container():
    gpus = [GpuSample(0, U0, processes=(GpuProcessSample(100), GpuProcessSample(200)))]
    joined = join_allocations(
        [
            alloc(f"{U0}::0"),
            alloc(f"{U0}::3"),  # the same container got two replicas of one GPU
            alloc(f"{U0}::1", "research", "notebook", "jupyter"),
        ],
        gpus,
        workloads({100: POD_A, 200: POD_B}),
    )
    assert joined.allocations == (
        AllocationSeries("0", U0, "ml", "llm-0", "server"),
        AllocationSeries("0", U0, "research", "notebook", "jupyter"),
    )
    assert joined.unallocated == ()


def test_nvidia_n_matches_by_index_without_minor_numbers():
    gpus = [GpuSample(0, U0), GpuSample(1, U1)]
    joined = join_allocations([alloc("nvidia1"), alloc("nvidia1/vgpu2")], gpus, workloads({}))
    assert joined.allocations == (AllocationSeries("1", U1, "ml", "llm-0", "server"),)


@dataclass(frozen=True)
class Mig:
    gpu_instance: int
    compute_instance: int
    uuid: str


@dataclass(frozen=True)
class NextGpu:
    """A GPU sample as the nvml collector may give it: minor number and MIG devices."""

    index: int
    uuid: str
    minor_number: int | None = None
    mig_devices: tuple[Mig, ...] = ()
    processes: tuple[GpuProcessSample, ...] = ()


def test_nvidia_n_matches_by_minor_number_when_nvml_gives_one():
    gpus = [NextGpu(0, U0, minor_number=1), NextGpu(1, U1, minor_number=0)]
    joined = join_allocations([alloc("nvidia0")], gpus, workloads({}))
    assert joined.allocations == (AllocationSeries("1", U1, "ml", "llm-0", "server"),)


def test_index_strategy_ids():
    gpus = [GpuSample(0, U0), GpuSample(1, U1)]
    joined = join_allocations([alloc("1"), alloc("0:2")], gpus, workloads({}))
    assert joined.allocations == (
        AllocationSeries("1", U1, "ml", "llm-0", "server"),
        AllocationSeries("0", U0, "ml", "llm-0", "server"),
    )


def test_ids_nvml_does_not_see_keep_what_they_say():
    joined = join_allocations(
        [alloc(U1), alloc("nvidia3"), alloc("2"), alloc(M0, resource="nvidia.com/mig-1g.10gb")],
        [GpuSample(0, U0)],
        workloads({}),
    )
    assert [(s.gpu, s.uuid) for s in joined.allocations] == [
        ("", U1),
        ("", ""),
        ("2", ""),
        ("", M0),
    ]


def test_without_nvml_allocations_are_still_published():
    joined = join_allocations([alloc(U0)], [], workloads({100: POD_B}))
    assert joined.allocations == (AllocationSeries("", U0, "ml", "llm-0", "server"),)
    assert joined.unallocated == ()


def test_mig_uuid_resolves_to_parent_when_nvml_lists_mig_devices():
    gpu = NextGpu(
        0,
        U0,
        mig_devices=(Mig(1, 0, M0), Mig(2, 0, M1)),
        processes=(
            GpuProcessSample(100, gpu_instance=1, compute_instance=0),
            GpuProcessSample(200, gpu_instance=2, compute_instance=0),
            GpuProcessSample(300, gpu_instance=1, compute_instance=0),
        ),
    )
    joined = join_allocations(
        [
            alloc(M0, resource="nvidia.com/mig-3g.40gb"),
            alloc(M1, "research", "notebook", "jupyter", resource="nvidia.com/mig-3g.40gb"),
        ],
        [gpu],
        workloads({100: POD_A, 200: POD_B, 300: POD_B}),
    )
    assert [s.labels() for s in joined.allocations] == [
        {"gpu": "0", "uuid": U0, "namespace": "ml", "pod": "llm-0", "container": "server",
         "gpu_instance": "1", "compute_instance": "0"},
        {"gpu": "0", "uuid": U0, "namespace": "research", "pod": "notebook",
         "container": "jupyter", "gpu_instance": "2", "compute_instance": "0"},
    ]  # fmt: skip
    # notebook holds instance 2; its process 300 runs in instance 1, which is llm-0's.
    assert joined.unallocated == (UnallocatedUse("0", U0, 300),)


def test_mig_uuid_without_nvml_mig_info_matches_by_uuid_only():
    gpus = [GpuSample(0, U0, processes=(GpuProcessSample(100, gpu_instance=1),))]
    joined = join_allocations(
        [alloc(M0, resource="nvidia.com/mig-1g.10gb")], gpus, workloads({100: POD_A})
    )
    assert joined.allocations == (AllocationSeries("", M0, "ml", "llm-0", "server"),)
    # The MIG device found no GPU: whether GPU 0 is its parent is unknown, so not flagged.
    assert joined.unallocated == ()


def test_legacy_mig_id_carries_its_parent():
    gpus = [GpuSample(0, U0, processes=(GpuProcessSample(100, gpu_instance=7),))]
    joined = join_allocations(
        [alloc(f"MIG-{U0}/7/0", resource="nvidia.com/mig-1g.10gb")], gpus, workloads({100: POD_A})
    )
    assert [s.labels() for s in joined.allocations] == [
        {"gpu": "0", "uuid": U0, "namespace": "ml", "pod": "llm-0", "container": "server",
         "gpu_instance": "7", "compute_instance": "0"},
    ]  # fmt: skip
    assert joined.unallocated == ()
