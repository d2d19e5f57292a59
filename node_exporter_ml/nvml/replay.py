"""A stand-in for the pynvml module, driven by a `nodeml-nvml-replay/1` file.

`Replay` offers the pynvml functions the binding calls, with the same arguments, return
shapes and exception classes. Frame `i` is served from `i * frame_period_s` seconds after
the replay was created (on its clock) until the next frame; after the last frame it stays
there. A key missing from a frame makes its call raise NotSupported, as the format says.
Extensions (all optional, see docs/nvml.md): `missing_functions`, `init_error`,
`process_names`, per-device `mig_devices`/`supported_event_types`, per-frame `events`
(XID) and `device_count`, and per-frame-device `field_values` (per-link fields as
"id:link"), `fabric`, `encoder_utilization`, `decoder_utilization`, `performance_state`,
`mig`, `gpm_instances`, `lost` and `errors`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from node_exporter_ml.nvml.binding import (
    CLOCK_GRAPHICS,
    CLOCK_MEM,
    CLOCK_SM,
    ERROR_CODES,
    NOT_AVAILABLE_U32,
    XID_EVENT,
    NvmlUnavailable,
    nvml_error,
)
from node_exporter_ml.nvml.devices import (
    GPM_ANY_TENSOR_UTIL,
    GPM_DRAM_BW_UTIL,
    GPM_GRAPHICS_UTIL,
    GPM_PCIE_RX_PER_SEC,
    GPM_PCIE_TX_PER_SEC,
    GPM_SM_OCCUPANCY,
    GPM_SM_UTIL,
)

FORMAT = "nodeml-nvml-replay/1"
_CLOCK_KEYS = {CLOCK_SM: "sm", CLOCK_MEM: "mem", CLOCK_GRAPHICS: "graphics"}
# GPM metric ids (NVML_GPM_METRIC_*) -> the keys of a frame's `gpm` object.
GPM_KEYS = {
    GPM_GRAPHICS_UTIL: "graphics_util",
    GPM_SM_UTIL: "sm_util",
    GPM_SM_OCCUPANCY: "sm_occupancy",
    GPM_ANY_TENSOR_UTIL: "tensor_util",
    GPM_DRAM_BW_UTIL: "dram_bw_util",
    GPM_PCIE_TX_PER_SEC: "pcie_tx_mib_per_s",
    GPM_PCIE_RX_PER_SEC: "pcie_rx_mib_per_s",
}
_NOT_SUPPORTED = ERROR_CODES["NotSupported"]
_EVENT_POLL_S = 0.02


class ReplayError(NvmlUnavailable):
    """The replay file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class _Device:
    index: int


@dataclass(frozen=True, slots=True)
class _MigDevice:
    index: int
    slot: int


@dataclass(slots=True)
class _GpmSample:
    device: int = -1
    gpu_instance: int | None = None
    frame: int = -1


@dataclass(slots=True)
class _EventSet:
    first_frame: int
    devices: set[int] = field(default_factory=set)
    delivered_frame: int = -1
    queue: list[tuple[int, int]] = field(default_factory=list)
    freed: bool = False


class _GpmMetricsGet:
    """The shape of pynvml's c_nvmlGpmMetricsGet_t, as the binding fills and reads it."""

    def __init__(self) -> None:
        self.version = 0
        self.numMetrics = 0
        self.sample1: Any = None
        self.sample2: Any = None
        self.metrics = [
            SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0) for _ in range(len(GPM_KEYS) * 4)
        ]


class _FabricInfo:
    """The fields of pynvml's c_nvmlGpuFabricInfo_v3_t that the binding reads."""

    def __init__(self) -> None:
        self.state = 0
        self.status = 0
        self.healthMask = 0
        self.healthSummary = 0


def _fail(source: str, where: str, expected: str) -> ReplayError:
    return ReplayError(f"{source}: {where}: expected {expected}")


def _clock_of(clocks: Mapping[str, Any], clock: int) -> int:
    """The MHz of `clock` (CLOCK_SM, ...) in a recorded {"sm": ..., "mem": ...} object."""
    key = _CLOCK_KEYS.get(clock)
    if key is None or key not in clocks:
        raise nvml_error("NotSupported")
    return int(clocks[key])


def _validate(data: object, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _fail(source, "top level", "a JSON object")
    if data.get("format") != FORMAT:
        raise _fail(source, "format", f'"{FORMAT}", got {data.get("format")!r}')
    devices = data.get("devices")
    if not isinstance(devices, list) or not all(isinstance(d, dict) for d in devices):
        raise _fail(source, "devices", "a list of objects")
    for i, d in enumerate(devices):
        if not isinstance(d.get("uuid"), str):
            raise _fail(source, f"devices[{i}].uuid", "a string")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise _fail(source, "frames", "a non-empty list")
    for i, f in enumerate(frames):
        if not isinstance(f, dict) or not isinstance(f.get("devices"), list):
            raise _fail(source, f"frames[{i}]", 'an object with a "devices" list')
        if len(f["devices"]) != len(devices) or not all(isinstance(x, dict) for x in f["devices"]):
            raise _fail(source, f"frames[{i}].devices", f"{len(devices)} objects (one per device)")
    period = data.get("frame_period_s", 1.0)
    if isinstance(period, bool) or not isinstance(period, int | float) or not period > 0:
        raise _fail(source, "frame_period_s", "a positive number")
    return data


class Replay:
    """The pynvml functions the binding uses, answering from a replay file's frames.

    Thread-safe: the sampler thread and the XID event thread call it at the same time.

    Args:
        data: the parsed replay document.
        clock: seconds on the clock frames advance with (time.time by default); tests
            pass their own to pick frames.
        source: names the file in errors.
    """

    def __init__(
        self,
        data: object,
        clock: Callable[[], float] | None = None,
        source: str = "replay",
    ) -> None:
        self.data = _validate(data, source)
        self.source = source
        self.clock = clock or time.time
        self.period = float(self.data.get("frame_period_s", 1.0))
        self.devices: list[dict[str, Any]] = self.data["devices"]
        self.frames: list[dict[str, Any]] = self.data["frames"]
        self.missing = frozenset(self.data.get("missing_functions", ()))
        self.started = self.clock()
        self._lock = threading.Lock()
        self._init_count = 0
        self._ts_offset_us = self._timestamp_offset()

    @classmethod
    def from_file(cls, path: str, clock: Callable[[], float] | None = None) -> Replay:
        """Load a replay file.

        Raises:
            ReplayError: unreadable, not JSON, or not in the replay format.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise ReplayError(f"{path}: cannot read replay file: {err.strerror or err}") from None
        except UnicodeDecodeError:
            raise ReplayError(f"{path}: expected UTF-8 JSON") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ReplayError(f"{path}: line {err.lineno}: expected valid JSON") from None
        return cls(data, clock=clock, source=path)

    # --- time -----------------------------------------------------------------------------

    def frame_index(self) -> int:
        """The frame served now."""
        elapsed = self.clock() - self.started
        return max(0, min(len(self.frames) - 1, math.floor(elapsed / self.period)))

    def _frame_t(self, i: int) -> float:
        t = self.frames[i].get("t")
        return float(t) if isinstance(t, int | float) else i * self.period

    def _timestamp_offset(self) -> int:
        # Recorded process-utilisation timestamps are on the recording's clock. Shift them
        # onto ours so that every sample of frame i is at or before the moment frame i
        # starts being served (they were taken during the second that frame covers).
        lag = [
            int(u["timestamp_us"]) - round(self._frame_t(i) * 1e6)
            for i, f in enumerate(self.frames)
            for d in f["devices"]
            for u in d.get("process_utilization", ())
            if isinstance(u, dict) and isinstance(u.get("timestamp_us"), int)
        ]
        origin = max(lag, default=0)
        return round(self.started * 1e6) - origin - round(self._frame_t(0) * 1e6)

    def _sample_ts(self, i: int, entry: Mapping[str, Any]) -> int:
        ts = entry.get("timestamp_us")
        if isinstance(ts, int):
            return ts + self._ts_offset_us
        return round((self.started + (self._frame_t(i) - self._frame_t(0))) * 1e6) - 1

    # --- lookups --------------------------------------------------------------------------

    def _check(self, name: str, index: int | None = None) -> dict[str, Any]:
        """The current frame's readings of device `index`, raising what the file says."""
        if name in self.missing:
            raise nvml_error("FunctionNotFound")
        if index is None:
            return {}
        reading: dict[str, Any] = self.frames[self.frame_index()]["devices"][index]
        if reading.get("lost"):
            raise nvml_error("GpuIsLost")
        err = reading.get("errors", {}).get(name)
        if err is not None:
            raise nvml_error(err if err in ERROR_CODES else "Unknown")
        if name in self.devices[index].get("not_supported", ()):
            raise nvml_error("NotSupported")
        return reading

    def _static(self, name: str, h: Any, key: str) -> Any:
        index = self._index(h)
        self._check(name, index)
        if isinstance(h, _MigDevice):
            value = self.devices[index]["mig_devices"][h.slot].get(key)
        else:
            value = self.devices[index].get(key)
        if value is None:
            raise nvml_error("NotSupported")
        return value

    def _reading(self, name: str, h: Any, key: str) -> Any:
        if isinstance(h, _MigDevice):
            raise nvml_error("NotSupported")
        reading = self._check(name, self._index(h))
        if key not in reading:
            raise nvml_error("NotSupported")
        return reading[key]

    def _mig_reading(self, name: str, h: _MigDevice, key: str) -> Any:
        reading = self._check(name, h.index)
        mig = reading.get("mig", [])
        if h.slot >= len(mig) or key not in mig[h.slot]:
            raise nvml_error("NotSupported")
        return mig[h.slot][key]

    def _index(self, h: Any) -> int:
        if isinstance(h, _Device | _MigDevice):
            return h.index
        raise nvml_error("InvalidArgument")

    # --- system ---------------------------------------------------------------------------

    def nvmlInit(self) -> None:  # noqa: N802 - the pynvml names
        """nvmlInit: fails as `init_error` says until `init_error_until_s`."""
        err = self.data.get("init_error")
        until = self.data.get("init_error_until_s")
        with self._lock:
            self._init_count += 1
        if err and (until is None or self.clock() - self.started < float(until)):
            raise nvml_error(err if err in ERROR_CODES else "Unknown")

    def nvmlShutdown(self) -> None:  # noqa: N802
        """NvmlShutdown."""

    @property
    def init_count(self) -> int:
        """How many times nvmlInit was called (for tests of the retry pace)."""
        return self._init_count

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        """The recorded driver version."""
        self._check("nvmlSystemGetDriverVersion")
        return str(self.data.get("driver_version", ""))

    def nvmlSystemGetProcessName(self, pid: int) -> str:  # noqa: N802
        """The name from `process_names`; NotFound for other pids."""
        self._check("nvmlSystemGetProcessName")
        name = self.data.get("process_names", {}).get(str(pid))
        if name is None:
            raise nvml_error("NotFound")
        return str(name)

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        """The number of recorded devices, or the frame's `device_count` (GPUs off the bus)."""
        self._check("nvmlDeviceGetCount")
        count = self.frames[self.frame_index()].get("device_count")
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            return min(count, len(self.devices))
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Device:  # noqa: N802
        """A handle for device `index`."""
        if not 0 <= index < len(self.devices):
            raise nvml_error("InvalidArgument")
        self._check("nvmlDeviceGetHandleByIndex", index)
        return _Device(index)

    # --- static facts ---------------------------------------------------------------------

    def nvmlDeviceGetName(self, h: Any) -> str:  # noqa: N802
        """Product name."""
        return str(self._static("nvmlDeviceGetName", h, "name"))

    def nvmlDeviceGetUUID(self, h: Any) -> str:  # noqa: N802
        """UUID (GPU or MIG device)."""
        return str(self._static("nvmlDeviceGetUUID", h, "uuid"))

    def nvmlDeviceGetSerial(self, h: Any) -> str:  # noqa: N802
        """Serial number."""
        return str(self._static("nvmlDeviceGetSerial", h, "serial"))

    def nvmlDeviceGetPciInfo_v3(self, h: Any) -> SimpleNamespace:  # noqa: N802
        """PCI info (busId only)."""
        return SimpleNamespace(busId=self._static("nvmlDeviceGetPciInfo_v3", h, "pci_bus_id"))

    def nvmlDeviceGetPciInfo(self, h: Any) -> SimpleNamespace:  # noqa: N802
        """PCI info through the unversioned entry point."""
        return SimpleNamespace(busId=self._static("nvmlDeviceGetPciInfo", h, "pci_bus_id"))

    def nvmlDeviceGetCudaComputeCapability(self, h: Any) -> tuple[int, int]:  # noqa: N802
        """(major, minor)."""
        cc = self._static("nvmlDeviceGetCudaComputeCapability", h, "cuda_compute_capability")
        return int(cc[0]), int(cc[1])

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:  # noqa: N802
        """[current, pending] MIG mode."""
        mode = int(self._static("nvmlDeviceGetMigMode", h, "mig_mode"))
        return [mode, mode]

    def nvmlDeviceGetMaxClockInfo(self, h: Any, clock: int) -> int:  # noqa: N802
        """Maximum clock in MHz."""
        return _clock_of(self._static("nvmlDeviceGetMaxClockInfo", h, "max_clock_mhz"), clock)

    def nvmlDeviceGetSupportedClocksEventReasons(self, h: Any) -> int:  # noqa: N802
        """Supported clock-event reasons mask."""
        return int(
            self._static(
                "nvmlDeviceGetSupportedClocksEventReasons", h, "supported_clocks_event_reasons"
            )
        )

    def nvmlDeviceGetSupportedClocksThrottleReasons(self, h: Any) -> int:  # noqa: N802
        """The pre-R535 name of the call above."""
        return int(
            self._static(
                "nvmlDeviceGetSupportedClocksThrottleReasons", h, "supported_clocks_event_reasons"
            )
        )

    def nvmlDeviceGetPersistenceMode(self, h: Any) -> int:  # noqa: N802
        """Persistence mode."""
        return int(self._static("nvmlDeviceGetPersistenceMode", h, "persistence_mode"))

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Any) -> int:  # noqa: N802
        """Power limit in mW (a frame's `power_limit_mw` overrides the device's)."""
        index = self._index(h)
        reading = self._check("nvmlDeviceGetEnforcedPowerLimit", index)
        value = reading.get("power_limit_mw", self.devices[index].get("power_limit_mw"))
        if value is None or isinstance(h, _MigDevice):
            raise nvml_error("NotSupported")
        return int(value)

    def nvmlGpmQueryDeviceSupport(self, h: Any) -> SimpleNamespace:  # noqa: N802
        """GPM support."""
        index = self._index(h)
        self._check("nvmlGpmQueryDeviceSupport", index)
        ok = bool(self.devices[index].get("gpm_supported")) and not isinstance(h, _MigDevice)
        return SimpleNamespace(version=1, isSupportedDevice=int(ok))

    # --- readings ---------------------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> SimpleNamespace:  # noqa: N802
        """GPU and memory utilisation percent."""
        u = self._reading("nvmlDeviceGetUtilizationRates", h, "utilization")
        return SimpleNamespace(gpu=int(u["gpu"]), memory=int(u["memory"]))

    def nvmlDeviceGetEncoderUtilization(self, h: Any) -> list[int]:  # noqa: N802
        """[percent, sampling period us]."""
        return [int(self._reading("nvmlDeviceGetEncoderUtilization", h, "encoder_utilization")),
                100_000]  # fmt: skip

    def nvmlDeviceGetDecoderUtilization(self, h: Any) -> list[int]:  # noqa: N802
        """[percent, sampling period us]."""
        return [int(self._reading("nvmlDeviceGetDecoderUtilization", h, "decoder_utilization")),
                100_000]  # fmt: skip

    def nvmlDeviceGetMemoryInfo(self, h: Any, version: int | None = None) -> SimpleNamespace:  # noqa: N802
        """Memory info; with `version` this is nvmlDeviceGetMemoryInfo_v2."""
        name = "nvmlDeviceGetMemoryInfo_v2" if version else "nvmlDeviceGetMemoryInfo"
        if isinstance(h, _MigDevice):
            m = self._mig_reading(name, h, "memory")
        else:
            m = self._reading(name, h, "memory")
        info = SimpleNamespace(total=int(m["total"]), free=int(m["free"]), used=int(m["used"]))
        if version:
            # A recording made through v1 has no reserved figure: say so rather than 0.
            info.reserved = int(m["reserved"]) if "reserved" in m else None
            info.version = version
        return info

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:  # noqa: N802
        """Power in mW."""
        return int(self._reading("nvmlDeviceGetPowerUsage", h, "power_mw"))

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Any) -> int:  # noqa: N802
        """Energy in mJ since driver load."""
        return int(self._reading("nvmlDeviceGetTotalEnergyConsumption", h, "energy_mj"))

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:  # noqa: N802
        """GPU temperature in C."""
        return int(self._reading("nvmlDeviceGetTemperature", h, "temperature_c"))

    def nvmlDeviceGetClockInfo(self, h: Any, clock: int) -> int:  # noqa: N802
        """Current clock in MHz."""
        return _clock_of(self._reading("nvmlDeviceGetClockInfo", h, "clock_mhz"), clock)

    def nvmlDeviceGetPerformanceState(self, h: Any) -> int:  # noqa: N802
        """P-state number."""
        return int(self._reading("nvmlDeviceGetPerformanceState", h, "performance_state"))

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:  # noqa: N802
        """Active clock-event reasons mask."""
        return int(
            self._reading("nvmlDeviceGetCurrentClocksEventReasons", h, "clocks_event_reasons")
        )

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: Any) -> int:  # noqa: N802
        """The pre-R535 name of the call above."""
        return int(
            self._reading("nvmlDeviceGetCurrentClocksThrottleReasons", h, "clocks_event_reasons")
        )

    def nvmlDeviceGetFieldValues(  # noqa: N802
        self, h: Any, ids: Sequence[int | tuple[int, int]]
    ) -> list[SimpleNamespace]:
        """Field values from the frame's `field_values` ("id" or "id:link" -> number).

        Fields the frame does not hold answer NotSupported, each on its own.
        """
        if isinstance(h, _MigDevice):
            raise nvml_error("NotSupported")
        reading = self._check("nvmlDeviceGetFieldValues", self._index(h))
        values = reading.get("field_values", {})
        out = []
        for wanted in ids:
            if isinstance(wanted, tuple):  # a per-link field, recorded under "field:link"
                fid, scope = wanted
                key = f"{fid}:{scope}"
            else:
                fid, scope, key = wanted, 0, str(wanted)
            v = values.get(key)
            ok = isinstance(v, int | float) and not isinstance(v, bool)
            out.append(
                SimpleNamespace(
                    fieldId=fid,
                    scopeId=scope,
                    nvmlReturn=0 if ok else _NOT_SUPPORTED,
                    valueType=0 if isinstance(v, float) else 3,
                    value=SimpleNamespace(dVal=float(v), ullVal=int(v))
                    if ok
                    else SimpleNamespace(dVal=0.0, ullVal=0),
                )
            )
        return out

    c_nvmlGpuFabricInfo_v3_t = _FabricInfo  # noqa: N815 - the pynvml name

    def nvmlDeviceGetGpuFabricInfoV(self, h: Any, info: _FabricInfo) -> int:  # noqa: N802
        """Fill `info` from the frame's `fabric` {state, status, health_mask, health_summary}."""
        f = self._reading("nvmlDeviceGetGpuFabricInfoV", h, "fabric")
        info.state = int(f.get("state", 0))
        info.status = int(f.get("status", 0))
        info.healthMask = int(f.get("health_mask", 0))
        info.healthSummary = int(f.get("health_summary", 0))
        return 0

    # --- processes ------------------------------------------------------------------------

    def _processes(self, name: str, h: Any, key: str = "processes") -> list[SimpleNamespace]:
        if isinstance(h, _MigDevice):
            procs = self._mig_reading(name, h, key)
            mig = self.devices[h.index]["mig_devices"][h.slot]
            gi, ci = mig.get("gpu_instance"), mig.get("compute_instance")
        else:
            procs = self._reading(name, h, key)
            gi = ci = None
        return [
            SimpleNamespace(
                pid=int(p["pid"]),
                usedGpuMemory=p.get("used_memory_bytes"),
                gpuInstanceId=int(
                    p.get("gpu_instance", gi if gi is not None else NOT_AVAILABLE_U32)
                ),
                computeInstanceId=int(
                    p.get("compute_instance", ci if ci is not None else NOT_AVAILABLE_U32)
                ),
            )
            for p in procs
        ]

    def nvmlDeviceGetComputeRunningProcesses_v3(self, h: Any) -> list[SimpleNamespace]:  # noqa: N802
        """Compute processes (v3)."""
        return self._processes("nvmlDeviceGetComputeRunningProcesses_v3", h)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, h: Any) -> list[SimpleNamespace]:  # noqa: N802
        """Compute processes (v2)."""
        return self._processes("nvmlDeviceGetComputeRunningProcesses_v2", h)

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[SimpleNamespace]:  # noqa: N802
        """Compute processes (unversioned)."""
        return self._processes("nvmlDeviceGetComputeRunningProcesses", h)

    def nvmlDeviceGetMPSComputeRunningProcesses_v3(self, h: Any) -> list[SimpleNamespace]:  # noqa: N802
        """MPS client processes (v3), from `mps_processes`."""
        return self._processes("nvmlDeviceGetMPSComputeRunningProcesses_v3", h, "mps_processes")

    def nvmlDeviceGetMPSComputeRunningProcesses_v2(self, h: Any) -> list[SimpleNamespace]:  # noqa: N802
        """MPS client processes (v2)."""
        return self._processes("nvmlDeviceGetMPSComputeRunningProcesses_v2", h, "mps_processes")

    def nvmlDeviceGetMPSComputeRunningProcesses(self, h: Any) -> list[SimpleNamespace]:  # noqa: N802
        """MPS client processes (unversioned)."""
        return self._processes("nvmlDeviceGetMPSComputeRunningProcesses", h, "mps_processes")

    def nvmlDeviceGetProcessUtilization(self, h: Any, since_us: int) -> list[SimpleNamespace]:  # noqa: N802
        """The newest sample per pid with a timestamp after `since_us`, as NVML answers.

        Looks back through earlier frames too (a 5 s sampler over 1 s frames); raises
        NotFound when no process had a sample since then.
        """
        name = "nvmlDeviceGetProcessUtilization"
        if isinstance(h, _MigDevice):
            raise nvml_error("NotSupported")
        index = self._index(h)
        current = self.frame_index()
        reading = self._check(name, index)
        if "process_utilization" not in reading:
            raise nvml_error("NotSupported")
        newest: dict[int, tuple[int, Mapping[str, Any]]] = {}
        for i in range(current, -1, -1):
            frame_start_us = round((self.started + i * self.period) * 1e6)
            if frame_start_us <= since_us:
                break
            for u in self.frames[i]["devices"][index].get("process_utilization", ()):
                ts = self._sample_ts(i, u)
                pid = int(u["pid"])
                if ts > since_us and (pid not in newest or ts > newest[pid][0]):
                    newest[pid] = (ts, u)
        if not newest:
            raise nvml_error("NotFound")
        return [
            SimpleNamespace(
                pid=pid,
                timeStamp=ts,
                smUtil=int(u.get("sm", 0)),
                memUtil=int(u.get("mem", 0)),
                encUtil=int(u.get("enc", 0)),
                decUtil=int(u.get("dec", 0)),
            )
            for pid, (ts, u) in sorted(newest.items())
        ]

    # --- MIG ------------------------------------------------------------------------------

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:  # noqa: N802
        """Number of MIG device slots (the recorded MIG devices)."""
        index = self._index(h)
        self._check("nvmlDeviceGetMaxMigDeviceCount", index)
        return len(self.devices[index].get("mig_devices", ()))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, slot: int) -> _MigDevice:  # noqa: N802
        """The MIG device in `slot`."""
        index = self._index(h)
        self._check("nvmlDeviceGetMigDeviceHandleByIndex", index)
        if not 0 <= slot < len(self.devices[index].get("mig_devices", ())):
            raise nvml_error("NotFound")
        return _MigDevice(index, slot)

    def nvmlDeviceGetGpuInstanceId(self, h: Any) -> int:  # noqa: N802
        """GPU instance id of a MIG device."""
        if not isinstance(h, _MigDevice):
            raise nvml_error("InvalidArgument")
        return int(self._static("nvmlDeviceGetGpuInstanceId", h, "gpu_instance"))

    def nvmlDeviceGetComputeInstanceId(self, h: Any) -> int:  # noqa: N802
        """Compute instance id of a MIG device."""
        if not isinstance(h, _MigDevice):
            raise nvml_error("InvalidArgument")
        return int(self._static("nvmlDeviceGetComputeInstanceId", h, "compute_instance"))

    # --- GPM ------------------------------------------------------------------------------

    c_nvmlGpmMetricsGet_t = _GpmMetricsGet  # noqa: N815 - the pynvml name

    def nvmlGpmSampleAlloc(self) -> _GpmSample:  # noqa: N802
        """A GPM sample buffer."""
        self._check("nvmlGpmSampleAlloc")
        return _GpmSample()

    def nvmlGpmSampleFree(self, sample: _GpmSample) -> None:  # noqa: N802
        """Free a GPM sample buffer."""

    def _gpm_get(self, name: str, h: Any, gi: int | None, sample: _GpmSample) -> _GpmSample:
        index = self._index(h)
        self._check(name, index)
        if not self.devices[index].get("gpm_supported") or isinstance(h, _MigDevice):
            raise nvml_error("NotSupported")
        sample.device, sample.gpu_instance, sample.frame = index, gi, self.frame_index()
        return sample

    def nvmlGpmSampleGet(self, h: Any, sample: _GpmSample) -> _GpmSample:  # noqa: N802
        """Record which frame the sample was taken in."""
        return self._gpm_get("nvmlGpmSampleGet", h, None, sample)

    def nvmlGpmMigSampleGet(self, h: Any, gi: int, sample: _GpmSample) -> _GpmSample:  # noqa: N802
        """Record which frame the sample of GPU instance `gi` was taken in."""
        return self._gpm_get("nvmlGpmMigSampleGet", h, gi, sample)

    def nvmlGpmMetricsGet(self, mg: _GpmMetricsGet) -> _GpmMetricsGet:  # noqa: N802
        """The recorded GPM values averaged over the frames between the two samples."""
        self._check("nvmlGpmMetricsGet")
        s1, s2 = mg.sample1, mg.sample2
        if not isinstance(s1, _GpmSample) or not isinstance(s2, _GpmSample) or s2.frame < 0:
            raise nvml_error("InvalidArgument")
        frames = range(min(s1.frame + 1, s2.frame), s2.frame + 1)
        for m in mg.metrics[: mg.numMetrics]:
            key = GPM_KEYS.get(m.metricId)
            values = []
            for i in frames:
                reading = self.frames[i]["devices"][s2.device]
                gpm = (
                    reading.get("gpm")
                    if s2.gpu_instance is None
                    else reading.get("gpm_instances", {}).get(str(s2.gpu_instance))
                )
                if gpm is not None and key is not None and key in gpm:
                    values.append(float(gpm[key]))
            if key is None or not values:
                m.nvmlReturn, m.value = _NOT_SUPPORTED, 0.0
            else:
                m.nvmlReturn, m.value = 0, sum(values) / len(values)
        return mg

    # --- events ---------------------------------------------------------------------------

    def nvmlDeviceGetSupportedEventTypes(self, h: Any) -> int:  # noqa: N802
        """Supported event mask."""
        return int(self._static("nvmlDeviceGetSupportedEventTypes", h, "supported_event_types"))

    def nvmlEventSetCreate(self) -> _EventSet:  # noqa: N802
        """An event set that sees events from the current frame on."""
        self._check("nvmlEventSetCreate")
        current = self.frame_index()
        return _EventSet(first_frame=current, delivered_frame=current - 1)

    def nvmlDeviceRegisterEvents(self, h: Any, types: int, event_set: _EventSet) -> None:  # noqa: N802
        """Register XID events of a device."""
        index = self._index(h)
        self._check("nvmlDeviceRegisterEvents", index)
        if types & XID_EVENT:
            with self._lock:
                event_set.devices.add(index)

    def _pending(self, event_set: _EventSet) -> tuple[int, int] | None:
        with self._lock:
            current = self.frame_index()
            while event_set.delivered_frame < current:
                event_set.delivered_frame += 1
                for ev in self.frames[event_set.delivered_frame].get("events", ()):
                    if int(ev.get("device", -1)) in event_set.devices and "xid" in ev:
                        event_set.queue.append((int(ev["device"]), int(ev["xid"])))
            return event_set.queue.pop(0) if event_set.queue else None

    def nvmlEventSetWait_v2(self, event_set: _EventSet, timeout_ms: int) -> SimpleNamespace:  # noqa: N802
        """Block up to `timeout_ms` of real time for the next XID event of the frames."""
        self._check("nvmlEventSetWait_v2")
        return self._wait(event_set, timeout_ms)

    def _wait(self, event_set: _EventSet, timeout_ms: int) -> SimpleNamespace:
        deadline = time.monotonic() + timeout_ms / 1000
        while not event_set.freed:
            got = self._pending(event_set)
            if got is not None:
                index, xid = got
                return SimpleNamespace(
                    device=_Device(index),
                    eventType=XID_EVENT,
                    eventData=xid,
                    gpuInstanceId=NOT_AVAILABLE_U32,
                    computeInstanceId=NOT_AVAILABLE_U32,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(_EVENT_POLL_S, remaining))
        raise nvml_error("Timeout")

    def nvmlEventSetWait(self, event_set: _EventSet, timeout_ms: int) -> SimpleNamespace:  # noqa: N802
        """The unversioned wait."""
        self._check("nvmlEventSetWait")
        return self._wait(event_set, timeout_ms)

    def nvmlEventSetFree(self, event_set: _EventSet) -> None:  # noqa: N802
        """Free an event set (a waiter returns Timeout)."""
        event_set.freed = True
