"""The only `import pynvml`: a typed facade over NVML (or a replay) that translates its errors.

Every NVML call of the agent goes through `NvmlBinding`. The rest of the code sees plain
values, `None` for "not supported here", and three exceptions of our own: `NvmlUnavailable`
(no library or driver), `DeviceLost` (GpuIsLost/Unknown on one GPU) and nothing else.
Versioned entry points are probed once (`_v3` -> `_v2` -> unversioned) because old drivers
lack the newer symbols whatever the nvidia-ml-py version says.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pynvml

from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.nvml.health import FabricInfo

log = logging.getLogger(__name__)

NVMLError = pynvml.NVMLError
"""The base of every NVML error class (the replay backend raises the same classes)."""

XID_EVENT = pynvml.nvmlEventTypeXidCriticalError
CLOCK_SM = pynvml.NVML_CLOCK_SM
CLOCK_MEM = pynvml.NVML_CLOCK_MEM
CLOCK_GRAPHICS = pynvml.NVML_CLOCK_GRAPHICS
TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
NOT_AVAILABLE_U32 = 0xFFFFFFFF  # NVML's "no GPU/compute instance" in process info

# Error codes translated here (the values are fixed by the NVML C API).
ERR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
ERR_NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND
ERR_TIMEOUT = pynvml.NVML_ERROR_TIMEOUT
ERR_FUNCTION_NOT_FOUND = pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
ERR_GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
ERR_UNKNOWN = pynvml.NVML_ERROR_UNKNOWN
ERR_VERSION_MISMATCH = pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH
_LOST = frozenset({ERR_GPU_IS_LOST, ERR_UNKNOWN})
_UNAVAILABLE = frozenset(
    {
        pynvml.NVML_ERROR_UNINITIALIZED,
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        pynvml.NVML_ERROR_NO_PERMISSION,
        pynvml.NVML_ERROR_OPERATING_SYSTEM,
    }
)

ERROR_CODES: dict[str, int] = {
    name.removeprefix("NVMLError_"): code for code, cls in pynvml.NVMLError._valClassMapping.items()
    for name in (cls.__name__,)
}  # fmt: skip
"""NVML error class names without the prefix ("NotSupported", "GpuIsLost", ...) -> codes."""


def nvml_error(name_or_code: str | int) -> Exception:
    """The pynvml exception instance for an error name ("GpuIsLost") or an NVML code."""
    code = ERROR_CODES[name_or_code] if isinstance(name_or_code, str) else name_or_code
    return NVMLError(code)  # type: ignore[no-any-return]


class NvmlUnavailable(Exception):  # noqa: N818 - a condition, not a bug
    """NVML cannot be used at all (no library, no driver, no permission)."""


class DeviceLost(Exception):  # noqa: N818 - a condition, not a bug
    """A GPU answered GpuIsLost or Unknown: drop it from this snapshot."""

    def __init__(self, function: str, error: str) -> None:
        super().__init__(f"{function}: {error}")
        self.function = function


class _FunctionMissing(Exception):  # noqa: N818 - internal control flow
    """The driver (or binding) lacks this entry point: try the older one."""


Handle = Any
"""An opaque NVML device (or MIG device) handle."""


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    """Framebuffer memory in bytes; `reserved` only from memory info v2."""

    total: int
    free: int
    used: int
    reserved: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One compute process on a device, as nvmlDeviceGetComputeRunningProcesses lists it."""

    pid: int
    used_memory_bytes: int | None
    gpu_instance: int | None = None
    compute_instance: int | None = None
    mps_client: bool = False


@dataclass(frozen=True, slots=True)
class ProcessUtilization:
    """One nvmlDeviceGetProcessUtilization sample (percentages, CPU timestamp in us)."""

    pid: int
    timestamp_us: int
    sm: int
    mem: int
    enc: int
    dec: int


@dataclass(frozen=True, slots=True)
class XidEvent:
    """One XID critical error delivered by an NVML event set."""

    uuid: str | None
    xid: int


def _decode_field(value: Any) -> float:
    kind = int(value.valueType)
    v = value.value
    if kind == pynvml.NVML_VALUE_TYPE_DOUBLE:
        return float(v.dVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT:
        return float(v.uiVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG:
        return float(v.ulVal)
    if kind == pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG:
        return float(v.sllVal)
    if kind == pynvml.NVML_VALUE_TYPE_SIGNED_INT:
        return float(v.siVal)
    if kind == pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT:
        return float(v.usVal)
    return float(v.ullVal)


def _pynvml_event_wait_v1(event_set: Any, timeout_ms: int) -> Any:
    """The C nvmlEventSetWait (v1) symbol: pynvml's own wrapper of that name calls _v2."""
    fn = pynvml._nvmlGetFunctionPointer("nvmlEventSetWait")
    data = pynvml.c_nvmlEventData_t()
    pynvml._nvmlCheckReturn(fn(event_set, ctypes.byref(data), ctypes.c_uint(timeout_ms)))
    return data


def _process_info(p: Any, *, mps: bool) -> ProcessInfo:
    gi = getattr(p, "gpuInstanceId", NOT_AVAILABLE_U32)
    ci = getattr(p, "computeInstanceId", NOT_AVAILABLE_U32)
    used = p.usedGpuMemory
    return ProcessInfo(
        pid=int(p.pid),
        used_memory_bytes=None if used is None else int(used),
        gpu_instance=None if gi in (None, NOT_AVAILABLE_U32) else int(gi),
        compute_instance=None if ci in (None, NOT_AVAILABLE_U32) else int(ci),
        mps_client=mps,
    )


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlBinding:
    """Typed NVML calls over `lib` (the pynvml module, or a replay object offering the same).

    Args:
        lib: what offers the `nvml*` functions; pynvml itself by default.
        clock: the clock NVML's CPU timestamps are taken on (seconds, epoch); the replay
            backend brings its own.
    """

    def __init__(self, lib: Any = None, clock: Callable[[], float] | None = None) -> None:
        self._lib = pynvml if lib is None else lib
        self._clock = clock or time.time
        self._once = OnceLogger(log)
        self._missing: set[str] = set()
        self.driver_version = ""

    # --- plumbing ------------------------------------------------------------------------

    def _raw(self, name: str, *args: object) -> Any:
        """Call `name`; NVML errors other than FunctionNotFound/lost are raised as they are."""
        if name in self._missing:
            raise _FunctionMissing(name)
        fn = getattr(self._lib, name, None)
        if name == "nvmlEventSetWait" and self._lib is pynvml:
            fn = _pynvml_event_wait_v1
        if fn is None:
            self._missing.add(name)
            raise _FunctionMissing(name)
        return self._call(name, fn, *args)

    def _call(self, name: str, fn: Callable[..., Any], *args: object) -> Any:
        """Call `fn` as NVML's `name`, translating FunctionNotFound and lost-GPU errors."""
        try:
            return fn(*args)
        except NVMLError as err:
            code = getattr(err, "value", None)
            if code == ERR_FUNCTION_NOT_FOUND:
                self._missing.add(name)
                raise _FunctionMissing(name) from err
            if code in _LOST:
                raise DeviceLost(name, str(err)) from err
            raise
        except pynvml.NVMLLibraryMismatchError as err:
            # pynvml's unversioned wrappers turn FunctionNotFound into this.
            self._missing.add(name)
            raise _FunctionMissing(name) from err

    def _query(self, name: str, *args: object) -> Any:
        """Call `name`; None when not supported (or failing in a way that only loses this value).

        Raises:
            DeviceLost: the device answered GpuIsLost or Unknown.
            NvmlUnavailable: the library went away (uninitialised, driver unloaded).
        """
        try:
            return self._raw(name, *args)
        except _FunctionMissing:
            self._warn_missing(name)
            return None
        except NVMLError as err:
            self._failed(name, err)
            return None

    def _int(self, name: str, *args: object) -> int | None:
        """`_query` for an entry point that answers a number."""
        v = self._query(name, *args)
        return None if v is None else int(v)

    def _str(self, name: str, *args: object) -> str | None:
        """`_query` for an entry point that answers a string (bytes decoded)."""
        v = self._query(name, *args)
        return None if v is None else _text(v)

    def _warn_missing(self, name: str) -> None:
        self._once.log(
            logging.WARNING,
            f"missing:{name}",
            "NVML %s is not available with driver %s; the values it gives are omitted",
            name,
            self.driver_version or "?",
        )

    def _failed(self, name: str, err: Exception) -> None:
        code = getattr(err, "value", None)
        if code == ERR_NOT_SUPPORTED:
            self._once.log(logging.DEBUG, f"unsupported:{name}", "NVML %s: not supported", name)
            return None
        if code in _UNAVAILABLE and code != pynvml.NVML_ERROR_NO_PERMISSION:
            raise NvmlUnavailable(f"{name}: {err}") from err
        self._once.log(logging.WARNING, f"error:{name}:{code}", "NVML %s failed: %s", name, err)
        return None

    def _versioned(self, names: Sequence[str], *args: object) -> Any:
        """Call the newest of `names` the driver has, falling back once per missing symbol."""
        for name in names:
            try:
                return self._raw(name, *args)
            except _FunctionMissing:
                self._once.log(
                    logging.WARNING,
                    f"fallback:{name}",
                    "NVML %s is missing in driver %s; using an older entry point",
                    name,
                    self.driver_version or "?",
                )
                continue
            except NVMLError as err:
                self._failed(name, err)
                return None
        return None

    # --- library -------------------------------------------------------------------------

    def init(self) -> None:
        """Initialise NVML and read the driver version.

        Raises:
            NvmlUnavailable: no library, no driver, or no permission to use it.
        """
        try:
            self._lib.nvmlInit()
        except NVMLError as err:
            raise NvmlUnavailable(f"nvmlInit: {err}") from err
        except OSError as err:  # a broken libnvidia-ml.so
            raise NvmlUnavailable(f"nvmlInit: {err}") from err
        self.driver_version = self._str("nvmlSystemGetDriverVersion") or ""

    def shutdown(self) -> None:
        """Release NVML (errors ignored: we are leaving)."""
        try:
            self._lib.nvmlShutdown()
        except (NVMLError, OSError):
            log.debug("nvmlShutdown failed", exc_info=True)

    def now_us(self) -> int:
        """Now on the clock of NVML's CPU timestamps, in microseconds."""
        return int(self._clock() * 1_000_000)

    def device_count(self) -> int:
        """How many GPUs NVML sees.

        Raises:
            NvmlUnavailable: NVML stopped answering.
        """
        count = self._query("nvmlDeviceGetCount")
        return int(count or 0)

    def handle(self, index: int) -> Handle:
        """The handle of GPU `index` (None if NVML does not give one).

        Raises:
            DeviceLost: the device is lost.
        """
        return self._query("nvmlDeviceGetHandleByIndex", index)

    # --- static facts --------------------------------------------------------------------

    def name(self, h: Handle) -> str | None:
        """Product name."""
        return self._str("nvmlDeviceGetName", h)

    def uuid(self, h: Handle) -> str | None:
        """GPU (or MIG device) UUID."""
        return self._str("nvmlDeviceGetUUID", h)

    def serial(self, h: Handle) -> str | None:
        """Board serial number."""
        return self._str("nvmlDeviceGetSerial", h)

    def pci_bus_id(self, h: Handle) -> str | None:
        """PCI bus id ("00000000:00:06.0")."""
        info = self._versioned(("nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo"), h)
        return None if info is None else _text(info.busId)

    def compute_capability(self, h: Handle) -> tuple[int, int] | None:
        """CUDA compute capability (major, minor)."""
        v = self._query("nvmlDeviceGetCudaComputeCapability", h)
        return None if v is None else (int(v[0]), int(v[1]))

    def mig_mode(self, h: Handle) -> int | None:
        """Current MIG mode (1 enabled, 0 disabled); None where MIG does not exist."""
        v = self._query("nvmlDeviceGetMigMode", h)
        return None if v is None else int(v[0])

    def max_clock_mhz(self, h: Handle, clock: int) -> int | None:
        """Maximum clock of `clock` (CLOCK_SM, CLOCK_MEM) in MHz."""
        return self._int("nvmlDeviceGetMaxClockInfo", h, clock)

    def supported_clocks_event_reasons(self, h: Handle) -> int | None:
        """Bit mask of the clock-event reasons this GPU reports."""
        v = self._versioned(
            (
                "nvmlDeviceGetSupportedClocksEventReasons",
                "nvmlDeviceGetSupportedClocksThrottleReasons",
            ),
            h,
        )
        return None if v is None else int(v)

    def gpm_supported(self, h: Handle) -> bool:
        """True when GPM profiling metrics are available (Hopper and newer)."""
        v = self._query("nvmlGpmQueryDeviceSupport", h)
        return bool(v is not None and v.isSupportedDevice)

    # --- readings ------------------------------------------------------------------------

    def utilization(self, h: Handle) -> tuple[int, int] | None:
        """(GPU, memory-copy) utilisation in percent over the driver's last period."""
        v = self._query("nvmlDeviceGetUtilizationRates", h)
        return None if v is None else (int(v.gpu), int(v.memory))

    def encoder_utilization(self, h: Handle) -> int | None:
        """Video encoder utilisation in percent."""
        v = self._query("nvmlDeviceGetEncoderUtilization", h)
        return None if v is None else int(v[0])

    def decoder_utilization(self, h: Handle) -> int | None:
        """Video decoder utilisation in percent."""
        v = self._query("nvmlDeviceGetDecoderUtilization", h)
        return None if v is None else int(v[0])

    def memory(self, h: Handle) -> MemoryInfo | None:
        """Framebuffer memory; v2 (with reserved split out of used) where the driver has it."""
        if "nvmlDeviceGetMemoryInfo_v2" not in self._missing:
            try:
                m = self._call(
                    "nvmlDeviceGetMemoryInfo_v2",
                    self._lib.nvmlDeviceGetMemoryInfo,
                    h,
                    pynvml.nvmlMemory_v2,
                )
            except _FunctionMissing:
                self._once.log(
                    logging.WARNING,
                    "fallback:nvmlDeviceGetMemoryInfo_v2",
                    "NVML nvmlDeviceGetMemoryInfo_v2 is missing in driver %s; "
                    "used memory includes the reserved part",
                    self.driver_version or "?",
                )
            except NVMLError as err:
                self._failed("nvmlDeviceGetMemoryInfo_v2", err)
                return None
            else:
                reserved = getattr(m, "reserved", None)
                return MemoryInfo(
                    int(m.total),
                    int(m.free),
                    int(m.used),
                    None if reserved is None else int(reserved),
                )
        m = self._query("nvmlDeviceGetMemoryInfo", h)
        return None if m is None else MemoryInfo(int(m.total), int(m.free), int(m.used))

    def power_mw(self, h: Handle) -> int | None:
        """Power draw in milliwatts."""
        return self._int("nvmlDeviceGetPowerUsage", h)

    def power_limit_mw(self, h: Handle) -> int | None:
        """Enforced power limit in milliwatts."""
        return self._int("nvmlDeviceGetEnforcedPowerLimit", h)

    def energy_mj(self, h: Handle) -> int | None:
        """Energy used since the driver loaded, in millijoules (Volta and newer)."""
        return self._int("nvmlDeviceGetTotalEnergyConsumption", h)

    def temperature_c(self, h: Handle) -> int | None:
        """GPU core temperature in Celsius."""
        return self._int("nvmlDeviceGetTemperature", h, TEMPERATURE_GPU)

    def clock_mhz(self, h: Handle, clock: int) -> int | None:
        """Current clock of `clock` in MHz."""
        return self._int("nvmlDeviceGetClockInfo", h, clock)

    def performance_state(self, h: Handle) -> int | None:
        """Performance state (0 = P0, the fastest)."""
        return self._int("nvmlDeviceGetPerformanceState", h)

    def persistence_mode(self, h: Handle) -> int | None:
        """1 when persistence mode is on."""
        return self._int("nvmlDeviceGetPersistenceMode", h)

    def clocks_event_reasons(self, h: Handle) -> int | None:
        """Bit mask of the clock-event (throttle) reasons active now."""
        v = self._versioned(
            (
                "nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetCurrentClocksThrottleReasons",
            ),
            h,
        )
        return None if v is None else int(v)

    def field_values(self, h: Handle, ids: Sequence[int]) -> dict[int, float]:
        """The fields of `ids` that this device supports, decoded by their value type."""
        return {fid: v for fid, _, v in self._fields(h, list(ids))}

    def link_field_values(self, h: Handle, field_id: int, links: Sequence[int]) -> dict[int, float]:
        """Field `field_id` scoped to each NVLink of `links` (links that do not answer left out)."""
        return {link: v for _, link, v in self._fields(h, [(field_id, link) for link in links])}

    def _fields(self, h: Handle, ids: list[Any]) -> list[tuple[int, int, float]]:
        """(field id, scope id, value) of each answered field; a lost GPU raises DeviceLost."""
        out = []
        for value in self._query("nvmlDeviceGetFieldValues", h, ids) or ():
            ret = int(value.nvmlReturn)
            if ret == 0:
                out.append((int(value.fieldId), int(value.scopeId), _decode_field(value)))
            elif ret in _LOST:
                raise DeviceLost("nvmlDeviceGetFieldValues", str(nvml_error(ret)))
        return out

    def fabric_info(self, h: Handle) -> FabricInfo | None:
        """Fabric state and health (v3 struct, else v2 without summary); None without a fabric.

        From nvmlDeviceGetGpuFabricInfoV; the v1 call (deprecated since R525) has no health
        mask and is not used.
        """
        for struct, with_summary in (("c_nvmlGpuFabricInfo_v3_t", True),
                                     ("c_nvmlGpuFabricInfo_v2_t", False)):  # fmt: skip
            make = getattr(self._lib, struct, None)
            if make is None or f"nvmlDeviceGetGpuFabricInfoV:{struct}" in self._missing:
                continue
            info = make()
            try:
                self._raw("nvmlDeviceGetGpuFabricInfoV", h, info)
            except _FunctionMissing:
                return None
            except NVMLError as err:
                if getattr(err, "value", None) == ERR_VERSION_MISMATCH:
                    # An older driver: the older struct, from now on without asking again.
                    self._missing.add(f"nvmlDeviceGetGpuFabricInfoV:{struct}")
                    continue
                self._failed("nvmlDeviceGetGpuFabricInfoV", err)
                return None
            return FabricInfo(
                state=int(info.state),
                status=int(info.status),
                health_mask=int(info.healthMask),
                health_summary=int(info.healthSummary) if with_summary else None,
            )
        return None

    # --- processes -----------------------------------------------------------------------

    def compute_processes(self, h: Handle) -> list[ProcessInfo] | None:
        """Compute processes on `h` (v3 -> v2 -> v1 entry points, as the driver has them)."""
        procs = self._versioned(
            (
                "nvmlDeviceGetComputeRunningProcesses_v3",
                "nvmlDeviceGetComputeRunningProcesses_v2",
                "nvmlDeviceGetComputeRunningProcesses",
            ),
            h,
        )
        return None if procs is None else [_process_info(p, mps=False) for p in procs]

    def mps_processes(self, h: Handle) -> list[ProcessInfo] | None:
        """MPS client processes on `h` (empty without an MPS server)."""
        procs = self._versioned(
            (
                "nvmlDeviceGetMPSComputeRunningProcesses_v3",
                "nvmlDeviceGetMPSComputeRunningProcesses_v2",
                "nvmlDeviceGetMPSComputeRunningProcesses",
            ),
            h,
        )
        return None if procs is None else [_process_info(p, mps=True) for p in procs]

    def process_utilization(self, h: Handle, since_us: int) -> list[ProcessUtilization] | None:
        """Per-process utilisation samples newer than `since_us`; [] when there are none.

        NVML returns one sample per process that was busy in its last sample period, and
        raises NotFound when no process was; None means the GPU does not support it (MIG).
        """
        try:
            samples = self._raw("nvmlDeviceGetProcessUtilization", h, max(0, since_us))
        except _FunctionMissing:
            self._warn_missing("nvmlDeviceGetProcessUtilization")
            return None
        except NVMLError as err:
            if getattr(err, "value", None) == ERR_NOT_FOUND:
                return []
            self._failed("nvmlDeviceGetProcessUtilization", err)
            return None
        return [
            ProcessUtilization(
                pid=int(s.pid),
                timestamp_us=int(s.timeStamp),
                sm=int(s.smUtil),
                mem=int(s.memUtil),
                enc=int(s.encUtil),
                dec=int(s.decUtil),
            )
            for s in samples
        ]

    def process_name(self, pid: int) -> str | None:
        """The process name NVML reports (argv[0] style), reduced to a comm-like basename."""
        try:
            v = self._raw("nvmlSystemGetProcessName", pid)
        except _FunctionMissing:
            return None
        except NVMLError as err:
            if getattr(err, "value", None) == ERR_NOT_FOUND:
                return None  # the process ended, or it is not ours to see
            self._failed("nvmlSystemGetProcessName", err)
            return None
        if not v:
            return None
        return os.path.basename(_text(v).split(" ", 1)[0])[:15] or None

    # --- MIG -----------------------------------------------------------------------------

    def max_mig_devices(self, h: Handle) -> int:
        """How many MIG device slots `h` has (0 when MIG is off or absent)."""
        return int(self._query("nvmlDeviceGetMaxMigDeviceCount", h) or 0)

    def mig_handle(self, h: Handle, index: int) -> Handle:
        """The MIG device in slot `index`, or None when the slot is empty."""
        try:
            return self._raw("nvmlDeviceGetMigDeviceHandleByIndex", h, index)
        except _FunctionMissing:
            return None
        except NVMLError as err:
            if getattr(err, "value", None) == ERR_NOT_FOUND:
                return None
            self._failed("nvmlDeviceGetMigDeviceHandleByIndex", err)
            return None

    def gpu_instance_id(self, mig: Handle) -> int | None:
        """The GPU instance id of a MIG device."""
        return self._int("nvmlDeviceGetGpuInstanceId", mig)

    def compute_instance_id(self, mig: Handle) -> int | None:
        """The compute instance id of a MIG device."""
        return self._int("nvmlDeviceGetComputeInstanceId", mig)

    # --- GPM -----------------------------------------------------------------------------

    def gpm_sample(self, h: Handle, gpu_instance: int | None = None) -> Any:
        """Take a GPM sample of the device (or of one GPU instance under MIG); None if unsupported.

        The caller frees it with `gpm_free` once it computed metrics from it.
        """
        sample = self._query("nvmlGpmSampleAlloc")
        if sample is None:
            return None
        try:
            if gpu_instance is None:
                got = self._query("nvmlGpmSampleGet", h, sample)
            else:
                got = self._query("nvmlGpmMigSampleGet", h, gpu_instance, sample)
        except DeviceLost:
            self.gpm_free(sample)
            raise
        if got is None:
            self.gpm_free(sample)
            return None
        return sample

    def gpm_free(self, sample: Any) -> None:
        """Free a GPM sample."""
        self._query("nvmlGpmSampleFree", sample)

    def gpm_metrics(self, first: Any, second: Any, ids: Sequence[int]) -> dict[int, float]:
        """GPM metrics of `ids` between two samples; unsupported metrics are left out."""
        mg = self._lib.c_nvmlGpmMetricsGet_t()
        mg.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        mg.numMetrics = len(ids)
        mg.sample1 = first
        mg.sample2 = second
        for i, metric in enumerate(ids):
            mg.metrics[i].metricId = metric
        got = self._query("nvmlGpmMetricsGet", mg)
        if got is None:
            return {}
        return {
            int(got.metrics[i].metricId): float(got.metrics[i].value)
            for i in range(len(ids))
            if int(got.metrics[i].nvmlReturn) == 0
        }

    # --- events --------------------------------------------------------------------------

    def xid_event_set(self, handles: Sequence[Handle]) -> Any:
        """An event set with XID critical errors registered on every device that supports them."""
        event_set = self._query("nvmlEventSetCreate")
        if event_set is None:
            return None
        registered = 0
        for h in handles:
            supported = self._query("nvmlDeviceGetSupportedEventTypes", h)
            if supported is None or not int(supported) & XID_EVENT:
                continue
            try:
                self._raw("nvmlDeviceRegisterEvents", h, XID_EVENT, event_set)
                registered += 1
            except (_FunctionMissing, DeviceLost, NVMLError) as err:
                self._once.log(logging.WARNING, "xid:register", "XID events unavailable: %s", err)
        if not registered:
            self.free_event_set(event_set)
            return None
        return event_set

    def wait_xid(self, event_set: Any, timeout_ms: int) -> XidEvent | None:
        """Wait up to `timeout_ms` for one event; None on timeout or a non-XID event."""
        for name in ("nvmlEventSetWait_v2", "nvmlEventSetWait"):  # _raw skips a missing one
            try:
                data = self._raw(name, event_set, timeout_ms)
            except _FunctionMissing:
                continue
            except NVMLError as err:
                code = getattr(err, "value", None)
                if code == ERR_TIMEOUT:
                    return None
                if code in _UNAVAILABLE:
                    raise NvmlUnavailable(f"{name}: {err}") from err
                raise
            break
        else:
            raise NvmlUnavailable("no nvmlEventSetWait entry point")
        if not int(data.eventType) & XID_EVENT:
            return None
        try:
            uuid = self.uuid(data.device)
        except DeviceLost:
            uuid = None
        return XidEvent(uuid=uuid, xid=int(data.eventData))

    def free_event_set(self, event_set: Any) -> None:
        """Free an event set."""
        try:
            self._raw("nvmlEventSetFree", event_set)
        except (_FunctionMissing, DeviceLost, NVMLError):
            log.debug("nvmlEventSetFree failed", exc_info=True)
