"""The nvml collector: per-GPU, per-MIG-instance and per-process GPU metrics from NVML alone."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from node_exporter_ml.collectors.base import BlockingCollector, CollectContext, NoDataError
from node_exporter_ml.exposition import add_sample
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.nvml.binding import (
    DeviceLost,
    Handle,
    NvmlBinding,
    NVMLError,
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
    GPM_ANY_TENSOR_UTIL,
    GPM_DRAM_BW_UTIL,
    GPM_GRAPHICS_UTIL,
    GPM_IDS,
    GPM_PCIE_RX_PER_SEC,
    GPM_PCIE_TX_PER_SEC,
    GPM_SM_OCCUPANCY,
    GPM_SM_UTIL,
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
from node_exporter_ml.nvml.health import (
    ACTIONS,
    CHECKS,
    NVLINK_ACTIVE,
    WATCHED_XIDS,
    GpuHealth,
    HealthInputs,
    assess,
    missing_gpu,
)
from node_exporter_ml.nvml.replay import Replay, ReplayError
from node_exporter_ml.options import Section, at_least, existing_file, flag
from node_exporter_ml.registry import register_collector
from node_exporter_ml.snapshot import (
    GpuInstanceSample,
    GpuProcessSample,
    GpuSample,
    LostGpu,
    MigDeviceSample,
    NvmlData,
    ProcessData,
    Snapshot,
    XidCount,
)

log = logging.getLogger(__name__)

INIT_RETRY_SECONDS = 60.0
GPM_MIN_WINDOW_SECONDS = 0.1  # DCGM's hard minimum between two GPM samples (NVIDIA/DCGM#310)
XID_WAIT_MS = 500
MIB = 1024 * 1024

_Shares = tuple[float, float, float, float]  # a process's SM, memory, encoder, decoder shares


@dataclass
class _GpuState:
    """What the collector remembers about one GPU between ticks."""

    handle: Handle
    info: DeviceInfo | None = None
    last_tick: float | None = None
    since_us: int | None = None
    sm_seconds: dict[tuple[int, int | None, int | None], float] = field(default_factory=dict)
    energy_j: float = 0.0
    energy_prev: float | None = None
    process_energy: dict[tuple[int, int | None, int | None], float] = field(default_factory=dict)
    idle_energy: float = 0.0
    gpm_prev: dict[int | None, tuple[Any, float]] = field(default_factory=dict)
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


def _gpm_ratios(values: Mapping[int, float]) -> dict[str, float | None]:
    def pct(metric: int) -> float | None:
        return _ratio(values.get(metric))

    return {
        "graphics_active_ratio": pct(GPM_GRAPHICS_UTIL),
        "sm_active_ratio": pct(GPM_SM_UTIL),
        "sm_occupancy_ratio": pct(GPM_SM_OCCUPANCY),
        "tensor_active_ratio": pct(GPM_ANY_TENSOR_UTIL),
        "dram_active_ratio": pct(GPM_DRAM_BW_UTIL),
    }


@register_collector("nvml", default_enabled=True, options=NVML_OPTIONS)
class NvmlCollector(BlockingCollector):
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
        self._xid: Counter[tuple[str, int]] = Counter()
        self._xid_seen: dict[tuple[str, int], float] = {}  # since the GPU's last reset
        self._expected: int | None = ctx.config.section(NVML_OPTIONS).expected_gpus
        self._known: dict[int, str] = {}  # index -> uuid of every GPU read since start
        self._xid_lock = threading.Lock()
        self._events_wanted = False
        self._event_thread: threading.Thread | None = None
        self._event_set: Any = None
        self._stop = threading.Event()
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
        self._events_wanted = True
        self._stop.clear()
        await asyncio.to_thread(self._try_start_events)

    async def stop(self) -> None:
        """Stop the XID thread and release NVML."""
        self._events_wanted = False
        self._stop.set()
        await asyncio.to_thread(self._stop_events)

    def _try_start_events(self) -> None:
        try:
            self._ensure_init()
        except NoDataError:
            return
        self._start_events()

    def _start_events(self) -> None:
        with self._lock:
            self._start_events_locked()

    def _start_events_locked(self) -> None:
        nvml = self._nvml
        if nvml is None or not self._events_wanted or self._event_thread is not None:
            return
        handles = [st.handle for st in self._gpus.values()]
        if not handles:
            try:
                handles = [h for i in range(nvml.device_count()) if (h := nvml.handle(i))]
            except (DeviceLost, NvmlUnavailable) as err:
                self._once.log(logging.WARNING, "xid", "XID events not watched: %s", err)
                return
        try:
            event_set = nvml.xid_event_set(handles)
        except (DeviceLost, NvmlUnavailable) as err:
            event_set = None
            self._once.log(logging.WARNING, "xid", "XID events not watched: %s", err)
        if event_set is None:
            self._events_wanted = False  # nothing supports them; do not retry every tick
            return
        self._event_set = event_set
        self._event_thread = threading.Thread(
            target=self._watch_events, args=(nvml, event_set), name="nodeml-nvml-xid", daemon=True
        )
        self._event_thread.start()

    def _watch_events(self, nvml: NvmlBinding, event_set: Any) -> None:
        while not self._stop.is_set():
            try:
                event = nvml.wait_xid(event_set, XID_WAIT_MS)
            except NvmlUnavailable as err:
                # NVML went away: end; the tick that re-initialises NVML starts a new watcher.
                self._once.log(logging.WARNING, "xid:wait", "XID watch stopped: %s", err)
                self._event_thread = None
                return
            except (DeviceLost, NVMLError) as err:
                self._once.log(logging.WARNING, "xid:wait", "waiting for XID events: %s", err)
                self._stop.wait(1.0)
                continue
            if event is not None:
                self._once.log(
                    logging.WARNING, f"xid:{event.uuid}:{event.xid}",
                    "GPU %s raised XID %d", event.uuid, event.xid,
                )  # fmt: skip
                with self._xid_lock:
                    self._xid[(event.uuid or "", event.xid)] += 1
                    self._xid_seen[(event.uuid or "", event.xid)] = self._clock()

    def _stop_events(self) -> None:
        thread, self._event_thread = self._event_thread, None
        if thread is not None:
            thread.join(timeout=XID_WAIT_MS / 1000 * 4)
        if self._nvml is not None:
            if self._event_set is not None:
                self._nvml.free_event_set(self._event_set)
            self._event_set = None
            self._nvml.shutdown()
            self._nvml = None
            self._gpus.clear()

    # --- one tick -----------------------------------------------------------------------

    def update(self, previous: Snapshot | None) -> NvmlData:
        """Read every GPU once; lost GPUs are listed, not fatal.

        Raises:
            NoDataError: NVML is not available (retried every 60 s).
        """
        nvml = self._ensure_init()
        # Counts taken before the GPUs are read: every XID this tick reports is one the
        # health verdicts below have seen too (an event may land in between).
        with self._xid_lock:
            xids = Counter(self._xid)
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
        if self._events_wanted and self._event_thread is None:
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

    def _xid_ages(self, uuid: str, now: float) -> dict[int, float]:
        with self._xid_lock:
            return {x: now - t for (u, x), t in self._xid_seen.items() if u == uuid}

    def _gpu_reset(self, uuid: str) -> None:
        """The GPU came back from a reset (or off the bus): its XIDs no longer stand."""
        with self._xid_lock:
            for key in [k for k in self._xid_seen if k[0] == uuid]:
                del self._xid_seen[key]

    def _lost_health(self, gpu: LostGpu) -> GpuHealth:
        now = self._clock()
        return assess(HealthInputs(gpu.index, gpu.uuid, now, True, self._xid_ages(gpu.uuid, now)))

    def _lost(self, index: int, err: DeviceLost) -> LostGpu:
        st = self._gpus.get(index)
        uuid = st.info.uuid if st is not None and st.info is not None else ""
        self._once.log(logging.ERROR, f"lost:{index}", "GPU %d (%s) is lost: %s", index, uuid, err)
        if st is not None:
            st.gpm_prev.clear()  # GPM samples of a lost GPU are not worth freeing through it
            st.last_tick = None
            st.since_us = None
            st.energy_prev = None  # what it used while lost is nobody's to attribute
            st.handle = None
        return LostGpu(index, uuid, str(err))

    def _xid_counts(
        self, xids: Counter[tuple[str, int]], devices: list[GpuSample], lost: list[LostGpu]
    ) -> tuple[XidCount, ...]:
        """`xids` (every XID counted so far), and a 0 for each watched XID of each GPU of this tick.

        Counters that exist from the start make `increase()` see the first event
        (dcgm-exporter#646: a series born at 1 reads as no increase).
        """
        # Every GPU read this tick has its info in _gpus, which wins the merge anyway.
        index_of = {u: i for i, u in self._known.items()}  # GPUs gone from the bus too
        index_of |= {g.uuid: g.index for g in lost}
        index_of |= {st.info.uuid: i for i, st in self._gpus.items() if st.info is not None}
        uuids = [g.uuid for g in devices] + [g.uuid for g in lost]
        counts: Counter[tuple[str, int]] = Counter(
            {(u, xid): 0 for u in uuids if u for xid in WATCHED_XIDS}
        )
        counts.update(xids)
        return tuple(
            XidCount(index_of.get(u, -1), u, xid, n) for (u, xid), n in sorted(counts.items())
        )

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
        energy = self._energy(st, reading, dt)
        processes, idle = self._processes(nvml, st, h, procs, dt, energy, migrated=bool(migs))
        gpm = self._gpm(nvml, st, h, info, migs, now)
        st.last_tick = now
        instances = self._instances(nvml, migs, gpm)
        sample = self._sample(
            info, reading, processes, gpm.get(None, {}), energy, idle, instances, migs
        )
        # Only a whole successful read clears a lost GPU: a GPU that answers its handle but
        # fails its readings stays lost, logged once, not "lost"/"back" every tick.
        if self._once.forget(f"lost:{index}"):
            log.info("GPU %d (%s) answers again", index, info.uuid)
            self._gpu_reset(info.uuid)
        return sample, self._health(st, info, reading, now)

    def _health(
        self, st: _GpuState, info: DeviceInfo, reading: DeviceReading, now: float
    ) -> GpuHealth:
        prev = st.health_prev
        dbe = (reading.fields or {}).get(FI_ECC_DBE_VOL_TOTAL)
        before = prev.dbe_volatile if prev is not None else None
        if dbe is not None and before is not None and dbe < before:
            self._gpu_reset(info.uuid)  # volatile ECC counts start over when the GPU resets
        inputs = health_inputs(
            info,
            reading,
            at=now,
            xid_ages=self._xid_ages(info.uuid, now),
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
        for the whole interval is not returned and reads 0, never its old value.

        Energy: each interval's energy is split by SM share (shares scaled down when they add
        up to more than 1); the rest, energy x (1 - busy), goes to the GPU's idle counter, so
        processes plus idle add up to the GPU's counter. Without per-process shares (MIG)
        there is no split.
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
        rows: dict[tuple[int, int | None, int | None], tuple[ProcessInfo, _Shares | None]] = {}
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
        prev, st.energy_prev = st.energy_prev, energy
        split = energy is not None and util is not None
        delta = 0.0 if energy is None or prev is None or energy < prev else energy - prev
        busy = sum(shares[0] for _, shares in rows.values() if shares)
        scale = delta / busy if busy > 1.0 else delta
        out = []
        for key, (p, shares) in rows.items():
            sm, mem, enc, dec = shares or (None, None, None, None)
            if sm is not None:
                st.sm_seconds[key] = st.sm_seconds.get(key, 0.0) + min(sm, 1.0) * dt
            joules = None
            if split and sm is not None:
                joules = st.process_energy[key] = st.process_energy.get(key, 0.0) + sm * scale
            out.append(
                GpuProcessSample(
                    pid=p.pid,
                    comm=self._comm(nvml, p.pid),
                    used_memory_bytes=p.used_memory_bytes,
                    sm_ratio=sm,
                    memory_ratio=mem,
                    encoder_ratio=enc,
                    decoder_ratio=dec,
                    sm_seconds_total=st.sm_seconds.get(key, 0.0),
                    gpu_instance=p.gpu_instance,
                    compute_instance=p.compute_instance,
                    energy_joules_total=joules,
                    mps_client=p.mps_client,
                )
            )
        for state in (st.sm_seconds, st.process_energy):
            for key in [k for k in state if k not in rows]:
                del state[key]
        if not split:
            return tuple(out), None
        st.idle_energy += delta * (1.0 - min(1.0, busy))
        return tuple(out), st.idle_energy

    def _comm(self, nvml: NvmlBinding, pid: int) -> str:
        name = self._names.get(pid)
        if name is None:
            name = self._names[pid] = nvml.process_name(pid) or ""
        return name

    def _gpm(
        self,
        nvml: NvmlBinding,
        st: _GpuState,
        h: Handle,
        info: DeviceInfo,
        migs: list[MigDevice],
        now: float,
    ) -> dict[int | None, dict[int, float]]:
        """GPM metrics between the previous tick's sample and one taken now, per scope.

        Scope None is the whole GPU; under MIG the scopes are the GPU instances instead.
        """
        if not info.gpm_supported:
            return {}
        scopes: list[int | None] = [None]
        if migs:
            scopes = [*sorted({m.gpu_instance for m in migs})]
        out: dict[int | None, dict[int, float]] = {}
        for scope in scopes:
            prev = st.gpm_prev.get(scope)
            if prev is not None and now - prev[1] < GPM_MIN_WINDOW_SECONDS:
                continue
            sample = nvml.gpm_sample(h, scope)
            if sample is None:
                continue
            if prev is not None:
                out[scope] = nvml.gpm_metrics(prev[0], sample, GPM_IDS)
                nvml.gpm_free(prev[0])
            st.gpm_prev[scope] = (sample, now)
        for scope in [s for s in st.gpm_prev if s not in scopes]:
            nvml.gpm_free(st.gpm_prev.pop(scope)[0])
        return out

    def _energy(self, st: _GpuState, reading: DeviceReading, dt: float) -> float | None:
        if reading.energy_mj is not None:
            return reading.energy_mj / 1000.0
        if reading.power_mw is None:
            return None
        # No energy counter (before Volta): integrate the power readings instead.
        st.energy_j += reading.power_mw / 1000.0 * dt
        return st.energy_j

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
                    **_gpm_ratios(gpm.get(gi, {})),
                )
            )
        return tuple(out)

    def _sample(
        self,
        info: DeviceInfo,
        r: DeviceReading,
        processes: tuple[GpuProcessSample, ...],
        gpm: Mapping[int, float],
        energy: float | None,
        idle_energy: float | None,
        instances: tuple[GpuInstanceSample, ...],
        migs: list[MigDevice],
    ) -> GpuSample:
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
        pcie_tx, pcie_rx = gpm.get(GPM_PCIE_TX_PER_SEC), gpm.get(GPM_PCIE_RX_PER_SEC)
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
            pcie_transmit_bytes_per_second=None if pcie_tx is None else pcie_tx * MIB,
            pcie_receive_bytes_per_second=None if pcie_rx is None else pcie_rx * MIB,
            clock_events=clock_event_names(r.clock_event_reasons),
            clock_events_supported=clock_event_names(info.supported_reasons)
            if r.clock_event_reasons is not None
            else frozenset(),
            processes=processes,
            gpu_instances=instances,
            mig_devices=tuple(
                MigDeviceSample(m.gpu_instance, m.compute_instance, m.uuid) for m in migs
            ),
            **_gpm_ratios(gpm),
        )

    # --- rendering ----------------------------------------------------------------------

    def families(self, data: object, snapshot: Snapshot) -> Iterable[Metric]:
        """Metric families of one tick's NvmlData (pure)."""
        if not isinstance(data, NvmlData):
            return []
        return nvml_families(data, snapshot)


# --- families (pure) ------------------------------------------------------------------------

_GPU = ["gpu", "uuid"]

# (attribute of GpuSample, metric name, help, is_counter)
_DEVICE_SERIES: tuple[tuple[str, str, str, bool], ...] = (
    ("utilization_ratio", "nodeml_gpu_utilization_ratio",
     "Fraction of the last sample period a kernel ran, from nvmlDeviceGetUtilizationRates.gpu.",
     False),
    ("memory_copy_utilization_ratio", "nodeml_gpu_memory_copy_utilization_ratio",
     "Fraction of the last sample period device memory was read or written, "
     "from nvmlDeviceGetUtilizationRates.memory.", False),
    ("encoder_utilization_ratio", "nodeml_gpu_encoder_utilization_ratio",
     "Video encoder utilisation, from nvmlDeviceGetEncoderUtilization.", False),
    ("decoder_utilization_ratio", "nodeml_gpu_decoder_utilization_ratio",
     "Video decoder utilisation, from nvmlDeviceGetDecoderUtilization.", False),
    ("memory_used_bytes", "nodeml_gpu_memory_used_bytes",
     "Framebuffer memory in use (reserved memory excluded where memory info v2 exists), "
     "from nvmlDeviceGetMemoryInfo.", False),
    ("memory_free_bytes", "nodeml_gpu_memory_free_bytes",
     "Framebuffer memory free, from nvmlDeviceGetMemoryInfo.", False),
    ("memory_reserved_bytes", "nodeml_gpu_memory_reserved_bytes",
     "Framebuffer memory reserved by the driver and firmware, from nvmlDeviceGetMemoryInfo_v2.",
     False),
    ("memory_total_bytes", "nodeml_gpu_memory_total_bytes",
     "Framebuffer memory size, from nvmlDeviceGetMemoryInfo.", False),
    ("power_watts", "nodeml_gpu_power_watts",
     "Board power draw, from nvmlDeviceGetPowerUsage.", False),
    ("power_limit_watts", "nodeml_gpu_power_limit_watts",
     "Enforced power limit, from nvmlDeviceGetEnforcedPowerLimit.", False),
    ("energy_joules_total", "nodeml_gpu_energy_joules_total",
     "Energy used since the driver loaded, from nvmlDeviceGetTotalEnergyConsumption "
     "(integrated from power on GPUs without the counter).", True),
    ("idle_energy_joules_total", "nodeml_gpu_idle_energy_joules_total",
     "The part of the GPU's energy since the agent started that no process's SM share "
     "accounts for (see nodeml_process_gpu_energy_joules_total).", True),
    ("temperature_celsius", "nodeml_gpu_temperature_celsius",
     "GPU core temperature, from nvmlDeviceGetTemperature.", False),
    ("memory_temperature_celsius", "nodeml_gpu_memory_temperature_celsius",
     "Memory (HBM) temperature, from field NVML_FI_DEV_MEMORY_TEMP.", False),
    ("sm_clock_hertz", "nodeml_gpu_sm_clock_hertz",
     "Current SM clock, from nvmlDeviceGetClockInfo(NVML_CLOCK_SM).", False),
    ("max_sm_clock_hertz", "nodeml_gpu_max_sm_clock_hertz",
     "Maximum SM clock, from nvmlDeviceGetMaxClockInfo(NVML_CLOCK_SM).", False),
    ("memory_clock_hertz", "nodeml_gpu_memory_clock_hertz",
     "Current memory clock, from nvmlDeviceGetClockInfo(NVML_CLOCK_MEM).", False),
    ("max_memory_clock_hertz", "nodeml_gpu_max_memory_clock_hertz",
     "Maximum memory clock, from nvmlDeviceGetMaxClockInfo(NVML_CLOCK_MEM).", False),
    ("performance_state", "nodeml_gpu_performance_state",
     "Performance state (0 is P0, the fastest), from nvmlDeviceGetPerformanceState.", False),
    ("persistence_mode", "nodeml_gpu_persistence_mode",
     "1 when persistence mode is on, from nvmlDeviceGetPersistenceMode.", False),
    ("pcie_replays_total", "nodeml_gpu_pcie_replays_total",
     "PCIe replays since the driver loaded, from field NVML_FI_DEV_PCIE_REPLAY_COUNTER.", True),
    ("pcie_transmit_bytes_total", "nodeml_gpu_pcie_transmit_bytes_total",
     "Bytes the GPU sent over PCIe, from field NVML_FI_DEV_PCIE_COUNT_TX_BYTES.", True),
    ("pcie_receive_bytes_total", "nodeml_gpu_pcie_receive_bytes_total",
     "Bytes the GPU received over PCIe, from field NVML_FI_DEV_PCIE_COUNT_RX_BYTES.", True),
    ("nvlink_transmit_bytes_total", "nodeml_gpu_nvlink_transmit_bytes_total",
     "Data bytes sent over all NVLinks, from field NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX.", True),
    ("nvlink_receive_bytes_total", "nodeml_gpu_nvlink_receive_bytes_total",
     "Data bytes received over all NVLinks, from field NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX.",
     True),
    ("remapped_rows_pending", "nodeml_gpu_remapped_rows_pending",
     "1 when a row remapping waits for a GPU reset, from field NVML_FI_DEV_REMAPPED_PENDING.",
     False),
    ("row_remap_failure", "nodeml_gpu_row_remap_failure",
     "1 when a row remapping failed, from field NVML_FI_DEV_REMAPPED_FAILURE.", False),
)  # fmt: skip

# (attribute of GpuSample / GpuInstanceSample, metric name, help); MIG instances get gpu_instance.
_GPM_SERIES: tuple[tuple[str, str, str], ...] = (
    ("graphics_active_ratio", "nodeml_gpu_graphics_active_ratio",
     "Fraction of time the graphics engine was active, from GPM NVML_GPM_METRIC_GRAPHICS_UTIL."),
    ("sm_active_ratio", "nodeml_gpu_sm_active_ratio",
     "Fraction of SMs active, averaged over the tick, from GPM NVML_GPM_METRIC_SM_UTIL."),
    ("sm_occupancy_ratio", "nodeml_gpu_sm_occupancy_ratio",
     "Resident warps over the SMs' maximum, from GPM NVML_GPM_METRIC_SM_OCCUPANCY."),
    ("tensor_active_ratio", "nodeml_gpu_tensor_active_ratio",
     "Fraction of time tensor cores were active, from GPM NVML_GPM_METRIC_ANY_TENSOR_UTIL."),
    ("dram_active_ratio", "nodeml_gpu_dram_active_ratio",
     "Fraction of peak DRAM bandwidth used, from GPM NVML_GPM_METRIC_DRAM_BW_UTIL."),
)  # fmt: skip

_PROCESS_SERIES: tuple[tuple[str, str, str, bool], ...] = (
    ("used_memory_bytes", "nodeml_process_gpu_memory_bytes",
     "GPU memory a process holds on a GPU, from nvmlDeviceGetComputeRunningProcesses.", False),
    ("sm_ratio", "nodeml_process_gpu_sm_utilization_ratio",
     "Fraction of the GPU's SM time a process used in the interval (0 without a sample), "
     "from nvmlDeviceGetProcessUtilization.", False),
    ("memory_ratio", "nodeml_process_gpu_memory_copy_utilization_ratio",
     "A process's share of device memory read/write time in the interval, "
     "from nvmlDeviceGetProcessUtilization.", False),
    ("encoder_ratio", "nodeml_process_gpu_encoder_utilization_ratio",
     "A process's video encoder utilisation, from nvmlDeviceGetProcessUtilization.", False),
    ("decoder_ratio", "nodeml_process_gpu_decoder_utilization_ratio",
     "A process's video decoder utilisation, from nvmlDeviceGetProcessUtilization.", False),
    ("sm_seconds_total", "nodeml_process_gpu_sm_seconds_total",
     "SM-busy seconds of a process on a GPU since the agent first saw it (SM share "
     "integrated over ticks).", True),
    ("energy_joules_total", "nodeml_process_gpu_energy_joules_total",
     "A process's part of the GPU's energy since the agent first saw it: each interval's "
     "energy split by SM share (no per-process power exists in NVML).", True),
)  # fmt: skip


def _family(
    name: str, help_text: str, labels: list[str], counter: bool = False
) -> GaugeMetricFamily | CounterMetricFamily:
    if counter:
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


def nvml_families(data: NvmlData, snapshot: Snapshot) -> list[Metric]:
    """Every nvml family for one tick (fresh objects; series of gone processes vanish)."""
    out: list[Metric] = []
    info = GaugeMetricFamily(
        "nodeml_gpu_info",
        "GPU identity (1 per GPU), from nvmlDeviceGet{Name,UUID,Serial,PciInfo,"
        "CudaComputeCapability,MigMode} and nvmlSystemGetDriverVersion.",
        labels=[*_GPU, "name", "driver_version", "pci_bus_id", "serial",
                "compute_capability", "mig_mode"],
    )  # fmt: skip
    mig_names = {1: "enabled", 0: "disabled"}
    for d in data.devices:
        info.add_metric(
            [str(d.index), d.uuid, d.name, data.driver_version, d.pci_bus_id, d.serial,
             d.compute_capability, mig_names.get(d.mig_mode, "") if d.mig_mode is not None
             else ""],
            1.0,
        )  # fmt: skip
    out.append(info)
    for attr, name, help_text, counter in _DEVICE_SERIES:
        fam = _family(name, help_text, _GPU, counter)
        for d in data.devices:
            value = getattr(d, attr)
            if value is not None:
                fam.add_metric([str(d.index), d.uuid], float(value))
        out.append(fam)
    out.extend(_labelled_device_families(data))
    out.extend(health_families(data))
    out.extend(_gpm_families(data))
    out.extend(_mig_families(data))
    out.extend(_process_families(data, snapshot))
    return [f for f in out if f.samples]


def _labelled_device_families(data: NvmlData) -> list[Metric]:
    remapped = CounterMetricFamily(
        "nodeml_gpu_remapped_rows",
        "Rows remapped after memory errors, from fields NVML_FI_DEV_REMAPPED_COR/UNC.",
        labels=[*_GPU, "error"],
    )
    ecc = CounterMetricFamily(
        "nodeml_gpu_ecc_errors",
        "ECC errors, volatile (since driver load) and aggregate (lifetime), "
        "from fields NVML_FI_DEV_ECC_{SBE,DBE}_{VOL,AGG}_TOTAL.",
        labels=[*_GPU, "error", "counter"],
    )
    violation = CounterMetricFamily(
        "nodeml_gpu_clock_violation_seconds",
        "Seconds the clocks were held below target by a perf policy, "
        "from fields NVML_FI_DEV_PERF_POLICY_* (nvmlDeviceGetViolationStatus).",
        labels=[*_GPU, "policy"],
    )
    events = GaugeMetricFamily(
        "nodeml_gpu_clock_event_active",
        "1 while a clock-event (throttle) reason holds the clocks down, "
        "from nvmlDeviceGetCurrentClocksEventReasons.",
        labels=[*_GPU, "reason"],
    )
    xid = CounterMetricFamily(
        "nodeml_gpu_xid_errors",
        "XID critical errors seen since the agent started, from an NVML event set.",
        labels=[*_GPU, "xid"],
    )
    lost = GaugeMetricFamily(
        "nodeml_gpu_lost",
        "1 when NVML answered GpuIsLost/Unknown for this GPU in the last tick (its other "
        "series are dropped), else 0.",
        labels=_GPU,
    )
    for d in data.devices:
        gpu = [str(d.index), d.uuid]
        for error, attr in (
            ("correctable", d.remapped_rows_correctable_total),
            ("uncorrectable", d.remapped_rows_uncorrectable_total),
        ):
            if attr is not None:
                remapped.add_metric([*gpu, error], attr)
        for (error, counter), value in sorted(d.ecc_errors.items()):
            ecc.add_metric([*gpu, error, counter], value)
        for policy, seconds in sorted(d.clock_violation_seconds.items()):
            violation.add_metric([*gpu, policy], seconds)
        for reason in sorted(d.clock_events_supported | d.clock_events):
            events.add_metric([*gpu, reason], 1.0 if reason in d.clock_events else 0.0)
        lost.add_metric(gpu, 0.0)
    for g in data.lost:
        lost.add_metric([str(g.index), g.uuid], 1.0)
    for x in data.xid_errors:
        xid.add_metric([str(x.index) if x.index >= 0 else "", x.uuid, str(x.xid)], x.count)
    return [remapped, ecc, violation, events, xid, lost]


def health_families(data: NvmlData) -> list[Metric]:
    """nodeml_gpu_health, nodeml_gpu_recommended_action, nodeml_gpus, nodeml_gpu_expected."""
    health = GaugeMetricFamily(
        "nodeml_gpu_health",
        "Health verdict per check: 0 pass, 1 warn, 2 fail (checks: " + " ".join(CHECKS) + "); "
        "a check that does not apply to the GPU (no NVLink, no fabric) is absent.",
        labels=[*_GPU, "check"],
    )
    action = GaugeMetricFamily(
        "nodeml_gpu_recommended_action",
        "1 for the strongest pending action (" + " ".join(ACTIONS) + "), 0 for the others: "
        "from NVML's GPU recovery action, the XID catalog and the health checks.",
        labels=[*_GPU, "action"],
    )
    for h in sorted(data.health, key=lambda h: (h.index, h.uuid)):
        gpu = [str(h.index), h.uuid]
        for check in CHECKS:
            if check in h.checks:
                health.add_metric([*gpu, check], h.checks[check])
        for name in ACTIONS:
            action.add_metric([*gpu, name], 1.0 if name == h.action else 0.0)
    out: list[Metric] = [health, action]
    if data.gpus is not None:
        out.append(
            GaugeMetricFamily(
                "nodeml_gpus", "GPUs NVML enumerates, from nvmlDeviceGetCount.", value=data.gpus
            )
        )
    if data.expected_gpus is not None:
        out.append(
            GaugeMetricFamily(
                "nodeml_gpu_expected",
                "GPUs this node should have: --nvml.expected-gpus, else the count at the "
                "agent's first successful tick.",
                value=data.expected_gpus,
            )
        )
    return out


def _gpm_families(data: NvmlData) -> list[Metric]:
    out: list[Metric] = []
    for attr, name, help_text in _GPM_SERIES:
        fam = GaugeMetricFamily(name, help_text + " Absent where GPM is unsupported.")
        for d in data.devices:
            gpu = {"gpu": str(d.index), "uuid": d.uuid}
            value = getattr(d, attr)
            if value is not None:
                add_sample(fam, gpu, value)
            for gi in d.gpu_instances:
                value = getattr(gi, attr)
                if value is not None:
                    add_sample(fam, {**gpu, "gpu_instance": str(gi.gpu_instance)}, value)
        out.append(fam)
    for attr, name, what in (
        ("pcie_transmit_bytes_per_second", "nodeml_gpu_pcie_transmit_bytes_per_second", "sent"),
        ("pcie_receive_bytes_per_second", "nodeml_gpu_pcie_receive_bytes_per_second", "received"),
    ):
        fam = GaugeMetricFamily(
            name,
            f"PCIe bytes per second the GPU {what} over the tick, from GPM "
            f"NVML_GPM_METRIC_PCIE_{'TX' if what == 'sent' else 'RX'}_PER_SEC.",
            labels=_GPU,
        )
        for d in data.devices:
            value = getattr(d, attr)
            if value is not None:
                fam.add_metric([str(d.index), d.uuid], value)
        out.append(fam)
    return out


def _mig_families(data: NvmlData) -> list[Metric]:
    mig_info = GaugeMetricFamily(
        "nodeml_gpu_mig_device_info",
        "MIG devices (1 per compute instance), from nvmlDeviceGetMigDeviceHandleByIndex.",
        labels=[*_GPU, "gpu_instance", "compute_instance", "mig_uuid"],
    )
    gi_used = GaugeMetricFamily(
        "nodeml_gpu_instance_memory_used_bytes",
        "Memory in use in a MIG GPU instance, from nvmlDeviceGetMemoryInfo on its MIG device.",
        labels=[*_GPU, "gpu_instance"],
    )
    gi_total = GaugeMetricFamily(
        "nodeml_gpu_instance_memory_total_bytes",
        "Memory size of a MIG GPU instance, from nvmlDeviceGetMemoryInfo on its MIG device.",
        labels=[*_GPU, "gpu_instance"],
    )
    ci_used = GaugeMetricFamily(
        "nodeml_gpu_compute_instance_memory_used_bytes",
        "Memory held by the processes of a MIG compute instance "
        "(sum of nvmlDeviceGetComputeRunningProcesses on its MIG device).",
        labels=[*_GPU, "gpu_instance", "compute_instance"],
    )
    for d in data.devices:
        gpu = [str(d.index), d.uuid]
        for m in d.mig_devices:
            mig_info.add_metric([*gpu, str(m.gpu_instance), str(m.compute_instance), m.uuid], 1.0)
            ci_used.add_metric(
                [*gpu, str(m.gpu_instance), str(m.compute_instance)],
                sum(
                    p.used_memory_bytes or 0
                    for p in d.processes
                    if (p.gpu_instance, p.compute_instance) == (m.gpu_instance, m.compute_instance)
                ),
            )
        for gi in d.gpu_instances:
            if gi.memory_used_bytes is not None:
                gi_used.add_metric([*gpu, str(gi.gpu_instance)], gi.memory_used_bytes)
            if gi.memory_total_bytes is not None:
                gi_total.add_metric([*gpu, str(gi.gpu_instance)], gi.memory_total_bytes)
    return [mig_info, gi_used, gi_total, ci_used]


def _process_families(data: NvmlData, snapshot: Snapshot) -> list[Metric]:
    out: list[Metric] = []
    rows = []
    # NVML names processes by argv[0]; prefer /proc's comm where the process collector ran,
    # so that process series of both collectors carry the same comm.
    procfs = snapshot.data("process", ProcessData)
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
    mps = GaugeMetricFamily(
        "nodeml_process_gpu_mps_client_info",
        "1 for a process that is an MPS client on this GPU, "
        "from nvmlDeviceGetMPSComputeRunningProcesses.",
    )
    for labels, p in rows:
        if p.mps_client:
            add_sample(mps, labels, 1.0)
    out.append(mps)
    for attr, name, help_text, counter in _PROCESS_SERIES:
        fam = _family(name, help_text, [], counter)
        for labels, p in rows:
            value = getattr(p, attr)
            if attr == "sm_seconds_total" and p.sm_ratio is None:
                continue  # no per-process utilisation here (MIG): nothing was integrated
            if value is not None:
                add_sample(fam, labels, value)
        out.append(fam)
    return out
