"""The nvml collector: per-GPU, per-MIG-instance and per-process GPU metrics from NVML alone.

The collector orchestrates: NVML initialisation and its retry, one tick's reads per GPU and
the NvmlData they make, and its metric families as series tables. The XID event thread is
nvml/xid.py, per-process energy a pure ledger in nvml/energy.py, GPM windows nvml/gpm.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from node_exporter_ml.collectors.base import BlockingCollector, CollectContext, NoDataError
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.nvml.binding import (
    DeviceLost,
    Handle,
    NvmlBinding,
    NvmlUnavailable,
    ProcessInfo,
)
from node_exporter_ml.nvml.devices import (
    FI_ECC_DBE_AGG_TOTAL,
    FI_ECC_DBE_VOL_TOTAL,
    FI_ECC_SBE_AGG_TOTAL,
    FI_ECC_SBE_VOL_TOTAL,
    FI_MEMORY_TEMP,
    FI_NVLINK_THROUGHPUT_DATA_RX,
    FI_NVLINK_THROUGHPUT_DATA_TX,
    FI_PCIE_COUNT_RX_BYTES,
    FI_PCIE_COUNT_TX_BYTES,
    FI_PCIE_REPLAY_COUNTER,
    FI_PERF_POLICY,
    FI_REMAPPED_COR,
    FI_REMAPPED_FAILURE,
    FI_REMAPPED_PENDING,
    FI_REMAPPED_UNC,
    DeviceInfo,
    DeviceReading,
    MigDevice,
    clock_event_names,
    health_inputs,
    read_device,
    read_device_info,
    read_mig_devices,
    read_processes,
)
from node_exporter_ml.nvml.energy import EnergyLedger, Key
from node_exporter_ml.nvml.gpm import GpmWindows, activity_ratios, pcie_rates
from node_exporter_ml.nvml.health import (
    ACTIONS,
    CHECKS,
    NVLINK_ACTIVE,
    GpuHealth,
    HealthInputs,
    assess,
    missing_gpu,
)
from node_exporter_ml.nvml.replay import Replay, ReplayError
from node_exporter_ml.nvml.xid import XidWatcher, xid_counts
from node_exporter_ml.options import Section, at_least, existing_file, flag
from node_exporter_ml.registry import register_collector
from node_exporter_ml.series import Series, table_families
from node_exporter_ml.snapshot import (
    NVML,
    PROCESS,
    GpuInstanceSample,
    GpuProcessSample,
    GpuSample,
    LostGpu,
    MigDeviceSample,
    NvmlData,
    Snapshot,
    XidCount,
)

log = logging.getLogger(__name__)

INIT_RETRY_SECONDS = 60.0

_Shares = tuple[float, float, float, float]  # a process's SM, memory, encoder, decoder shares


@dataclass
class _GpuState:
    """What the collector remembers about one GPU between ticks."""

    handle: Handle
    info: DeviceInfo | None = None
    last_tick: float | None = None
    since_us: int | None = None
    energy: EnergyLedger = field(default_factory=EnergyLedger)
    gpm: GpmWindows = field(default_factory=GpmWindows)
    health_prev: HealthInputs | None = None
    links_up: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class NvmlOptions:
    """The nvml collector's flags."""

    replay: str | None = flag(
        "--nvml.replay",
        None,
        metavar="FILE",
        help="drive the nvml collector from a replay file instead of the driver",
        check=existing_file,
    )
    expected_gpus: int | None = flag(
        "--nvml.expected-gpus",
        None,
        type=int,
        metavar="N",
        help="GPUs this node should have; fewer is a `lost` health failure "
        "(default: the count seen at the first successful tick)",
        check=at_least(1),
    )


NVML_OPTIONS: Section[NvmlOptions] = Section("nvml", NvmlOptions)


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else percent / 100.0


@register_collector(
    "nvml",
    produces=NVML,
    reads={PROCESS: "/proc comm names on GPU process series"},
    options=NVML_OPTIONS,
)
class NvmlCollector(BlockingCollector[NvmlData]):
    """GPU, MIG-instance and per-process metrics from NVML (no DCGM), or from a replay file.

    Calls nvmlDeviceGet{UtilizationRates,MemoryInfo_v2,PowerUsage,TotalEnergyConsumption,
    Temperature,ClockInfo,CurrentClocksEventReasons,FieldValues,ComputeRunningProcesses_v3,
    ProcessUtilization}, GPM (nvmlGpmSampleGet/MetricsGet) on Hopper and newer, and waits on
    an XID event set in its own thread; nvidia-smi --query-gpu=... and pmon show the same.

        nodeml_gpu_power_watts{gpu="0",uuid="GPU-478bad86-..."} 676.773
    """

    blocking = True

    def __init__(
        self,
        ctx: CollectContext,
        *,
        clock: Callable[[], float] | None = None,
        library: Any = None,
    ) -> None:
        super().__init__(ctx)
        self._clock = clock or time.monotonic
        self._replay_clock = clock
        self._library = library
        self._nvml: NvmlBinding | None = None
        self._last_init: float | None = None
        self._once = OnceLogger(log)
        self._gpus: dict[int, _GpuState] = {}
        self._names: dict[int, str] = {}
        self._xid = XidWatcher(self._clock)
        self._expected: int | None = ctx.config.section(NVML_OPTIONS).expected_gpus
        self._known: dict[int, str] = {}  # index -> uuid of every GPU read since start
        self._lock = threading.RLock()

    # --- lifecycle ----------------------------------------------------------------------

    def _ensure_init(self) -> NvmlBinding:
        with self._lock:  # start() (XID) and the first tick may race to initialise
            return self._init_locked()

    def _init_locked(self) -> NvmlBinding:
        if self._nvml is not None:
            return self._nvml
        now = self._clock()
        if self._last_init is not None and now - self._last_init < INIT_RETRY_SECONDS:
            raise NoDataError("NVML unavailable (next initialisation attempt within 60s)")
        self._last_init = now
        try:
            nvml = self._open()
            nvml.init()
        except NvmlUnavailable as err:
            hint = (
                "check the file given to --nvml.replay"
                if isinstance(err, ReplayError)
                else "is the NVIDIA driver loaded and libnvidia-ml.so.1 visible to the agent?"
            )
            self._once.log(
                logging.ERROR,
                "init",
                "NVML unavailable, GPU metrics are off (retrying every %ds): %s; %s",
                INIT_RETRY_SECONDS,
                err,
                hint,
            )
            raise NoDataError(f"NVML unavailable: {err}") from err
        if self._once.forget("init"):
            log.info("NVML initialised (driver %s)", nvml.driver_version)
        self._nvml = nvml
        return nvml

    def _open(self) -> NvmlBinding:
        path = self.ctx.config.section(NVML_OPTIONS).replay
        if self._library is not None:
            return NvmlBinding(self._library, clock=self._replay_clock)
        if path:
            clock = self._replay_clock or time.time
            replay = Replay.from_file(path, clock=clock)
            self._library = replay  # frames keep advancing across re-initialisations
            return NvmlBinding(replay, clock=clock)
        return NvmlBinding()

    def _lose_nvml(self, err: Exception) -> NoDataError:
        self._once.log(logging.ERROR, "init", "NVML stopped answering: %s", err)
        self._nvml = None
        self._gpus.clear()
        return NoDataError(f"NVML unavailable: {err}")

    async def start(self) -> None:
        """Start waiting for XID events (once NVML is up; update() retries that)."""
        self._xid.want()
        await asyncio.to_thread(self._try_start_events)

    async def stop(self) -> None:
        """Stop the XID thread and release NVML."""
        self._xid.unwant()
        await asyncio.to_thread(self._stop_events)

    def _try_start_events(self) -> None:
        try:
            self._ensure_init()
        except NoDataError:
            return
        self._start_events()

    def _start_events(self) -> None:
        with self._lock:
            if self._nvml is not None:
                self._xid.start(self._nvml, [st.handle for st in self._gpus.values()])

    def _stop_events(self) -> None:
        self._xid.close(self._nvml)
        if self._nvml is not None:
            self._nvml.shutdown()
            self._nvml = None
            self._gpus.clear()

    @property
    def _event_thread(self) -> threading.Thread | None:
        """The XID watcher's thread, None when none runs (tests follow its restarts)."""
        return self._xid.thread

    # --- one tick -----------------------------------------------------------------------

    def update(self, previous: Snapshot | None) -> NvmlData:
        """Read every GPU once; lost GPUs are listed, not fatal.

        Raises:
            NoDataError: NVML is not available (retried every 60 s).
        """
        nvml = self._ensure_init()
        # Counts taken before the GPUs are read: every XID this tick reports is one the
        # health verdicts below have seen too (an event may land in between).
        xids = self._xid.counts()
        try:
            count = nvml.device_count()
            if count == 0 and not self._expected:
                raise NoDataError("NVML sees no NVIDIA GPU")
            devices: list[GpuSample] = []
            lost: list[LostGpu] = []
            health: list[GpuHealth] = []
            for index in range(count):
                try:
                    sample, verdict = self._read_gpu(nvml, index)
                except DeviceLost as err:
                    lost.append(self._lost(index, err))
                    verdict = self._lost_health(lost[-1])
                else:
                    devices.append(sample)
                health.append(verdict)
        except NvmlUnavailable as err:
            raise self._lose_nvml(err) from err
        if self._expected is None:
            self._expected = count
        health += self._missing(count)
        for index in [i for i in self._gpus if i >= count]:
            del self._gpus[index]
        live = {p.pid for d in devices for p in d.processes}
        for pid in [p for p in self._names if p not in live]:
            del self._names[pid]
        if self._xid.waiting_to_start:
            self._start_events()
        return NvmlData(
            driver_version=nvml.driver_version,
            devices=tuple(devices),
            lost=tuple(lost),
            xid_errors=self._xid_counts(xids, devices, lost),
            health=tuple(health),
            gpus=count,
            expected_gpus=self._expected,
        )

    def _missing(self, count: int) -> list[GpuHealth]:
        """Verdicts of GPUs no longer enumerated: known ones by uuid, the rest by index."""
        gone = {i: u for i, u in self._known.items() if i >= count}
        gone |= {i: "" for i in range(count, self._expected or 0) if i not in gone}
        return [missing_gpu(i, u) for i, u in sorted(gone.items())]

    def _lost_health(self, gpu: LostGpu) -> GpuHealth:
        now = self._clock()
        return assess(HealthInputs(gpu.index, gpu.uuid, now, True, self._xid.ages(gpu.uuid, now)))

    def _lost(self, index: int, err: DeviceLost) -> LostGpu:
        st = self._gpus.get(index)
        uuid = st.info.uuid if st is not None and st.info is not None else ""
        self._once.log(logging.ERROR, f"lost:{index}", "GPU %d (%s) is lost: %s", index, uuid, err)
        if st is not None:
            st.gpm.drop()
            st.last_tick = None
            st.since_us = None
            st.energy.interrupt()  # what it used while lost is nobody's to attribute
            st.handle = None
        return LostGpu(index, uuid, str(err))

    def _xid_counts(
        self, xids: Counter[tuple[str, int]], devices: list[GpuSample], lost: list[LostGpu]
    ) -> tuple[XidCount, ...]:
        """Every XID so far, and a 0 for each watched XID of each GPU of this tick."""
        # Every GPU read this tick has its info in _gpus, which wins the merge anyway.
        index_of = {u: i for i, u in self._known.items()}  # GPUs gone from the bus too
        index_of |= {g.uuid: g.index for g in lost}
        index_of |= {st.info.uuid: i for i, st in self._gpus.items() if st.info is not None}
        return xid_counts(xids, index_of, [g.uuid for g in devices] + [g.uuid for g in lost])

    def _read_gpu(self, nvml: NvmlBinding, index: int) -> tuple[GpuSample, GpuHealth]:
        st = self._gpus.get(index)
        if st is None or st.handle is None:
            handle = nvml.handle(index)
            if handle is None:
                raise DeviceLost("nvmlDeviceGetHandleByIndex", "no handle")
            if st is None:
                st = self._gpus[index] = _GpuState(handle)
            st.handle = handle
        if st.info is None:
            st.info = read_device_info(nvml, index, st.handle)
        info, h = st.info, st.handle
        now = self._clock()
        dt = 0.0 if st.last_tick is None else max(0.0, now - st.last_tick)
        reading = read_device(nvml, h, info.nvlink_links)
        migs = read_mig_devices(nvml, h) if reading.mig_mode == 1 else []
        procs = read_processes(nvml, h, migs)
        energy = st.energy.gpu_energy(reading.energy_mj, reading.power_mw, dt)
        processes, idle = self._processes(nvml, st, h, procs, dt, energy, migrated=bool(migs))
        gpm = (
            st.gpm.measure(nvml, h, {m.gpu_instance for m in migs}, now)
            if info.gpm_supported
            else {}
        )
        st.last_tick = now
        instances = self._instances(nvml, migs, gpm)
        sample = _gpu_sample(
            info, reading, processes, gpm.get(None, {}), energy, idle, instances, migs
        )
        # Only a whole successful read clears a lost GPU: a GPU that answers its handle but
        # fails its readings stays lost, logged once, not "lost"/"back" every tick.
        if self._once.forget(f"lost:{index}"):
            log.info("GPU %d (%s) answers again", index, info.uuid)
            self._xid.reset(info.uuid)
        return sample, self._health(st, info, reading, now)

    def _health(
        self, st: _GpuState, info: DeviceInfo, reading: DeviceReading, now: float
    ) -> GpuHealth:
        prev = st.health_prev
        dbe = (reading.fields or {}).get(FI_ECC_DBE_VOL_TOTAL)
        before = prev.dbe_volatile if prev is not None else None
        if dbe is not None and before is not None and dbe < before:
            self._xid.reset(info.uuid)  # volatile ECC counts start over when the GPU resets
        inputs = health_inputs(
            info,
            reading,
            at=now,
            xid_ages=self._xid.ages(info.uuid, now),
            links_up_before=st.links_up,
        )
        st.links_up |= {k for k, v in reading.nvlink_states.items() if v == NVLINK_ACTIVE}
        st.health_prev = inputs
        self._known[info.index] = info.uuid
        return assess(inputs, prev)

    def _processes(
        self,
        nvml: NvmlBinding,
        st: _GpuState,
        h: Handle,
        procs: list[ProcessInfo],
        dt: float,
        energy: float | None,
        *,
        migrated: bool,
    ) -> tuple[tuple[GpuProcessSample, ...], float | None]:
        """The GPU's processes with their shares, SM-seconds and energy; and the idle energy.

        NVML keeps per-process samples in a buffer and returns, per process, the newest one
        after `since`; asking from the newest timestamp already seen means a process idle
        for the whole interval is not returned and reads 0, never its old value. Under MIG
        there are no per-process samples; the GPU's energy ledger splits the rest.
        """
        util = None
        if not migrated:
            now_us = nvml.now_us()
            since = st.since_us
            if since is None:
                since = now_us - int(self.ctx.config.interval * 1_000_000)
            util = nvml.process_utilization(h, since)
            if util is not None:
                st.since_us = max([since, *(u.timestamp_us for u in util)])
        by_pid = {u.pid: u for u in util or ()}
        rows: dict[Key, tuple[ProcessInfo, _Shares | None]] = {}
        for p in sorted(procs, key=lambda p: (p.pid, p.gpu_instance or 0, p.compute_instance or 0)):
            key = (p.pid, p.gpu_instance, p.compute_instance)
            if key not in rows:
                u = by_pid.get(p.pid)
                shares: _Shares | None = None
                if util is not None:
                    shares = (
                        (u.sm / 100, u.mem / 100, u.enc / 100, u.dec / 100) if u else (0.0,) * 4
                    )
                rows[key] = (p, shares)
        # Shares exist exactly when NVML gave a utilisation sample list (util not None).
        sm = {k: s[0] for k, (_, s) in rows.items() if s is not None} if util is not None else None
        tally = st.energy.record(energy, list(rows), sm, dt)
        out = []
        for key, (p, shares) in rows.items():
            sm_ratio, mem, enc, dec = shares or (None, None, None, None)
            out.append(
                GpuProcessSample(
                    pid=p.pid,
                    comm=self._comm(nvml, p.pid),
                    used_memory_bytes=p.used_memory_bytes,
                    sm_ratio=sm_ratio,
                    memory_ratio=mem,
                    encoder_ratio=enc,
                    decoder_ratio=dec,
                    sm_seconds_total=tally.sm_seconds[key],
                    gpu_instance=p.gpu_instance,
                    compute_instance=p.compute_instance,
                    energy_joules_total=tally.energy_joules.get(key),
                    mps_client=p.mps_client,
                )
            )
        return tuple(out), tally.idle_energy_joules

    def _comm(self, nvml: NvmlBinding, pid: int) -> str:
        name = self._names.get(pid)
        if name is None:
            name = self._names[pid] = nvml.process_name(pid) or ""
        return name

    def _instances(
        self,
        nvml: NvmlBinding,
        migs: list[MigDevice],
        gpm: Mapping[int | None, Mapping[int, float]],
    ) -> tuple[GpuInstanceSample, ...]:
        out = []
        for gi in sorted({m.gpu_instance for m in migs}):
            first = next(m for m in migs if m.gpu_instance == gi)
            mem = nvml.memory(first.handle)
            out.append(
                GpuInstanceSample(
                    gpu_instance=gi,
                    memory_used_bytes=None if mem is None else mem.used,
                    memory_total_bytes=None if mem is None else mem.total,
                    **activity_ratios(gpm.get(gi, {})),
                )
            )
        return tuple(out)

    # --- rendering ----------------------------------------------------------------------

    def families(self, data: NvmlData, snapshot: Snapshot) -> Iterable[Metric]:
        """Metric families of one tick's NvmlData (pure)."""
        return nvml_families(data, snapshot)


# --- one GPU's sample (pure) ---------------------------------------------------------------


def _gpu_sample(
    info: DeviceInfo,
    r: DeviceReading,
    processes: tuple[GpuProcessSample, ...],
    gpm: Mapping[int, float],
    energy: float | None,
    idle_energy: float | None,
    instances: tuple[GpuInstanceSample, ...],
    migs: list[MigDevice],
) -> GpuSample:
    """One GPU's sample from its identity, this tick's readings and what was derived from them."""
    f = r.fields or {}
    mem = r.memory

    def mhz(v: int | None) -> float | None:
        return None if v is None else v * 1e6

    ecc = {
        ("correctable", "volatile"): f.get(FI_ECC_SBE_VOL_TOTAL),
        ("uncorrectable", "volatile"): f.get(FI_ECC_DBE_VOL_TOTAL),
        ("correctable", "aggregate"): f.get(FI_ECC_SBE_AGG_TOTAL),
        ("uncorrectable", "aggregate"): f.get(FI_ECC_DBE_AGG_TOTAL),
    }
    tx, rx = f.get(FI_NVLINK_THROUGHPUT_DATA_TX), f.get(FI_NVLINK_THROUGHPUT_DATA_RX)
    pcie_tx, pcie_rx = pcie_rates(gpm)
    return GpuSample(
        index=info.index,
        uuid=info.uuid,
        name=info.name,
        serial=info.serial,
        pci_bus_id=info.pci_bus_id,
        compute_capability=info.compute_capability,
        mig_mode=r.mig_mode,
        utilization_ratio=_ratio(r.utilization[0]) if r.utilization else None,
        memory_copy_utilization_ratio=_ratio(r.utilization[1]) if r.utilization else None,
        encoder_utilization_ratio=_ratio(r.encoder),
        decoder_utilization_ratio=_ratio(r.decoder),
        memory_used_bytes=None if mem is None else mem.used,
        memory_free_bytes=None if mem is None else mem.free,
        memory_reserved_bytes=None if mem is None else mem.reserved,
        memory_total_bytes=None if mem is None else mem.total,
        power_watts=None if r.power_mw is None else r.power_mw / 1000.0,
        power_limit_watts=None if r.power_limit_mw is None else r.power_limit_mw / 1000.0,
        energy_joules_total=energy,
        idle_energy_joules_total=idle_energy,
        temperature_celsius=None if r.temperature_c is None else float(r.temperature_c),
        memory_temperature_celsius=f.get(FI_MEMORY_TEMP),
        sm_clock_hertz=mhz(r.sm_clock_mhz),
        max_sm_clock_hertz=mhz(info.max_sm_clock_mhz),
        memory_clock_hertz=mhz(r.memory_clock_mhz),
        max_memory_clock_hertz=mhz(info.max_memory_clock_mhz),
        performance_state=r.performance_state,
        persistence_mode=r.persistence_mode,
        pcie_replays_total=f.get(FI_PCIE_REPLAY_COUNTER),
        pcie_transmit_bytes_total=f.get(FI_PCIE_COUNT_TX_BYTES),
        pcie_receive_bytes_total=f.get(FI_PCIE_COUNT_RX_BYTES),
        nvlink_transmit_bytes_total=None if tx is None else tx * 1024,
        nvlink_receive_bytes_total=None if rx is None else rx * 1024,
        remapped_rows_correctable_total=f.get(FI_REMAPPED_COR),
        remapped_rows_uncorrectable_total=f.get(FI_REMAPPED_UNC),
        remapped_rows_pending=f.get(FI_REMAPPED_PENDING),
        row_remap_failure=f.get(FI_REMAPPED_FAILURE),
        ecc_errors={k: v for k, v in ecc.items() if v is not None},
        clock_violation_seconds={
            name: f[fid] / 1e9 for fid, name in FI_PERF_POLICY.items() if fid in f
        },
        pcie_transmit_bytes_per_second=pcie_tx,
        pcie_receive_bytes_per_second=pcie_rx,
        clock_events=clock_event_names(r.clock_event_reasons),
        clock_events_supported=clock_event_names(info.supported_reasons)
        if r.clock_event_reasons is not None
        else frozenset(),
        processes=processes,
        gpu_instances=instances,
        mig_devices=tuple(
            MigDeviceSample(m.gpu_instance, m.compute_instance, m.uuid) for m in migs
        ),
        **activity_ratios(gpm),
    )


# --- families (pure) ------------------------------------------------------------------------

_D = Series[GpuSample]
_P = Series[GpuProcessSample]
_Gpm = Series[GpuSample | GpuInstanceSample]

# Rows: one GPU, labelled with its identity.
INFO_SERIES = (
    _D("nodeml_gpu_info", "gauge",
       "GPU identity (1 per GPU), from nvmlDeviceGet{Name,UUID,Serial,PciInfo,"
       "CudaComputeCapability,MigMode} and nvmlSystemGetDriverVersion.",
       lambda d: 1.0),
)  # fmt: skip

# Rows: one GPU, labelled gpu and uuid.
DEVICE_SERIES: tuple[Series[GpuSample], ...] = (
    _D("nodeml_gpu_utilization_ratio", "gauge",
       "Fraction of the last sample period a kernel ran, from nvmlDeviceGetUtilizationRates.gpu.",
       lambda d: d.utilization_ratio),
    _D("nodeml_gpu_memory_copy_utilization_ratio", "gauge",
       "Fraction of the last sample period device memory was read or written, "
       "from nvmlDeviceGetUtilizationRates.memory.",
       lambda d: d.memory_copy_utilization_ratio),
    _D("nodeml_gpu_encoder_utilization_ratio", "gauge",
       "Video encoder utilisation, from nvmlDeviceGetEncoderUtilization.",
       lambda d: d.encoder_utilization_ratio),
    _D("nodeml_gpu_decoder_utilization_ratio", "gauge",
       "Video decoder utilisation, from nvmlDeviceGetDecoderUtilization.",
       lambda d: d.decoder_utilization_ratio),
    _D("nodeml_gpu_memory_used_bytes", "gauge",
       "Framebuffer memory in use (reserved memory excluded where memory info v2 exists), "
       "from nvmlDeviceGetMemoryInfo.",
       lambda d: d.memory_used_bytes),
    _D("nodeml_gpu_memory_free_bytes", "gauge",
       "Framebuffer memory free, from nvmlDeviceGetMemoryInfo.",
       lambda d: d.memory_free_bytes),
    _D("nodeml_gpu_memory_reserved_bytes", "gauge",
       "Framebuffer memory reserved by the driver and firmware, from nvmlDeviceGetMemoryInfo_v2.",
       lambda d: d.memory_reserved_bytes),
    _D("nodeml_gpu_memory_total_bytes", "gauge",
       "Framebuffer memory size, from nvmlDeviceGetMemoryInfo.",
       lambda d: d.memory_total_bytes),
    _D("nodeml_gpu_power_watts", "gauge",
       "Board power draw, from nvmlDeviceGetPowerUsage.",
       lambda d: d.power_watts),
    _D("nodeml_gpu_power_limit_watts", "gauge",
       "Enforced power limit, from nvmlDeviceGetEnforcedPowerLimit.",
       lambda d: d.power_limit_watts),
    _D("nodeml_gpu_energy_joules_total", "counter",
       "Energy used since the driver loaded, from nvmlDeviceGetTotalEnergyConsumption "
       "(integrated from power on GPUs without the counter).",
       lambda d: d.energy_joules_total),
    _D("nodeml_gpu_idle_energy_joules_total", "counter",
       "The part of the GPU's energy since the agent started that no process's SM share "
       "accounts for (see nodeml_process_gpu_energy_joules_total).",
       lambda d: d.idle_energy_joules_total),
    _D("nodeml_gpu_temperature_celsius", "gauge",
       "GPU core temperature, from nvmlDeviceGetTemperature.",
       lambda d: d.temperature_celsius),
    _D("nodeml_gpu_memory_temperature_celsius", "gauge",
       "Memory (HBM) temperature, from field NVML_FI_DEV_MEMORY_TEMP.",
       lambda d: d.memory_temperature_celsius),
    _D("nodeml_gpu_sm_clock_hertz", "gauge",
       "Current SM clock, from nvmlDeviceGetClockInfo(NVML_CLOCK_SM).",
       lambda d: d.sm_clock_hertz),
    _D("nodeml_gpu_max_sm_clock_hertz", "gauge",
       "Maximum SM clock, from nvmlDeviceGetMaxClockInfo(NVML_CLOCK_SM).",
       lambda d: d.max_sm_clock_hertz),
    _D("nodeml_gpu_memory_clock_hertz", "gauge",
       "Current memory clock, from nvmlDeviceGetClockInfo(NVML_CLOCK_MEM).",
       lambda d: d.memory_clock_hertz),
    _D("nodeml_gpu_max_memory_clock_hertz", "gauge",
       "Maximum memory clock, from nvmlDeviceGetMaxClockInfo(NVML_CLOCK_MEM).",
       lambda d: d.max_memory_clock_hertz),
    _D("nodeml_gpu_performance_state", "gauge",
       "Performance state (0 is P0, the fastest), from nvmlDeviceGetPerformanceState.",
       lambda d: d.performance_state),
    _D("nodeml_gpu_persistence_mode", "gauge",
       "1 when persistence mode is on, from nvmlDeviceGetPersistenceMode.",
       lambda d: d.persistence_mode),
    _D("nodeml_gpu_pcie_replays_total", "counter",
       "PCIe replays since the driver loaded, from field NVML_FI_DEV_PCIE_REPLAY_COUNTER.",
       lambda d: d.pcie_replays_total),
    _D("nodeml_gpu_pcie_transmit_bytes_total", "counter",
       "Bytes the GPU sent over PCIe, from field NVML_FI_DEV_PCIE_COUNT_TX_BYTES.",
       lambda d: d.pcie_transmit_bytes_total),
    _D("nodeml_gpu_pcie_receive_bytes_total", "counter",
       "Bytes the GPU received over PCIe, from field NVML_FI_DEV_PCIE_COUNT_RX_BYTES.",
       lambda d: d.pcie_receive_bytes_total),
    _D("nodeml_gpu_nvlink_transmit_bytes_total", "counter",
       "Data bytes sent over all NVLinks, from field NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX.",
       lambda d: d.nvlink_transmit_bytes_total),
    _D("nodeml_gpu_nvlink_receive_bytes_total", "counter",
       "Data bytes received over all NVLinks, from field NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX.",
       lambda d: d.nvlink_receive_bytes_total),
    _D("nodeml_gpu_remapped_rows_pending", "gauge",
       "1 when a row remapping waits for a GPU reset, from field NVML_FI_DEV_REMAPPED_PENDING.",
       lambda d: d.remapped_rows_pending),
    _D("nodeml_gpu_row_remap_failure", "gauge",
       "1 when a row remapping failed, from field NVML_FI_DEV_REMAPPED_FAILURE.",
       lambda d: d.row_remap_failure),
)  # fmt: skip

# Rows: one GPU, labelled gpu and uuid; a series per error kind, counter, policy or reason.
LABELLED_DEVICE_SERIES: tuple[Series[GpuSample], ...] = (
    _D("nodeml_gpu_remapped_rows_total", "counter",
       "Rows remapped after memory errors, from fields NVML_FI_DEV_REMAPPED_COR/UNC.",
       labels=("error",),
       each=lambda d: ((("correctable",), d.remapped_rows_correctable_total),
                       (("uncorrectable",), d.remapped_rows_uncorrectable_total))),
    _D("nodeml_gpu_ecc_errors_total", "counter",
       "ECC errors, volatile (since driver load) and aggregate (lifetime), "
       "from fields NVML_FI_DEV_ECC_{SBE,DBE}_{VOL,AGG}_TOTAL.",
       labels=("error", "counter"), each=lambda d: sorted(d.ecc_errors.items())),
    _D("nodeml_gpu_clock_violation_seconds_total", "counter",
       "Seconds the clocks were held below target by a perf policy, "
       "from fields NVML_FI_DEV_PERF_POLICY_* (nvmlDeviceGetViolationStatus).",
       labels=("policy",),
       each=lambda d: (((p,), s) for p, s in sorted(d.clock_violation_seconds.items()))),
    _D("nodeml_gpu_clock_event_active", "gauge",
       "1 while a clock-event (throttle) reason holds the clocks down, "
       "from nvmlDeviceGetCurrentClocksEventReasons.",
       labels=("reason",),
       each=lambda d: (((r,), 1.0 if r in d.clock_events else 0.0)
                       for r in sorted(d.clock_events_supported | d.clock_events))),
)  # fmt: skip

# Rows: one XID code of one GPU, labelled gpu ("" when unknown), uuid and xid.
XID_SERIES = (
    Series[XidCount]("nodeml_gpu_xid_errors_total", "counter",
                     "XID critical errors seen since the agent started, from an NVML event set.",
                     lambda x: x.count),
)  # fmt: skip

# Rows: every GPU of the tick, labelled gpu and uuid: True for a lost one.
LOST_SERIES = (
    Series[bool]("nodeml_gpu_lost", "gauge",
                 "1 when NVML answered GpuIsLost/Unknown for this GPU in the last tick (its "
                 "other series are dropped), else 0.",
                 lambda lost: 1.0 if lost else 0.0),
)  # fmt: skip

# Rows: one GPU's verdict, labelled gpu and uuid; a series per check or action.
HEALTH_SERIES = (
    Series[GpuHealth]("nodeml_gpu_health", "gauge",
       "Health verdict per check: 0 pass, 1 warn, 2 fail (checks: " + " ".join(CHECKS) + "); "
       "a check that does not apply to the GPU (no NVLink, no fabric) is absent.",
       labels=("check",), each=lambda h: (((c,), h.checks[c]) for c in CHECKS if c in h.checks)),
    Series[GpuHealth]("nodeml_gpu_recommended_action", "gauge",
       "1 for the strongest pending action (" + " ".join(ACTIONS) + "), 0 for the others: "
       "from NVML's GPU recovery action, the XID catalog and the health checks.",
       labels=("action",), each=lambda h: (((a,), 1.0 if a == h.action else 0.0) for a in ACTIONS)),
)  # fmt: skip

# One row: the tick's NvmlData, no labels.
COUNT_SERIES = (
    Series[NvmlData]("nodeml_gpus", "gauge",
                     "GPUs NVML enumerates, from nvmlDeviceGetCount.", lambda d: d.gpus),
    Series[NvmlData]("nodeml_gpu_expected", "gauge",
                     "GPUs this node should have: --nvml.expected-gpus, else the count at the "
                     "agent's first successful tick.", lambda d: d.expected_gpus),
)  # fmt: skip

_GPM_ABSENT = " Absent where GPM is unsupported."

# Rows: one GPU labelled gpu and uuid, each followed by its MIG GPU instances (gpu_instance).
GPM_SERIES: tuple[Series[GpuSample | GpuInstanceSample], ...] = (
    _Gpm("nodeml_gpu_graphics_active_ratio", "gauge",
         "Fraction of time the graphics engine was active, from GPM "
         "NVML_GPM_METRIC_GRAPHICS_UTIL." + _GPM_ABSENT, lambda g: g.graphics_active_ratio),
    _Gpm("nodeml_gpu_sm_active_ratio", "gauge",
         "Fraction of SMs active, averaged over the tick, from GPM NVML_GPM_METRIC_SM_UTIL."
         + _GPM_ABSENT, lambda g: g.sm_active_ratio),
    _Gpm("nodeml_gpu_sm_occupancy_ratio", "gauge",
         "Resident warps over the SMs' maximum, from GPM NVML_GPM_METRIC_SM_OCCUPANCY."
         + _GPM_ABSENT, lambda g: g.sm_occupancy_ratio),
    _Gpm("nodeml_gpu_tensor_active_ratio", "gauge",
         "Fraction of time tensor cores were active, from GPM NVML_GPM_METRIC_ANY_TENSOR_UTIL."
         + _GPM_ABSENT, lambda g: g.tensor_active_ratio),
    _Gpm("nodeml_gpu_dram_active_ratio", "gauge",
         "Fraction of peak DRAM bandwidth used, from GPM NVML_GPM_METRIC_DRAM_BW_UTIL."
         + _GPM_ABSENT, lambda g: g.dram_active_ratio),
)  # fmt: skip

# Rows: one GPU, labelled gpu and uuid.
PCIE_RATE_SERIES = (
    _D("nodeml_gpu_pcie_transmit_bytes_per_second", "gauge",
       "PCIe bytes per second the GPU sent over the tick, from GPM "
       "NVML_GPM_METRIC_PCIE_TX_PER_SEC.", lambda d: d.pcie_transmit_bytes_per_second),
    _D("nodeml_gpu_pcie_receive_bytes_per_second", "gauge",
       "PCIe bytes per second the GPU received over the tick, from GPM "
       "NVML_GPM_METRIC_PCIE_RX_PER_SEC.", lambda d: d.pcie_receive_bytes_per_second),
)  # fmt: skip

# Rows: one MIG compute instance with its GPU, labelled gpu, uuid, gpu_instance and
# compute_instance.
MIG_DEVICE_SERIES = (
    Series[tuple[GpuSample, MigDeviceSample]](
        "nodeml_gpu_mig_device_info", "gauge",
        "MIG devices (1 per compute instance), from nvmlDeviceGetMigDeviceHandleByIndex.",
        labels=("mig_uuid",), each=lambda dm: (((dm[1].uuid,), 1.0),)),
    Series[tuple[GpuSample, MigDeviceSample]](
        "nodeml_gpu_compute_instance_memory_used_bytes", "gauge",
        "Memory held by the processes of a MIG compute instance "
        "(sum of nvmlDeviceGetComputeRunningProcesses on its MIG device).",
        lambda dm: _instance_memory(*dm)),
)  # fmt: skip

# Rows: one MIG GPU instance, labelled gpu, uuid and gpu_instance.
GPU_INSTANCE_SERIES = (
    Series[GpuInstanceSample](
        "nodeml_gpu_instance_memory_used_bytes", "gauge",
        "Memory in use in a MIG GPU instance, from nvmlDeviceGetMemoryInfo on its MIG device.",
        lambda gi: gi.memory_used_bytes),
    Series[GpuInstanceSample](
        "nodeml_gpu_instance_memory_total_bytes", "gauge",
        "Memory size of a MIG GPU instance, from nvmlDeviceGetMemoryInfo on its MIG device.",
        lambda gi: gi.memory_total_bytes),
)  # fmt: skip

# Rows: one process on one GPU (or MIG instance), labelled with the GPU, the instances, pid,
# comm and the workload.
PROCESS_SERIES: tuple[Series[GpuProcessSample], ...] = (
    _P("nodeml_process_gpu_mps_client_info", "gauge",
       "1 for a process that is an MPS client on this GPU, "
       "from nvmlDeviceGetMPSComputeRunningProcesses.",
       lambda p: 1.0 if p.mps_client else None),
    _P("nodeml_process_gpu_memory_bytes", "gauge",
       "GPU memory a process holds on a GPU, from nvmlDeviceGetComputeRunningProcesses.",
       lambda p: p.used_memory_bytes),
    _P("nodeml_process_gpu_sm_utilization_ratio", "gauge",
       "Fraction of the GPU's SM time a process used in the interval (0 without a sample), "
       "from nvmlDeviceGetProcessUtilization.",
       lambda p: p.sm_ratio),
    _P("nodeml_process_gpu_memory_copy_utilization_ratio", "gauge",
       "A process's share of device memory read/write time in the interval, "
       "from nvmlDeviceGetProcessUtilization.",
       lambda p: p.memory_ratio),
    _P("nodeml_process_gpu_encoder_utilization_ratio", "gauge",
       "A process's video encoder utilisation, from nvmlDeviceGetProcessUtilization.",
       lambda p: p.encoder_ratio),
    _P("nodeml_process_gpu_decoder_utilization_ratio", "gauge",
       "A process's video decoder utilisation, from nvmlDeviceGetProcessUtilization.",
       lambda p: p.decoder_ratio),
    _P("nodeml_process_gpu_sm_seconds_total", "counter",
       "SM-busy seconds of a process on a GPU since the agent first saw it (SM share "
       "integrated over ticks).",
       lambda p: None if p.sm_ratio is None else p.sm_seconds_total),
    _P("nodeml_process_gpu_energy_joules_total", "counter",
       "A process's part of the GPU's energy since the agent first saw it: each interval's "
       "energy split by SM share (no per-process power exists in NVML).",
       lambda p: p.energy_joules_total),
)  # fmt: skip


def _gpu(index: int, uuid: str) -> dict[str, str]:
    return {"gpu": str(index), "uuid": uuid}


def _identity(d: GpuSample, driver_version: str) -> dict[str, str]:
    mig = "" if d.mig_mode is None else {1: "enabled", 0: "disabled"}.get(d.mig_mode, "")
    return {
        **_gpu(d.index, d.uuid),
        "name": d.name,
        "driver_version": driver_version,
        "pci_bus_id": d.pci_bus_id,
        "serial": d.serial,
        "compute_capability": d.compute_capability,
        "mig_mode": mig,
    }


def _xid_labels(x: XidCount) -> dict[str, str]:
    # gpu is "" for the XID of a GPU that was never read and is no longer enumerated.
    return {"gpu": str(x.index) if x.index >= 0 else "", "uuid": x.uuid, "xid": str(x.xid)}


def _instance_memory(d: GpuSample, m: MigDeviceSample) -> float:
    """What the processes of MIG compute instance `m` of `d` hold."""
    return sum(
        p.used_memory_bytes or 0
        for p in d.processes
        if (p.gpu_instance, p.compute_instance) == (m.gpu_instance, m.compute_instance)
    )


def nvml_families(data: NvmlData, snapshot: Snapshot) -> list[Metric]:
    """Every nvml family for one tick (fresh objects; series of gone processes vanish)."""
    devices = [(_gpu(d.index, d.uuid), d) for d in data.devices]
    out = table_families(
        INFO_SERIES, [(_identity(d, data.driver_version), d) for d in data.devices]
    )
    out += table_families(DEVICE_SERIES, devices)
    out += table_families(LABELLED_DEVICE_SERIES, devices)
    out += table_families(XID_SERIES, [(_xid_labels(x), x) for x in data.xid_errors])
    lost = [(labels, False) for labels, _ in devices]
    out += table_families(LOST_SERIES, lost + [(_gpu(g.index, g.uuid), True) for g in data.lost])
    verdicts = sorted(data.health, key=lambda h: (h.index, h.uuid))
    out += table_families(HEALTH_SERIES, [(_gpu(h.index, h.uuid), h) for h in verdicts])
    out += table_families(COUNT_SERIES, [({}, data)])
    gpm: list[tuple[dict[str, str], GpuSample | GpuInstanceSample]] = []
    for labels, d in devices:
        gpm.append((labels, d))
        gpm += [(labels | {"gpu_instance": str(gi.gpu_instance)}, gi) for gi in d.gpu_instances]
    out += table_families(GPM_SERIES, gpm)
    out += table_families(PCIE_RATE_SERIES, devices)
    out += _mig_families(devices)
    out += table_families(PROCESS_SERIES, _process_rows(data, snapshot))
    return [f for f in out if f.samples]


def _mig_families(devices: list[tuple[dict[str, str], GpuSample]]) -> list[Metric]:
    mig_info, ci_used = table_families(
        MIG_DEVICE_SERIES,
        [
            (labels | {"gpu_instance": str(m.gpu_instance),
                       "compute_instance": str(m.compute_instance)}, (d, m))
            for labels, d in devices
            for m in d.mig_devices
        ],
    )  # fmt: skip
    gi_used, gi_total = table_families(
        GPU_INSTANCE_SERIES,
        [
            (labels | {"gpu_instance": str(gi.gpu_instance)}, gi)
            for labels, d in devices
            for gi in d.gpu_instances
        ],
    )
    return [mig_info, gi_used, gi_total, ci_used]  # the order of the exposition since 0.1


def _process_rows(
    data: NvmlData, snapshot: Snapshot
) -> list[tuple[dict[str, str], GpuProcessSample]]:
    rows = []
    # NVML names processes by argv[0]; prefer /proc's comm where the process collector ran,
    # so that process series of both collectors carry the same comm.
    procfs = snapshot[PROCESS]
    known = procfs.processes if procfs is not None else {}
    for d in data.devices:
        for p in d.processes:
            labels = {"gpu": str(d.index), "uuid": d.uuid}
            if p.gpu_instance is not None:
                labels["gpu_instance"] = str(p.gpu_instance)
            if p.compute_instance is not None:
                labels["compute_instance"] = str(p.compute_instance)
            labels["pid"] = str(p.pid)
            seen = known.get(p.pid)
            labels["comm"] = seen.comm if seen is not None and seen.comm else p.comm
            for key, value in snapshot.workload_labels(p.pid).items():
                labels.setdefault(key, value)
            rows.append((labels, p))
    return rows
