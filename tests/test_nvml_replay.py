"""The replay backend answers like pynvml: same shapes, same exception classes, frame pacing."""

from __future__ import annotations

import json
import time

import pynvml
import pytest

from node_exporter_ml.nvml.binding import NvmlBinding
from node_exporter_ml.nvml.replay import Replay, ReplayError
from tests.nvml_helpers import NEIGHBOUR, START, Clock, scenario


def neighbour(clock: Clock) -> Replay:
    return Replay.from_file(str(NEIGHBOUR), clock=clock)


def test_frames_advance_with_the_clock_and_stay_on_the_last():
    clock = Clock()
    replay = neighbour(clock)
    h = replay.nvmlDeviceGetHandleByIndex(0)
    frames = json.loads(NEIGHBOUR.read_text())["frames"]
    for i in (0, 1, 17, 39):
        clock.at_frame(i)
        assert replay.frame_index() == i
        assert replay.nvmlDeviceGetPowerUsage(h) == frames[i]["devices"][0]["power_mw"]
    clock.at_frame(500)
    assert replay.frame_index() == 39
    clock.now = START - 10  # before the start: frame 0
    assert replay.frame_index() == 0


def test_static_calls_answer_the_recorded_device():
    replay = neighbour(Clock())
    h = replay.nvmlDeviceGetHandleByIndex(0)
    assert replay.nvmlDeviceGetCount() == 1
    assert replay.nvmlSystemGetDriverVersion() == "580.159.04"
    assert replay.nvmlDeviceGetUUID(h) == "GPU-478bad86-921b-0395-2f3f-4ae082da1bb5"
    assert replay.nvmlDeviceGetPciInfo_v3(h).busId == "00000000:00:06.0"
    assert replay.nvmlDeviceGetCudaComputeCapability(h) == (9, 0)
    assert replay.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM) == 1980
    assert replay.nvmlDeviceGetMigMode(h) == [0, 0]
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        replay.nvmlDeviceGetHandleByIndex(1)


def test_missing_keys_raise_not_supported():
    replay = neighbour(Clock())
    h = replay.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        replay.nvmlDeviceGetPerformanceState(h)  # not in the recording
    with pytest.raises(pynvml.NVMLError_NotSupported):
        replay.nvmlDeviceGetEncoderUtilization(h)
    fields = replay.nvmlDeviceGetFieldValues(h, [82])
    assert fields[0].nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED


def test_process_utilization_is_the_newest_sample_after_since():
    clock = Clock()
    replay = neighbour(clock)
    h = replay.nvmlDeviceGetHandleByIndex(0)
    clock.at_frame(24)
    now_us = int(clock.now * 1e6)
    got = replay.nvmlDeviceGetProcessUtilization(h, now_us - 1_000_000)
    assert {(s.pid, s.smUtil) for s in got} == {(415, 40), (476, 60)}
    assert all(s.timeStamp <= now_us for s in got)  # rebased onto our clock, never ahead
    newest = max(s.timeStamp for s in got)
    with pytest.raises(pynvml.NVMLError_NotFound):
        replay.nvmlDeviceGetProcessUtilization(h, newest)
    clock.at_frame(25)
    got = replay.nvmlDeviceGetProcessUtilization(h, newest)
    assert [(s.pid, s.smUtil) for s in got] == [(476, 99)]


def test_process_utilization_looks_back_over_skipped_frames():
    clock = Clock()
    replay = neighbour(clock)
    h = replay.nvmlDeviceGetHandleByIndex(0)
    clock.at_frame(20)
    since = int(clock.now * 1e6)
    clock.at_frame(25)  # five frames later: one sample per pid, the newest
    got = {s.pid: s.smUtil for s in replay.nvmlDeviceGetProcessUtilization(h, since)}
    assert got == {415: 40, 476: 99}


def test_injected_errors_use_pynvml_classes():
    clock = Clock()
    replay = Replay.from_file(str(scenario("lost-gpu")), clock=clock)
    clock.at_frame(2)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        replay.nvmlDeviceGetHandleByIndex(1)
    h0 = replay.nvmlDeviceGetHandleByIndex(0)
    clock.at_frame(5)
    with pytest.raises(pynvml.NVMLError_Unknown):
        replay.nvmlDeviceGetPowerUsage(h0)
    assert replay.nvmlDeviceGetTemperature(h0, 0) == 60


def test_missing_functions_raise_function_not_found():
    replay = Replay.from_file(str(scenario("old-driver")), clock=Clock())
    h = replay.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        replay.nvmlDeviceGetComputeRunningProcesses_v3(h)
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        replay.nvmlDeviceGetMemoryInfo(h, pynvml.nvmlMemory_v2)
    assert replay.nvmlDeviceGetMemoryInfo(h).used == 2106127360
    assert [p.pid for p in replay.nvmlDeviceGetComputeRunningProcesses(h)] == [3001]


def test_init_error_until():
    clock = Clock()
    replay = Replay.from_file(str(scenario("no-driver")), clock=clock)
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        replay.nvmlInit()
    clock.now = START + 91
    replay.nvmlInit()
    assert replay.init_count == 2


def test_gpm_averages_the_frames_between_two_samples():
    clock = Clock()
    replay = neighbour(clock)
    nvml = NvmlBinding(replay, clock=clock)
    h = replay.nvmlDeviceGetHandleByIndex(0)
    frames = json.loads(NEIGHBOUR.read_text())["frames"]
    clock.at_frame(20)
    first = nvml.gpm_sample(h)
    clock.at_frame(22)
    second = nvml.gpm_sample(h)
    got = nvml.gpm_metrics(first, second, [2, 10, 999])
    want = sum(frames[i]["devices"][0]["gpm"]["sm_util"] for i in (21, 22)) / 2
    assert got[2] == pytest.approx(want)
    assert 10 in got
    assert 999 not in got


def test_events_are_delivered_once_to_registered_devices():
    clock = Clock()
    replay = Replay.from_file(str(scenario("multi-gpu")), clock=clock)
    clock.at_frame(0)
    event_set = replay.nvmlEventSetCreate()
    replay.nvmlDeviceRegisterEvents(replay.nvmlDeviceGetHandleByIndex(1), 0x8, event_set)
    with pytest.raises(pynvml.NVMLError_Timeout):
        replay.nvmlEventSetWait_v2(event_set, 10)
    clock.at_frame(3)
    got = [replay.nvmlEventSetWait_v2(event_set, 10) for _ in range(2)]
    assert [(e.device.index, e.eventData) for e in got] == [(1, 79), (1, 79)]
    started = time.monotonic()
    with pytest.raises(pynvml.NVMLError_Timeout):  # GPU 0's XID 13 is not registered
        replay.nvmlEventSetWait_v2(event_set, 50)
    assert time.monotonic() - started >= 0.04


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "top level: expected a JSON object"),
        ({"format": "nodeml-nvml-replay/1", "devices": [{}], "frames": [{"devices": [{}]}]},
         "devices[0].uuid"),
        ({"format": "nodeml-nvml-replay/1", "devices": [], "frames": [{"devices": []}],
          "frame_period_s": 0}, "frame_period_s: expected a positive number"),
        ({"format": "nodeml-nvml-replay/1", "devices": [], "frames": [3]}, "frames[0]"),
    ],
    ids=["not an object", "device without uuid", "zero period", "frame not an object"],
)  # fmt: skip
def test_invalid_documents_name_the_problem(doc, message):
    with pytest.raises(ReplayError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Replay(doc, source="x.json")


def test_unreadable_file(tmp_path):
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ReplayError, match="expected UTF-8 JSON"):
        Replay.from_file(str(path))
