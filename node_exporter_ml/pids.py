"""The pids the host collectors follow: the GPU holders and inference processes of a snapshot.

The process, cgroup and serving collectors each select what they read from the previous
snapshot's pids; this module is that shared selection, so no collector imports another.
"""

from __future__ import annotations

from collections import defaultdict

from node_exporter_ml.snapshot import NVML, PROCESS, Snapshot


def gpu_pids(snapshot: Snapshot | None) -> dict[int, list[str]]:
    """Pids holding a GPU in `snapshot`'s NVML data, with the UUIDs they hold."""
    nvml = snapshot[NVML] if snapshot is not None else None
    held: dict[int, list[str]] = defaultdict(list)
    for device in nvml.devices if nvml is not None else ():
        for proc in device.processes:
            if device.uuid not in held[proc.pid]:
                held[proc.pid].append(device.uuid)
    return dict(held)


def inference_pids(snapshot: Snapshot | None) -> list[int]:
    """GPU holders and the process collector's inference processes in `snapshot`, ascending."""
    pids = set(gpu_pids(snapshot))
    processes = snapshot[PROCESS] if snapshot is not None else None
    if processes is not None:
        pids.update(processes.processes)
    return sorted(pids)
