"""Read GPUs through an NvmlBinding: static facts, per-tick readings, processes, MIG layout.

`read_*` functions make NVML calls (through the binding) and return plain frozen values;
`parse_*`/`clock_event_names` are pure. State across ticks (since-timestamps, GPM samples,
integrals) is the collector's, not this module's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node_exporter_ml.nvml.binding import (
    CLOCK_MEM,
    CLOCK_SM,
    Handle,
    MemoryInfo,
    NvmlBinding,
    ProcessInfo,
)
from node_exporter_ml.nvml.health import NVLINK_ACTIVE, FabricInfo, HealthInputs

# nvmlClocksEventReason* bits -> readable names (nvidia-smi -q "Clocks Event Reasons").
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)

# nvmlDeviceGetFieldValues ids (NVML_FI_DEV_*): one batched call per GPU per tick.
FI_ECC_SBE_VOL_TOTAL = 3
FI_ECC_DBE_VOL_TOTAL = 4
FI_ECC_SBE_AGG_TOTAL = 5
FI_ECC_DBE_AGG_TOTAL = 6
FI_RETIRED_SBE = 29
FI_RETIRED_DBE = 30
FI_RETIRED_PENDING = 31
FI_NVLINK_CRC_FLIT_TOTAL = 38
FI_NVLINK_CRC_DATA_TOTAL = 45
FI_NVLINK_REPLAY_TOTAL = 52
FI_NVLINK_RECOVERY_TOTAL = 59
FI_NVLINK_GET_STATE = 165  # per link (scoped): NVML_NVLINK_STATE_*
FI_GPU_RECOVERY_ACTION = 230  # NVML_GPU_RECOVERY_ACTION_* (R570+)
NVLINK_MAX_LINKS = 36  # NVML_NVLINK_MAX_LINKS (NVLink5); probed once per GPU
FI_PERF_POLICY = {
    74: "power",
    75: "thermal",
    76: "sync_boost",
    77: "board_limit",
    78: "low_utilization",
    79: "reliability",
    80: "total_app_clocks",
    81: "total_base_clocks",
}
FI_MEMORY_TEMP = 82
FI_TOTAL_ENERGY_CONSUMPTION = 83  # mJ; in the batch it saves a ~6 ms call of its own
FI_PCIE_REPLAY_COUNTER = 94
FI_NVLINK_THROUGHPUT_DATA_TX = 138  # KiB
FI_NVLINK_THROUGHPUT_DATA_RX = 139  # KiB
FI_REMAPPED_COR = 142
FI_REMAPPED_UNC = 143
FI_REMAPPED_PENDING = 144
FI_REMAPPED_FAILURE = 145
FI_PCIE_COUNT_TX_BYTES = 197
FI_PCIE_COUNT_RX_BYTES = 198
FIELD_IDS: tuple[int, ...] = (
    FI_ECC_SBE_VOL_TOTAL,
    FI_ECC_DBE_VOL_TOTAL,
    FI_ECC_SBE_AGG_TOTAL,
    FI_ECC_DBE_AGG_TOTAL,
    *FI_PERF_POLICY,
    FI_MEMORY_TEMP,
    FI_TOTAL_ENERGY_CONSUMPTION,
    FI_PCIE_REPLAY_COUNTER,
    FI_NVLINK_THROUGHPUT_DATA_TX,
    FI_NVLINK_THROUGHPUT_DATA_RX,
    FI_REMAPPED_COR,
    FI_REMAPPED_UNC,
    FI_REMAPPED_PENDING,
    FI_REMAPPED_FAILURE,
    FI_PCIE_COUNT_TX_BYTES,
    FI_PCIE_COUNT_RX_BYTES,
    FI_RETIRED_SBE,
    FI_RETIRED_DBE,
    FI_RETIRED_PENDING,
    FI_NVLINK_CRC_FLIT_TOTAL,
    FI_NVLINK_CRC_DATA_TOTAL,
    FI_NVLINK_REPLAY_TOTAL,
    FI_NVLINK_RECOVERY_TOTAL,
    FI_GPU_RECOVERY_ACTION,
)

# GPM metric ids (NVML_GPM_METRIC_*).
GPM_GRAPHICS_UTIL = 1
GPM_SM_UTIL = 2
GPM_SM_OCCUPANCY = 3
GPM_ANY_TENSOR_UTIL = 5
GPM_DRAM_BW_UTIL = 10
GPM_PCIE_TX_PER_SEC = 20  # MiB/s
GPM_PCIE_RX_PER_SEC = 21  # MiB/s
GPM_IDS: tuple[int, ...] = (
    GPM_GRAPHICS_UTIL,
    GPM_SM_UTIL,
    GPM_SM_OCCUPANCY,
    GPM_ANY_TENSOR_UTIL,
    GPM_DRAM_BW_UTIL,
    GPM_PCIE_TX_PER_SEC,
    GPM_PCIE_RX_PER_SEC,
)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What does not change while the driver is loaded: read once per GPU."""

    index: int
    uuid: str
    name: str = ""
    serial: str = ""
    pci_bus_id: str = ""
    compute_capability: str = ""
    max_sm_clock_mhz: int | None = None
    max_memory_clock_mhz: int | None = None
    supported_reasons: int | None = None
    gpm_supported: bool = False
    nvlink_links: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """One tick's raw readings of one GPU (NVML units: percent, mW, mJ, MHz)."""

    utilization: tuple[int, int] | None = None
    encoder: int | None = None
    decoder: int | None = None
    memory: MemoryInfo | None = None
    power_mw: int | None = None
    power_limit_mw: int | None = None
    energy_mj: int | None = None
    temperature_c: int | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    performance_state: int | None = None
    persistence_mode: int | None = None
    mig_mode: int | None = None
    clock_event_reasons: int | None = None
    fields: dict[int, float] | None = None
    nvlink_states: Mapping[int, float] = field(default_factory=dict)
    fabric: FabricInfo | None = None


@dataclass(frozen=True, slots=True)
class MigDevice:
    """One MIG device of a GPU: its handle and where it sits."""

    handle: Any
    gpu_instance: int
    compute_instance: int
    uuid: str


def clock_event_names(mask: int | None) -> frozenset[str]:
    """The readable names of the reasons set in a clock-event mask."""
    if not mask:
        return frozenset()
    return frozenset(name for bit, name in CLOCK_EVENT_REASONS if mask & bit)


def read_device_info(nvml: NvmlBinding, index: int, h: Handle) -> DeviceInfo:
    """Static facts of GPU `index` (raises DeviceLost like every read)."""
    cc = nvml.compute_capability(h)
    return DeviceInfo(
        index=index,
        uuid=nvml.uuid(h) or "",
        name=nvml.name(h) or "",
        serial=nvml.serial(h) or "",
        pci_bus_id=nvml.pci_bus_id(h) or "",
        compute_capability=f"{cc[0]}.{cc[1]}" if cc else "",
        max_sm_clock_mhz=nvml.max_clock_mhz(h, CLOCK_SM),
        max_memory_clock_mhz=nvml.max_clock_mhz(h, CLOCK_MEM),
        supported_reasons=nvml.supported_clocks_event_reasons(h),
        gpm_supported=nvml.gpm_supported(h),
        nvlink_links=tuple(
            sorted(nvml.link_field_values(h, FI_NVLINK_GET_STATE, range(NVLINK_MAX_LINKS)))
        ),
    )


def read_device(nvml: NvmlBinding, h: Handle, links: Sequence[int] = ()) -> DeviceReading:
    """One tick's readings of a GPU. Never calls nvmlDeviceGetPcieThroughput (20 ms sleep).

    The energy counter comes from the field-value batch when the driver answers it there
    (h100-probe.json: nvmlDeviceGetTotalEnergyConsumption alone costs ~6 ms, the whole
    batch ~5 ms), else from its own call.
    """
    fields = nvml.field_values(h, FIELD_IDS)
    energy = fields.get(FI_TOTAL_ENERGY_CONSUMPTION)
    return DeviceReading(
        utilization=nvml.utilization(h),
        encoder=nvml.encoder_utilization(h),
        decoder=nvml.decoder_utilization(h),
        memory=nvml.memory(h),
        power_mw=nvml.power_mw(h),
        power_limit_mw=nvml.power_limit_mw(h),
        energy_mj=int(energy) if energy is not None else nvml.energy_mj(h),
        temperature_c=nvml.temperature_c(h),
        sm_clock_mhz=nvml.clock_mhz(h, CLOCK_SM),
        memory_clock_mhz=nvml.clock_mhz(h, CLOCK_MEM),
        performance_state=nvml.performance_state(h),
        persistence_mode=nvml.persistence_mode(h),
        mig_mode=nvml.mig_mode(h),
        clock_event_reasons=nvml.clocks_event_reasons(h),
        fields=fields,
        nvlink_states=nvml.link_field_values(h, FI_NVLINK_GET_STATE, links) if links else {},
        fabric=nvml.fabric_info(h),
    )


def health_inputs(
    info: DeviceInfo,
    r: DeviceReading,
    *,
    at: float,
    xid_ages: Mapping[int, float],
    links_up_before: frozenset[int],
) -> HealthInputs:
    """What the health checks need from one tick's readings of a GPU (pure).

    `links_up_before` are the links seen active at some earlier tick: a link is down when it
    was up and is not now (links never up, e.g. unused on this board, are not reported).
    """
    f = r.fields or {}
    crc = [f[i] for i in (FI_NVLINK_CRC_FLIT_TOTAL, FI_NVLINK_CRC_DATA_TOTAL) if i in f]
    action = f.get(FI_GPU_RECOVERY_ACTION)
    return HealthInputs(
        index=info.index,
        uuid=info.uuid,
        at=at,
        xid_ages=xid_ages,
        recovery_action=None if action is None else int(action),
        dbe_volatile=f.get(FI_ECC_DBE_VOL_TOTAL),
        remap_pending=f.get(FI_REMAPPED_PENDING),
        remap_failure=f.get(FI_REMAPPED_FAILURE),
        remapped_uncorrectable=f.get(FI_REMAPPED_UNC),
        retired_dbe=f.get(FI_RETIRED_DBE),
        retired_sbe=f.get(FI_RETIRED_SBE),
        retired_pending=f.get(FI_RETIRED_PENDING),
        nvlink_crc_total=sum(crc) if crc else None,
        nvlink_replay_total=f.get(FI_NVLINK_REPLAY_TOTAL),
        nvlink_recovery_total=f.get(FI_NVLINK_RECOVERY_TOTAL),
        nvlink_down=frozenset(
            link for link in links_up_before if r.nvlink_states.get(link) != NVLINK_ACTIVE
        ),
        nvlink_links=len(info.nvlink_links),
        pcie_replays_total=f.get(FI_PCIE_REPLAY_COUNTER),
        clock_events=clock_event_names(r.clock_event_reasons),
        power_watts=None if r.power_mw is None else r.power_mw / 1000.0,
        fabric=r.fabric,
    )


def read_mig_devices(nvml: NvmlBinding, h: Handle) -> list[MigDevice]:
    """The MIG devices of a GPU in MIG mode, in slot order."""
    out = []
    for slot in range(nvml.max_mig_devices(h)):
        mig = nvml.mig_handle(h, slot)
        if mig is None:
            continue
        gi, ci = nvml.gpu_instance_id(mig), nvml.compute_instance_id(mig)
        if gi is None or ci is None:
            continue
        out.append(MigDevice(mig, gi, ci, nvml.uuid(mig) or ""))
    return out


def merge_processes(compute: list[ProcessInfo], mps: list[ProcessInfo]) -> list[ProcessInfo]:
    """Compute processes and MPS clients, each (pid, GPU instance, compute instance) once.

    An MPS client can show up in both lists; its own (MPS) entry is kept, so its memory is
    counted once, not once per list.
    """
    merged: dict[tuple[int, int | None, int | None], ProcessInfo] = {}
    for p in (*compute, *mps):
        merged[(p.pid, p.gpu_instance, p.compute_instance)] = p
    return list(merged.values())


def _device_processes(nvml: NvmlBinding, h: Handle) -> list[ProcessInfo]:
    return merge_processes(nvml.compute_processes(h) or [], nvml.mps_processes(h) or [])


def read_processes(nvml: NvmlBinding, h: Handle, migs: list[MigDevice]) -> list[ProcessInfo]:
    """Compute processes and MPS clients of a GPU; under MIG, per MIG device (with GI/CI)."""
    if not migs:
        return _device_processes(nvml, h)
    out: list[ProcessInfo] = []
    for mig in migs:
        for p in _device_processes(nvml, mig.handle):
            out.append(
                ProcessInfo(
                    p.pid,
                    p.used_memory_bytes,
                    mig.gpu_instance if p.gpu_instance is None else p.gpu_instance,
                    mig.compute_instance if p.compute_instance is None else p.compute_instance,
                    p.mps_client,
                )
            )
    return out
