"""Frozen sample types, the typed keys that name them, and the Snapshot: what one tick saw.

Each collector returns one frozen value (its "data"); the sampler wraps it in a
CollectorResult and the Snapshot holds one result per enabled collector. A `DataKey`
names one collector's data and its type (`PROCESS = DataKey("process", ProcessData)`),
declared next to that type, so `snapshot[PROCESS]` is checked by mypy and the registry
knows who produces and who reads what. The sample dataclasses below are the contract
between collectors and the pure correlation code; each is owned by the collector named
in its docstring (the others' data types and keys live with their collectors).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from node_exporter_ml.nvml.health import GpuHealth

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DataKey(Generic[T]):
    """The name of one collector's data in a snapshot, and its type (as aiohttp's AppKey).

    `name` is the producing collector's name; `type` what its update() returns.
    """

    name: str
    type: type[T]


@dataclass(frozen=True, slots=True)
class CollectorResult:
    """The outcome of one collector's update in one tick."""

    name: str
    success: bool
    duration_seconds: float
    data: object = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one tick saw, immutable once built.

    `workloads` maps a pid to its workload labels (namespace/pod/container, or
    unit), filled by correlation after the collectors ran; `derived` holds
    results of correlation steps keyed by name (read them with `derived_data(KEY)`).
    """

    taken_at: float
    results: Mapping[str, CollectorResult]
    workloads: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    derived: Mapping[str, object] = field(default_factory=dict)

    def __getitem__(self, key: DataKey[T]) -> T | None:
        """The data `key` names if its collector ran, succeeded and returned `key.type`."""
        result = self.results.get(key.name)
        return self.last_known(key) if result is not None and result.success else None

    def last_known(self, key: DataKey[T]) -> T | None:
        """The data `key` names, also when its collector failed but kept its last good data."""
        result = self.results.get(key.name)
        if result is None or not isinstance(result.data, key.type):
            return None
        return result.data

    def derived_data(self, key: DataKey[T]) -> T | None:
        """The result a correlation step put in `derived` under `key`, if of `key.type`."""
        value = self.derived.get(key.name)
        return value if isinstance(value, key.type) else None

    def with_derived(self, key: DataKey[T], value: T) -> Snapshot:
        """A copy with `value` put in `derived` under `key` (what a correlation step adds)."""
        return self.replace(derived={**self.derived, key.name: value})

    def replace(self, **changes: object) -> Snapshot:
        """A copy with some fields replaced (snapshots are never mutated)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def workload_labels(self, pid: int) -> Mapping[str, str]:
        """Labels of the workload that owns `pid` (empty when unattributed)."""
        return self.workloads.get(pid, {})


# --- nvml collector -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuProcessSample:
    """One compute process on one GPU (or MIG instance), from the nvml collector.

    Ratios are 0-1 over the last sampling interval; a process with no NVML
    utilisation sample in that interval reads 0, never a stale value.
    """

    pid: int
    comm: str = ""
    used_memory_bytes: int | None = None
    sm_ratio: float | None = None
    memory_ratio: float | None = None
    encoder_ratio: float | None = None
    decoder_ratio: float | None = None
    sm_seconds_total: float = 0.0
    gpu_instance: int | None = None
    compute_instance: int | None = None
    energy_joules_total: float | None = None
    mps_client: bool = False


@dataclass(frozen=True, slots=True)
class GpuInstanceSample:
    """One MIG GPU instance: its memory and GPM activity (Hopper and newer), nvml collector."""

    gpu_instance: int
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    graphics_active_ratio: float | None = None
    sm_active_ratio: float | None = None
    sm_occupancy_ratio: float | None = None
    tensor_active_ratio: float | None = None
    dram_active_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class MigDeviceSample:
    """One MIG device (a compute instance inside a GPU instance), nvml collector."""

    gpu_instance: int
    compute_instance: int
    uuid: str = ""


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU's readings in one tick, from the nvml collector; None means not supported.

    Counters (`*_total`) are as NVML reports them (since driver load) except
    `energy_joules_total`, which is integrated from power where the GPU has no energy
    counter. `clock_events` holds the active reasons, `clock_events_supported` all the
    reasons this GPU reports; `clock_violation_seconds` maps a perf policy to its
    cumulative seconds; `ecc_errors` maps (severity, counter) to a count.
    """

    index: int
    uuid: str
    name: str = ""
    serial: str = ""
    pci_bus_id: str = ""
    compute_capability: str = ""
    mig_mode: int | None = None
    utilization_ratio: float | None = None
    memory_copy_utilization_ratio: float | None = None
    encoder_utilization_ratio: float | None = None
    decoder_utilization_ratio: float | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_reserved_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    energy_joules_total: float | None = None
    idle_energy_joules_total: float | None = None
    temperature_celsius: float | None = None
    memory_temperature_celsius: float | None = None
    sm_clock_hertz: float | None = None
    max_sm_clock_hertz: float | None = None
    memory_clock_hertz: float | None = None
    max_memory_clock_hertz: float | None = None
    performance_state: int | None = None
    persistence_mode: int | None = None
    pcie_replays_total: float | None = None
    pcie_transmit_bytes_total: float | None = None
    pcie_receive_bytes_total: float | None = None
    nvlink_transmit_bytes_total: float | None = None
    nvlink_receive_bytes_total: float | None = None
    remapped_rows_correctable_total: float | None = None
    remapped_rows_uncorrectable_total: float | None = None
    remapped_rows_pending: float | None = None
    row_remap_failure: float | None = None
    ecc_errors: Mapping[tuple[str, str], float] = field(default_factory=dict)
    clock_violation_seconds: Mapping[str, float] = field(default_factory=dict)
    graphics_active_ratio: float | None = None
    sm_active_ratio: float | None = None
    sm_occupancy_ratio: float | None = None
    tensor_active_ratio: float | None = None
    dram_active_ratio: float | None = None
    pcie_transmit_bytes_per_second: float | None = None
    pcie_receive_bytes_per_second: float | None = None
    clock_events: frozenset[str] = frozenset()
    clock_events_supported: frozenset[str] = frozenset()
    processes: tuple[GpuProcessSample, ...] = ()
    gpu_instances: tuple[GpuInstanceSample, ...] = ()
    mig_devices: tuple[MigDeviceSample, ...] = ()


@dataclass(frozen=True, slots=True)
class LostGpu:
    """A GPU NVML answered GpuIsLost/Unknown for in this tick (dropped from `devices`)."""

    index: int
    uuid: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class XidCount:
    """How many XID critical errors of one code a GPU raised since the agent started."""

    index: int
    uuid: str
    xid: int
    count: int


@dataclass(frozen=True, slots=True)
class NvmlData:
    """What the nvml collector returns: the visible GPUs (lost ones dropped and listed).

    `health` holds one verdict per GPU read, lost or missing; `gpus` is how many NVML
    enumerates and `expected_gpus` how many there should be (None before the first tick).
    """

    driver_version: str = ""
    devices: tuple[GpuSample, ...] = ()
    lost: tuple[LostGpu, ...] = ()
    xid_errors: tuple[XidCount, ...] = ()
    health: tuple[GpuHealth, ...] = ()
    gpus: int | None = None
    expected_gpus: int | None = None


NVML = DataKey("nvml", NvmlData)


# --- process and cgroup collectors ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One inference process, from the process collector (read through --path.procfs).

    `cgroup_path` is the path that identifies its workload; `container_id`, `pod_uid`,
    `runtime`, `qos` and `unit` are what that path says (see host/cgroup_path.py);
    `slurm_*` come from the path and, where readable, /proc/<pid>/environ (host/slurm.py);
    `reasons` says why it counts as an inference process ("gpu", "serving", "match").
    """

    pid: int
    comm: str
    cmdline: tuple[str, ...] = ()
    cpu_user_seconds_total: float = 0.0
    cpu_system_seconds_total: float = 0.0
    resident_memory_bytes: int | None = None
    cgroup_path: str | None = None
    container_id: str | None = None
    pod_uid: str | None = None
    unit: str | None = None
    ppid: int | None = None
    start_time_seconds: float | None = None
    threads: int | None = None
    open_fds: int | None = None
    voluntary_context_switches_total: int | None = None
    involuntary_context_switches_total: int | None = None
    runtime: str | None = None
    qos: str | None = None
    reasons: frozenset[str] = frozenset()
    slurm_job: str | None = None
    slurm_step: str | None = None
    slurm_job_name: str | None = None
    slurm_user: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessData:
    """What the process collector returns, keyed by pid."""

    processes: Mapping[int, ProcessSample] = field(default_factory=dict)


PROCESS = DataKey("process", ProcessData)


@dataclass(frozen=True, slots=True)
class CpuQuota:
    """The CPU bandwidth limit over a cgroup: its own quota, else its nearest limited ancestor's.

    `path` is the limiting cgroup (relative to its hierarchy) and the counters are its
    cpu.stat; `path` None means no cgroup on the way to the root has a quota.
    """

    path: str | None = None
    limit_cores: float | None = None
    periods_total: int | None = None
    throttled_periods_total: int | None = None
    throttled_seconds_total: float | None = None


@dataclass(frozen=True, slots=True)
class CgroupSample:
    """The statistics of one container's cgroup (read through --path.cgroupfs).

    `pids` are the inference processes found in it; None fields were not readable
    (absent file, v1 host without the equivalent), and their series are omitted.
    """

    path: str
    cpu_usage_seconds_total: float | None = None
    cpu_throttled_seconds_total: float | None = None
    cpu_periods_total: int | None = None
    cpu_throttled_periods_total: int | None = None
    cpu_limit_cores: float | None = None
    memory_current_bytes: int | None = None
    memory_working_set_bytes: int | None = None
    memory_limit_bytes: int | None = None
    oom_kills_total: int | None = None
    pressure_cpu_waiting_seconds_total: float | None = None
    pressure_memory_waiting_seconds_total: float | None = None
    pressure_memory_stalled_seconds_total: float | None = None
    pressure_io_waiting_seconds_total: float | None = None
    pressure_cpu_stalled_seconds_total: float | None = None
    pressure_io_stalled_seconds_total: float | None = None
    cpu_user_seconds_total: float | None = None
    cpu_system_seconds_total: float | None = None
    io_read_bytes_total: int | None = None
    io_write_bytes_total: int | None = None
    cgroup_version: int | None = None
    pids: tuple[int, ...] = ()
    cpu_quota: CpuQuota | None = None  # None: not known (cpu controller unreadable)


@dataclass(frozen=True, slots=True)
class CgroupData:
    """What the cgroup collector returns, keyed by cgroup path."""

    cgroups: Mapping[str, CgroupSample] = field(default_factory=dict)


CGROUP = DataKey("cgroup", CgroupData)
