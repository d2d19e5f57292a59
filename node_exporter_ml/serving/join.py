"""Pure joins of a serving target to its owner processes, their GPUs, co-tenants and cgroups.

Only the snapshot contract is read, through the typed keys NVML, PROCESS and CGROUP (no
collector module is imported); each join degrades to "unknown" (None / empty) when its
collector did not run or failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from node_exporter_ml.serving.data import TargetStatus
from node_exporter_ml.snapshot import CGROUP, PROCESS, CgroupSample, GpuSample, NvmlData, Snapshot

_POWER_THERMAL_WORDS = ("power", "thermal", "hw_slowdown")
IDLE_PSTATE = 8  # P8 and lower-power states: the clocks a GPU parks at between requests


def _short_container_id(cid: str) -> str:
    return cid.rpartition("://")[2].lower()


def _same_container(a: str, b: str) -> bool:
    a, b = _short_container_id(a), _short_container_id(b)
    return bool(a and b) and (a.startswith(b) or b.startswith(a))


def owner_pids(target: TargetStatus, snapshot: Snapshot) -> tuple[int, ...]:
    """The processes that serve `target`.

    An explicit `pid` is the owner; a `container_id` or `pod` owns every process the
    process collector attributes to it; otherwise the socket owner and every process in
    its cgroup (a vLLM API server's GPU work runs in a sibling engine process). The socket
    owner comes first: when several servers share a cgroup (processes on a bare host,
    sidecars), the lowest pid of the cgroup may be another server.
    """
    procs = snapshot[PROCESS]
    processes = procs.processes if procs is not None else {}
    if target.pid is not None:
        return (target.pid,)
    if target.container_id:
        return tuple(
            sorted(
                pid
                for pid, p in processes.items()
                if p.container_id and _same_container(p.container_id, target.container_id)
            )
        )
    if target.pod:
        namespace, _, name = target.pod.partition("/")
        return tuple(
            sorted(
                pid
                for pid, labels in snapshot.workloads.items()
                if labels.get("namespace") == namespace and labels.get("pod") == name
            )
        )
    if target.socket_pid is None:
        return ()
    owner = processes.get(target.socket_pid)
    if owner is None or not owner.cgroup_path or owner.cgroup_path == "/":
        return (target.socket_pid,)
    siblings = {pid for pid, p in processes.items() if p.cgroup_path == owner.cgroup_path}
    siblings.discard(target.socket_pid)
    return (target.socket_pid, *sorted(siblings))


def owner_gpus(pids: Iterable[int], nvml: NvmlData | None) -> tuple[GpuSample, ...]:
    """The GPUs on which any of `pids` runs."""
    if nvml is None:
        return ()
    wanted = set(pids)
    return tuple(g for g in nvml.devices if any(p.pid in wanted for p in g.processes))


def owner_cgroups(pids: Iterable[int], snapshot: Snapshot) -> tuple[CgroupSample, ...]:
    """The cgroups (one per distinct path) of `pids`, from the process and cgroup collectors."""
    procs = snapshot[PROCESS]
    groups = snapshot[CGROUP]
    if procs is None or groups is None:
        return ()
    out: dict[str, CgroupSample] = {}
    for pid in pids:
        p = procs.processes.get(pid)
        if p is not None and p.cgroup_path and p.cgroup_path in groups.cgroups:
            out[p.cgroup_path] = groups.cgroups[p.cgroup_path]
    return tuple(out.values())


@dataclass(frozen=True, slots=True)
class GpuShares:
    """SM shares on the owner's GPUs (summed per GPU, the busiest GPU taken)."""

    owner_sm: float | None
    cotenant_sm: float | None
    cotenant_pids: tuple[int, ...]
    device_sm_active: float | None
    power_thermal: float | None
    clock_ratio: float | None
    idle_clocked: float | None = None


def is_power_thermal(reason: str) -> bool:
    """True for clock-event reasons that cap clocks for power or heat."""
    lowered = reason.lower()
    return any(w in lowered for w in _POWER_THERMAL_WORDS)


def is_idle_clocked(g: GpuSample) -> bool | None:
    """Whether the GPU sits in a low-power state: clock event gpu_idle, or P8 or lower power.

    None when the GPU reports neither its clock events nor its performance state.
    """
    if "gpu_idle" in g.clock_events:
        return True
    if g.performance_state is not None:
        return g.performance_state >= IDLE_PSTATE
    return False if g.clock_events_supported else None


def gpu_shares(pids: Iterable[int], gpus: Iterable[GpuSample]) -> GpuShares:
    """Owner and co-tenant SM shares, device SM activity, clock events on the owner's GPUs."""
    wanted = set(pids)
    owner_sm: float | None = None
    cotenant_sm: float | None = None
    cotenants: set[int] = set()
    active: float | None = None
    events: float | None = None
    clock: float | None = None
    idle: float | None = None
    for g in gpus:
        own = [p.sm_ratio for p in g.processes if p.pid in wanted and p.sm_ratio is not None]
        others = [p for p in g.processes if p.pid not in wanted]
        cotenants.update(p.pid for p in others)
        other_sm = [p.sm_ratio for p in others if p.sm_ratio is not None]
        if own or other_sm or not others:
            owner_sm = max(owner_sm or 0.0, sum(own))
            cotenant_sm = max(cotenant_sm or 0.0, sum(other_sm))
        device = g.sm_active_ratio
        if device is None:
            shares = [p.sm_ratio for p in g.processes if p.sm_ratio is not None]
            device = min(1.0, sum(shares)) if shares else g.utilization_ratio
        if device is not None:
            active = max(active or 0.0, device)
        flagged = 1.0 if any(is_power_thermal(r) for r in g.clock_events) else 0.0
        events = max(events or 0.0, flagged)
        if g.sm_clock_hertz is not None and g.max_sm_clock_hertz:
            ratio = g.sm_clock_hertz / g.max_sm_clock_hertz
            clock = ratio if clock is None else min(clock, ratio)
        parked = is_idle_clocked(g)
        if parked is not None:
            idle = max(idle or 0.0, 1.0 if parked else 0.0)
    return GpuShares(owner_sm, cotenant_sm, tuple(sorted(cotenants)), active, events, clock, idle)
