"""NvmlBinding over the real pynvml module, with NVML itself faked at its C entry points.

Two layers, as gpustat tests it: some tests replace a pynvml function, others replace the
C function pointers pynvml looks up, so pynvml's own wrappers (struct packing, the
INSUFFICIENT_SIZE dance, error classes) run for real.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pynvml
import pytest

from node_exporter_ml.nvml.binding import (
    DeviceLost,
    MemoryInfo,
    NvmlBinding,
    NvmlUnavailable,
    ProcessInfo,
    ProcessUtilization,
    XidEvent,
    nvml_error,
)
from node_exporter_ml.nvml.health import FabricInfo

H = object()  # a device handle: the binding passes it through untouched


def raising(name: str):
    def fn(*args, **kwargs):
        raise nvml_error(name)

    return fn


@pytest.fixture
def c_functions(monkeypatch):
    """Fake NVML C symbols: name -> callable; a missing name is FunctionNotFound, as in pynvml."""
    table: dict[str, object] = {}

    def lookup(name):
        if name not in table:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return table[name]

    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", lookup)
    return table


def test_error_classes_are_pynvmls_own():
    assert isinstance(nvml_error("GpuIsLost"), pynvml.NVMLError_GpuIsLost)
    assert isinstance(nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED), pynvml.NVMLError_NotSupported)


def test_not_supported_is_none_and_logged_once_at_debug(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="node_exporter_ml")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", raising("NotSupported"))
    nvml = NvmlBinding()
    assert nvml.power_mw(H) is None
    assert nvml.power_mw(H) is None
    lines = [r for r in caplog.records if "nvmlDeviceGetPowerUsage" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.DEBUG


@pytest.mark.parametrize("error", ["GpuIsLost", "Unknown"])
def test_lost_and_unknown_raise_device_lost(monkeypatch, error):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", raising(error))
    with pytest.raises(DeviceLost, match="nvmlDeviceGetTemperature"):
        NvmlBinding().temperature_c(H)


@pytest.mark.parametrize("error", ["Timeout", "NoPermission", "InsufficientPower"])
def test_other_errors_lose_only_that_value_with_one_warning(monkeypatch, caplog, error):
    caplog.set_level(logging.WARNING, logger="node_exporter_ml")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetEnforcedPowerLimit", raising(error))
    nvml = NvmlBinding()
    assert nvml.power_limit_mw(H) is None
    assert nvml.power_limit_mw(H) is None
    assert len(caplog.records) == 1


def test_driver_going_away_mid_run_is_unavailable(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", raising("Uninitialized"))
    with pytest.raises(NvmlUnavailable, match="nvmlDeviceGetCount"):
        NvmlBinding().device_count()


@pytest.mark.parametrize("error", ["LibraryNotFound", "DriverNotLoaded", "NoPermission"])
def test_init_failure_is_unavailable(monkeypatch, error):
    monkeypatch.setattr(pynvml, "nvmlInit", raising(error))
    with pytest.raises(NvmlUnavailable, match="nvmlInit"):
        NvmlBinding().init()


def test_init_without_the_library_for_real(monkeypatch):
    # No NVIDIA driver on CI: pynvml's own loader fails; with one, init must succeed.
    nvml = NvmlBinding()
    failure = None
    try:
        nvml.init()
    except NvmlUnavailable as err:
        failure = str(err)
    if failure is None:
        assert nvml.driver_version
        nvml.shutdown()
    else:
        assert failure.startswith("nvmlInit: ")


def test_init_reads_the_driver_version(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: b"580.159.04")
    nvml = NvmlBinding()
    nvml.init()
    assert nvml.driver_version == "580.159.04"


def test_broken_library_is_unavailable(monkeypatch):
    def broken():
        raise OSError("libnvidia-ml.so.1: invalid ELF header")

    monkeypatch.setattr(pynvml, "nvmlInit", broken)
    with pytest.raises(NvmlUnavailable, match="invalid ELF header"):
        NvmlBinding().init()


def _fill_procs(pids, with_instances):
    """A C nvmlDeviceGetComputeRunningProcesses_v* symbol reporting `pids`."""

    def fn(handle, count, procs):
        if procs is None:
            count._obj.value = len(pids)
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        for i, pid in enumerate(pids):
            procs[i].pid = pid
            procs[i].usedGpuMemory = pid * 1024
            if with_instances:
                procs[i].gpuInstanceId = 0xFFFFFFFF
                procs[i].computeInstanceId = 0xFFFFFFFF
        count._obj.value = len(pids)
        return pynvml.NVML_SUCCESS

    return fn


def test_processes_fall_back_from_v3_to_v2_once(c_functions, caplog):
    caplog.set_level(logging.WARNING, logger="node_exporter_ml")
    c_functions["nvmlDeviceGetComputeRunningProcesses_v2"] = _fill_procs([11, 12], True)
    nvml = NvmlBinding()
    nvml.driver_version = "470.57.02"
    want = [ProcessInfo(11, 11 * 1024), ProcessInfo(12, 12 * 1024)]
    assert nvml.compute_processes(H) == want
    assert nvml.compute_processes(H) == want
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == [
        "NVML nvmlDeviceGetComputeRunningProcesses_v3 is missing in driver 470.57.02; "
        "using an older entry point"
    ]


def test_processes_with_v3_on_a_current_driver(c_functions):
    c_functions["nvmlDeviceGetComputeRunningProcesses_v3"] = _fill_procs([7], True)
    assert NvmlBinding().compute_processes(H) == [ProcessInfo(7, 7 * 1024)]


def test_processes_with_no_entry_point_at_all_are_none(c_functions):
    assert NvmlBinding().compute_processes(H) is None


def test_library_mismatch_error_counts_as_a_missing_function(monkeypatch):
    def mismatch(handle):
        raise pynvml.NVMLLibraryMismatchError("use a versioned function")

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", mismatch)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: 0x4)
    assert NvmlBinding().clocks_event_reasons(H) == 0x4


def test_memory_info_v2_then_v1(c_functions, caplog):
    caplog.set_level(logging.WARNING, logger="node_exporter_ml")

    def v1(handle, mem):
        mem._obj.total, mem._obj.free, mem._obj.used = 100, 40, 60
        return pynvml.NVML_SUCCESS

    c_functions["nvmlDeviceGetMemoryInfo"] = v1
    nvml = NvmlBinding()
    assert nvml.memory(H) == MemoryInfo(100, 40, 60, None)
    assert nvml.memory(H) == MemoryInfo(100, 40, 60, None)
    assert len(caplog.records) == 1

    def v2(handle, mem):
        assert mem._obj.version == pynvml.nvmlMemory_v2
        mem._obj.total, mem._obj.free, mem._obj.used, mem._obj.reserved = 100, 40, 55, 5
        return pynvml.NVML_SUCCESS

    c_functions["nvmlDeviceGetMemoryInfo_v2"] = v2
    assert NvmlBinding().memory(H) == MemoryInfo(100, 40, 55, 5)


def test_memory_info_lost_gpu(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", raising("GpuIsLost"))
    with pytest.raises(DeviceLost):
        NvmlBinding().memory(H)


def test_field_values_decode_each_type_and_skip_failed_fields(c_functions):
    def fields(handle, count, values):
        arr = values._obj
        for i in range(count.value):
            fid = arr[i].fieldId
            if fid == pynvml.NVML_FI_DEV_MEMORY_TEMP:
                arr[i].valueType, arr[i].value.uiVal = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, 58
            elif fid == pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES:
                arr[i].valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                arr[i].value.ullVal = 3755516372
            elif fid == pynvml.NVML_FI_DEV_PERF_POLICY_POWER:
                arr[i].valueType, arr[i].value.dVal = pynvml.NVML_VALUE_TYPE_DOUBLE, 1.5
            else:
                arr[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return pynvml.NVML_SUCCESS

    c_functions["nvmlDeviceGetFieldValues"] = fields
    got = NvmlBinding().field_values(H, [82, 197, 74, 138])
    assert got == {82: 58.0, 197: 3755516372.0, 74: 1.5}


def test_field_values_lost_field_is_a_lost_gpu(c_functions):
    def fields(handle, count, values):
        values._obj[0].nvmlReturn = pynvml.NVML_ERROR_GPU_IS_LOST
        return pynvml.NVML_SUCCESS

    c_functions["nvmlDeviceGetFieldValues"] = fields
    with pytest.raises(DeviceLost):
        NvmlBinding().field_values(H, [82])


def test_process_utilization_samples_and_not_found(c_functions):
    calls = []

    def util(handle, samples, count, since):
        calls.append(since.value)
        if since.value >= 2_000:
            return pynvml.NVML_ERROR_NOT_FOUND
        if samples is None:
            count._obj.value = 1
            return pynvml.NVML_ERROR_INSUFFICIENT_SIZE
        samples[0].pid, samples[0].timeStamp, samples[0].smUtil = 415, 1_500, 99
        samples[0].memUtil, samples[0].encUtil, samples[0].decUtil = 33, 0, 0
        return pynvml.NVML_SUCCESS

    c_functions["nvmlDeviceGetProcessUtilization"] = util
    nvml = NvmlBinding()
    assert nvml.process_utilization(H, 1_000) == [ProcessUtilization(415, 1_500, 99, 33, 0, 0)]
    assert nvml.process_utilization(H, 2_000) == []  # NotFound: nobody busy since then
    assert nvml.process_utilization(H, -5) == [ProcessUtilization(415, 1_500, 99, 33, 0, 0)]
    assert calls[-1] == 0  # never a negative timestamp into a c_ulonglong


def test_process_utilization_not_supported_is_none(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetProcessUtilization", raising("NotSupported"))
    assert NvmlBinding().process_utilization(H, 0) is None


def test_process_utilization_lost(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetProcessUtilization", raising("GpuIsLost"))
    with pytest.raises(DeviceLost):
        NvmlBinding().process_utilization(H, 0)


def test_process_name_is_a_comm_like_basename(monkeypatch):
    names = {1: b"/usr/local/bin/python3.11", 2: b"tritonserver --model-repository=/m"}
    monkeypatch.setattr(pynvml, "nvmlSystemGetProcessName", lambda pid: names[pid])
    nvml = NvmlBinding()
    assert nvml.process_name(1) == "python3.11"
    assert nvml.process_name(2) == "tritonserver"


def test_process_name_of_a_gone_process_is_none(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="node_exporter_ml")
    monkeypatch.setattr(pynvml, "nvmlSystemGetProcessName", raising("NotFound"))
    assert NvmlBinding().process_name(1) is None
    assert not caplog.records


def test_pci_info_falls_back_to_the_unversioned_call(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPciInfo_v3", raising("FunctionNotFound"))
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetPciInfo", lambda h: SimpleNamespace(busId=b"00000000:3B:00.0")
    )
    assert NvmlBinding().pci_bus_id(H) == "00000000:3B:00.0"


def test_mig_slot_without_a_device_is_none(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMigDeviceHandleByIndex", raising("NotFound"))
    assert NvmlBinding().mig_handle(H, 3) is None


def test_gpm_metrics_through_the_real_struct(monkeypatch):
    def metrics_get(mg):
        assert mg.version == pynvml.NVML_GPM_METRICS_GET_VERSION
        for i in range(mg.numMetrics):
            if mg.metrics[i].metricId == 2:
                mg.metrics[i].value = 82.9
            else:
                mg.metrics[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return mg

    monkeypatch.setattr(pynvml, "nvmlGpmMetricsGet", metrics_get)
    assert NvmlBinding().gpm_metrics(None, None, [2, 3]) == {2: 82.9}


def test_gpm_sample_is_freed_when_the_device_is_lost(monkeypatch):
    freed = []
    monkeypatch.setattr(pynvml, "nvmlGpmSampleAlloc", lambda: "sample")
    monkeypatch.setattr(pynvml, "nvmlGpmSampleGet", raising("GpuIsLost"))
    monkeypatch.setattr(pynvml, "nvmlGpmSampleFree", freed.append)
    with pytest.raises(DeviceLost):
        NvmlBinding().gpm_sample(H)
    assert freed == ["sample"]


def test_gpm_unsupported_sample_is_none_and_freed(monkeypatch):
    freed = []
    monkeypatch.setattr(pynvml, "nvmlGpmSampleAlloc", lambda: "sample")
    monkeypatch.setattr(pynvml, "nvmlGpmSampleGet", raising("NotSupported"))
    monkeypatch.setattr(pynvml, "nvmlGpmSampleFree", freed.append)
    assert NvmlBinding().gpm_sample(H) is None
    assert freed == ["sample"]


def _event(event_type, data):
    ev = pynvml.c_nvmlEventData_t()
    ev.eventType, ev.eventData = event_type, data
    return ev


def test_wait_xid_decodes_events_and_times_out(monkeypatch):
    events = [_event(pynvml.nvmlEventTypeXidCriticalError, 79), _event(0x1, 0)]

    def wait(event_set, timeout_ms):
        if not events:
            raise nvml_error("Timeout")
        return events.pop(0)

    monkeypatch.setattr(pynvml, "nvmlEventSetWait_v2", wait)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda h: "GPU-x")
    nvml = NvmlBinding()
    assert nvml.wait_xid("set", 10) == XidEvent("GPU-x", 79)
    assert nvml.wait_xid("set", 10) is None  # not an XID event
    assert nvml.wait_xid("set", 10) is None  # timeout


def test_xid_event_set_skips_devices_without_xid_support(monkeypatch):
    registered = []
    monkeypatch.setattr(pynvml, "nvmlEventSetCreate", lambda: "set")
    types = {"a": pynvml.nvmlEventTypeXidCriticalError, "b": 0x1}
    monkeypatch.setattr(pynvml, "nvmlDeviceGetSupportedEventTypes", lambda h: types[h])
    monkeypatch.setattr(
        pynvml, "nvmlDeviceRegisterEvents", lambda h, t, s: registered.append((h, t, s))
    )
    assert NvmlBinding().xid_event_set(["a", "b"]) == "set"
    assert registered == [("a", pynvml.nvmlEventTypeXidCriticalError, "set")]


def test_xid_event_set_is_none_when_nothing_supports_xid(monkeypatch):
    freed = []
    monkeypatch.setattr(pynvml, "nvmlEventSetCreate", lambda: "set")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetSupportedEventTypes", raising("NotSupported"))
    monkeypatch.setattr(pynvml, "nvmlEventSetFree", freed.append)
    assert NvmlBinding().xid_event_set(["a"]) is None
    assert freed == ["set"]


def test_now_is_on_the_given_clock():
    assert NvmlBinding(clock=lambda: 12.5).now_us() == 12_500_000


def test_wait_xid_on_an_old_driver_times_out_quietly(c_functions):
    calls = []

    def wait(event_set, data, timeout):
        calls.append(timeout.value)
        return pynvml.NVML_ERROR_TIMEOUT

    c_functions["nvmlEventSetWait"] = wait  # no nvmlEventSetWait_v2 symbol
    monkeypatch_free = NvmlBinding()
    assert monkeypatch_free.wait_xid("set", 25) is None
    assert monkeypatch_free.wait_xid("set", 25) is None
    assert calls == [25, 25]


def test_wait_xid_when_nvml_went_away(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlEventSetWait_v2", raising("Uninitialized"))
    with pytest.raises(NvmlUnavailable):
        NvmlBinding().wait_xid("set", 10)


def test_mps_processes_are_marked_and_unsupported_is_none(monkeypatch):
    client = SimpleNamespace(pid=5, usedGpuMemory=1024, gpuInstanceId=0xFFFFFFFF,
                             computeInstanceId=0xFFFFFFFF)  # fmt: skip
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMPSComputeRunningProcesses_v3", lambda h: [client])
    assert NvmlBinding().mps_processes(H) == [ProcessInfo(5, 1024, mps_client=True)]
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetMPSComputeRunningProcesses_v3", raising("NotSupported")
    )
    assert NvmlBinding().mps_processes(H) is None


def test_fabric_info_falls_back_to_v2_once_the_driver_rejects_v3():
    calls: list[str] = []

    class V3(SimpleNamespace):
        pass

    class V2(SimpleNamespace):
        pass

    def get(h, info):
        calls.append(type(info).__name__)
        if isinstance(info, V3):
            raise nvml_error(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        info.state, info.status, info.healthMask = 3, 0, 1

    lib = SimpleNamespace(
        c_nvmlGpuFabricInfo_v3_t=V3, c_nvmlGpuFabricInfo_v2_t=V2, nvmlDeviceGetGpuFabricInfoV=get
    )
    nvml = NvmlBinding(lib)
    expected = FabricInfo(state=3, status=0, health_mask=1, health_summary=None)
    assert nvml.fabric_info(H) == expected
    assert nvml.fabric_info(H) == expected
    assert calls == ["V3", "V2", "V2"]
