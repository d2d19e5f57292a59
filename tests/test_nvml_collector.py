"""The nvml collector over replay files: the H100 recording (golden) and fault scenarios."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from node_exporter_ml.collectors.base import NoDataError
from node_exporter_ml.collectors.nvml import INIT_RETRY_SECONDS, NvmlCollector
from node_exporter_ml.nvml.binding import nvml_error
from node_exporter_ml.nvml.health import WATCHED_XIDS
from node_exporter_ml.nvml.replay import Replay
from node_exporter_ml.registry import load_collectors
from node_exporter_ml.snapshot import NvmlData, ProcessData, ProcessSample
from tests.nvml_helpers import (
    NEIGHBOUR,
    NVML_FIXTURES,
    START,
    Clock,
    make_collector,
    render,
    run_to,
    scenario,
    snapshot_of,
    value,
    values,
)

UUID = "GPU-478bad86-921b-0395-2f3f-4ae082da1bb5"
GOLDEN_FRAMES = (5, 24, 36)
SERVER, NEIGHBOUR_PID = "415", "476"


def recorded(frame: int) -> dict:
    return json.loads(NEIGHBOUR.read_text())["frames"][frame]["devices"][0]


# --- the H100 neighbour recording ------------------------------------------------------------


GOLDENS = [
    *((NEIGHBOUR, f"h100-neighbour-frame{f:02d}", f) for f in GOLDEN_FRAMES),
    (scenario("mps"), "mps-frame03", 3),
    (scenario("two-tenants"), "two-tenants-frame09", 9),
    (scenario("multi-gpu"), "multi-gpu-frame03", 3),
    (scenario("mig"), "mig-frame02", 2),
    (scenario("old-driver"), "old-driver-frame03", 3),
    (scenario("lost-gpu"), "lost-gpu-frame02", 2),
]


@pytest.mark.parametrize(("replay", "name", "frame"), GOLDENS, ids=[g[1] for g in GOLDENS])
def test_golden(replay, name, frame, update_golden):
    clock = Clock()
    collector = make_collector(replay, clock)
    text = render(collector, run_to(collector, clock, frame))
    golden = NVML_FIXTURES / "golden" / f"{name}.prom"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(text)
    assert text.decode() == golden.read_text()


@pytest.mark.parametrize("name", [g[1] for g in GOLDENS])
def test_golden_passes_promtool(name):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test-deps` installs the Debian package prometheus"
    golden = NVML_FIXTURES / "golden" / f"{name}.prom"
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=golden.read_bytes(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_neighbour_device_series_carry_recorded_values():
    clock = Clock()
    collector = make_collector(NEIGHBOUR, clock)
    text = render(collector, run_to(collector, clock, 24))
    rec = recorded(24)
    gpu = {"gpu": "0", "uuid": UUID}
    assert value(text, "nodeml_gpu_power_watts", **gpu) == rec["power_mw"] / 1000
    assert value(text, "nodeml_gpu_energy_joules_total", **gpu) == rec["energy_mj"] / 1000
    assert value(text, "nodeml_gpu_temperature_celsius", **gpu) == rec["temperature_c"]
    assert value(text, "nodeml_gpu_sm_clock_hertz", **gpu) == rec["clock_mhz"]["sm"] * 1e6
    assert value(text, "nodeml_gpu_utilization_ratio", **gpu) == rec["utilization"]["gpu"] / 100
    assert value(text, "nodeml_gpu_memory_used_bytes", **gpu) == rec["memory"]["used"]
    assert value(text, "nodeml_gpu_power_limit_watts", **gpu) == 700.0
    assert value(text, "nodeml_gpu_sm_active_ratio", **gpu) == pytest.approx(
        rec["gpm"]["sm_util"] / 100
    )
    assert value(text, "nodeml_gpu_clock_event_active", reason="sw_power_cap", **gpu) == 1.0
    assert value(text, "nodeml_gpu_clock_event_active", reason="hw_slowdown", **gpu) == 0.0
    assert value(text, "nodeml_gpu_lost", **gpu) == 0.0
    info = value(
        text,
        "nodeml_gpu_info",
        name="NVIDIA H100 80GB HBM3",
        driver_version="580.159.04",
        pci_bus_id="00000000:00:06.0",
        serial="1653823056240",
        compute_capability="9.0",
        mig_mode="disabled",
        **gpu,
    )
    assert info == 1.0
    # Recorded through memory info v1: no reserved figure, so no series (not a made-up 0).
    assert value(text, "nodeml_gpu_memory_reserved_bytes", **gpu) is None
    assert value(text, "nodeml_gpu_clock_event_active", reason="sw_power_cap", gpu="0") == 1.0
    before = render(collector, run_to(make_collector(NEIGHBOUR, c := Clock()), c, 5))
    assert value(before, "nodeml_gpu_clock_event_active", reason="sw_power_cap", gpu="0") == 0.0


@pytest.mark.parametrize("interval", [1, 5], ids=["1s ticks", "5s ticks"])
def test_neighbour_takes_the_sm_during_its_phase(interval):
    clock = Clock()
    collector = make_collector(NEIGHBOUR, clock, interval=float(interval))
    checked = 0
    for i in range(0, 40, interval):
        clock.at_frame(i)
        data = collector.update(None)
        procs = {p.pid: p for p in data.devices[0].processes}
        assert procs[415].used_memory_bytes == recorded(i)["processes"][0]["used_memory_bytes"]
        if 20 <= i <= 31:  # the neighbour holds the GPU (t = 21..32 s)
            assert procs[476].used_memory_bytes == 5305794560
            assert procs[476].sm_ratio > 0.5
            assert procs[476].sm_ratio > procs[415].sm_ratio
            checked += 1
        elif i < 19 or i > 31:
            assert 476 not in procs
    assert checked >= 2


def test_both_processes_are_exposed_with_memory_and_sm_share():
    clock = Clock()
    collector = make_collector(NEIGHBOUR, clock)
    text = render(collector, run_to(collector, clock, 24))
    for pid, memory in ((SERVER, 2038431744), (NEIGHBOUR_PID, 5305794560)):
        labels = {"gpu": "0", "uuid": UUID, "pid": pid, "comm": ""}
        assert value(text, "nodeml_process_gpu_memory_bytes", **labels) == memory
        assert value(text, "nodeml_process_gpu_sm_utilization_ratio", **labels) is not None
        assert value(text, "nodeml_process_gpu_sm_seconds_total", **labels) > 0
    assert value(text, "nodeml_process_gpu_sm_utilization_ratio", pid=NEIGHBOUR_PID) == 0.6
    assert value(text, "nodeml_process_gpu_sm_utilization_ratio", pid=SERVER) == 0.4


def test_process_without_a_sample_in_the_interval_reads_zero_not_stale():
    clock = Clock()
    collector = make_collector(NEIGHBOUR, clock)
    data = run_to(collector, clock, 24)  # frame 24: 415 at 40 %
    assert {p.pid: p.sm_ratio for p in data.devices[0].processes}[415] == 0.4
    clock.at_frame(25)  # frame 25: only 476 has a sample
    data = collector.update(None)
    ratios = {p.pid: p.sm_ratio for p in data.devices[0].processes}
    assert ratios == {415: 0.0, 476: 0.99}


def test_sm_seconds_integrate_the_share_over_time():
    clock = Clock()
    collector = make_collector(scenario("multi-gpu"), clock)
    data = run_to(collector, clock, 3)
    p = {p.pid: p for p in data.devices[0].processes}
    # 1001 is at 70 % every second; the first tick only starts the integral.
    assert p[1001].sm_seconds_total == pytest.approx(3 * 0.7)
    # 1002 has a sample every other frame (frames 0 and 2): 0.2 s from the tick at frame 2.
    assert p[1002].sm_seconds_total == pytest.approx(0.2)
    clock.at_frame(5)  # a 2 s gap: the share of the newest sample over both seconds
    data = collector.update(None)
    p = {p.pid: p for p in data.devices[0].processes}
    assert p[1001].sm_seconds_total == pytest.approx(5 * 0.7)


def test_series_of_a_process_that_left_vanish():
    clock = Clock()
    collector = make_collector(NEIGHBOUR, clock)
    during = render(collector, run_to(collector, clock, 30))
    assert value(during, "nodeml_process_gpu_memory_bytes", pid=NEIGHBOUR_PID) is not None
    clock.at_frame(33)
    after = render(collector, collector.update(None))
    assert value(after, "nodeml_process_gpu_memory_bytes", pid=NEIGHBOUR_PID) is None
    assert value(after, "nodeml_process_gpu_sm_seconds_total", pid=NEIGHBOUR_PID) is None


def test_process_series_carry_workload_labels_and_procfs_comm():
    clock = Clock()
    collector = make_collector(NEIGHBOUR, clock)
    data = run_to(collector, clock, 24)
    snapshot = snapshot_of(data, {415: {"namespace": "ml", "pod": "server-0", "container": "m"}})
    procs = ProcessData(processes={476: ProcessSample(pid=476, comm="python3")})
    from node_exporter_ml.snapshot import CollectorResult

    snapshot = snapshot.replace(
        results={**snapshot.results, "process": CollectorResult("process", True, 0.0, procs)}
    )
    text = render(collector, data, snapshot)
    assert (
        value(
            text,
            "nodeml_process_gpu_memory_bytes",
            pid=SERVER,
            namespace="ml",
            pod="server-0",
            container="m",
            comm="",
        )
        == 2038431744
    )
    assert value(text, "nodeml_process_gpu_memory_bytes", pid=NEIGHBOUR_PID, comm="python3")
    keys = {k for (n, ls), _ in values(text).items() if n == "nodeml_process_gpu_memory_bytes"
            for k, v in ls if dict(ls)["pid"] == NEIGHBOUR_PID}  # fmt: skip
    assert keys == {"gpu", "uuid", "pid", "comm"}


def test_collector_is_registered_and_on_by_default():
    reg = load_collectors()["nvml"]
    assert reg.factory is NvmlCollector
    assert reg.default_enabled


# --- several GPUs, unsupported fields, old drivers, MIG --------------------------------------


def test_several_gpus_each_with_what_it_supports():
    clock = Clock()
    collector = make_collector(scenario("multi-gpu"), clock)
    text = render(collector, run_to(collector, clock, 3))
    h100 = {"gpu": "0", "uuid": "GPU-11111111-2222-3333-4444-555555555555"}
    a10 = {"gpu": "1", "uuid": "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}
    assert value(text, "nodeml_gpu_sm_active_ratio", **h100) == pytest.approx(0.8)
    assert value(text, "nodeml_gpu_pcie_receive_bytes_per_second", **h100) == 20 * 1024 * 1024
    assert value(text, "nodeml_gpu_sm_active_ratio", **a10) is None  # no GPM: absent, not 0
    assert value(text, "nodeml_gpu_info", mig_mode="", name="NVIDIA A10", **a10) == 1.0
    assert value(text, "nodeml_gpu_memory_reserved_bytes", **a10) == 500 * 2**20
    assert value(text, "nodeml_gpu_memory_temperature_celsius", **a10) == 52.0
    assert value(text, "nodeml_gpu_pcie_replays_total", **a10) == 2.0
    assert value(text, "nodeml_gpu_remapped_rows_total", error="uncorrectable", **a10) == 0.0
    assert value(text, "nodeml_gpu_row_remap_failure", **a10) == 0.0
    assert value(text, "nodeml_gpu_ecc_errors_total", error="correctable", counter="aggregate",
                 **a10) == 1.0  # fmt: skip
    assert value(text, "nodeml_gpu_clock_violation_seconds_total", policy="power", **h100) == (
        pytest.approx((1_000_000 + 3 * 650_000) * 1000 / 1e9)
    )
    assert value(text, "nodeml_gpu_nvlink_transmit_bytes_total", **h100) is None
    assert value(text, "nodeml_gpu_clock_event_active", reason="sw_power_cap", **h100) == 1.0
    assert (
        value(text, "nodeml_process_gpu_memory_bytes", pid="2001", comm="vllm", **a10) == 3 * 2**30
    )
    assert value(text, "nodeml_process_gpu_encoder_utilization_ratio", pid="2001") == 0.05
    assert (
        value(text, "nodeml_process_gpu_memory_bytes", pid="1001", comm="python3.11") == 8 * 2**30
    )


def test_unsupported_calls_omit_their_series(caplog):
    caplog.set_level(logging.DEBUG, logger="node_exporter_ml")
    clock = Clock()
    collector = make_collector(scenario("unsupported"), clock)
    text = render(collector, run_to(collector, clock, 1))
    gpu = {"gpu": "0", "uuid": "GPU-74747474-0000-0000-0000-000000000000"}
    for name in (
        "nodeml_gpu_power_limit_watts",
        "nodeml_gpu_memory_temperature_celsius",
        "nodeml_gpu_pcie_replays_total",
        "nodeml_gpu_sm_active_ratio",
        "nodeml_gpu_memory_reserved_bytes",
        "nodeml_gpu_encoder_utilization_ratio",
        "nodeml_process_gpu_sm_utilization_ratio",
        "nodeml_process_gpu_sm_seconds_total",
        "nodeml_gpu_mig_device_info",
    ):
        assert value(text, name) is None, name
    assert value(text, "nodeml_gpu_info", serial="", mig_mode="", **gpu) == 1.0
    assert value(text, "nodeml_process_gpu_memory_bytes", pid="3001") == 2 * 2**30
    assert value(text, "nodeml_gpu_clock_event_active", reason="gpu_idle", **gpu) == 1.0
    # No energy counter: integrated from the power readings (70 W over the 1 s between ticks).
    assert value(text, "nodeml_gpu_energy_joules_total", **gpu) == pytest.approx(70.0)
    debug_lines = [r.getMessage() for r in caplog.records if "not supported" in r.getMessage()]
    assert len(debug_lines) == len(set(debug_lines))  # once per function, not per tick


def test_a_timeout_loses_one_value_for_one_tick(caplog):
    caplog.set_level(logging.WARNING, logger="node_exporter_ml")
    clock = Clock()
    collector = make_collector(scenario("unsupported"), clock)
    text = render(collector, run_to(collector, clock, 2))  # frame 2: temperature times out
    assert value(text, "nodeml_gpu_temperature_celsius") is None
    assert value(text, "nodeml_gpu_power_watts") == 70.0
    clock.at_frame(3)
    assert value(render(collector, collector.update(None)), "nodeml_gpu_temperature_celsius") == 50
    warnings = [r for r in caplog.records if "nvmlDeviceGetTemperature" in r.getMessage()]
    assert len(warnings) == 1
    assert "Timeout" in warnings[0].getMessage()


def test_old_driver_falls_back_to_older_entry_points(caplog):
    caplog.set_level(logging.WARNING, logger="node_exporter_ml")
    clock = Clock()
    collector = make_collector(scenario("old-driver"), clock)
    data = run_to(collector, clock, 3)
    gpu = data.devices[0]
    assert gpu.pci_bus_id == "00000000:3b:00.0"  # nvmlDeviceGetPciInfo instead of _v3
    assert gpu.clock_events == frozenset({"gpu_idle"})  # ...ThrottleReasons instead
    assert gpu.memory_used_bytes == 2106127360
    assert gpu.memory_reserved_bytes is None
    assert [(p.pid, p.used_memory_bytes, p.sm_ratio) for p in gpu.processes] == [
        (3001, 2 * 2**30, 0.25)
    ]  # unversioned process list
    assert gpu.sm_active_ratio is None  # no GPM entry points at all
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "nvmlDeviceGetComputeRunningProcesses_v3 is missing in driver 450.80.02" in text
    assert "nvmlDeviceGetMemoryInfo_v2 is missing in driver 450.80.02" in text
    assert text.count("nvmlDeviceGetComputeRunningProcesses_v3") == 1  # once, not per tick


def test_mig_instances_and_their_processes():
    clock = Clock()
    collector = make_collector(scenario("mig"), clock)
    text = render(collector, run_to(collector, clock, 2))
    gpu = {"gpu": "0", "uuid": "GPU-478bad86-921b-0395-2f3f-4ae082da1bb5"}
    assert value(text, "nodeml_gpu_info", mig_mode="enabled", **gpu) == 1.0
    assert value(text, "nodeml_gpu_utilization_ratio", **gpu) is None  # not supported under MIG
    assert value(text, "nodeml_gpu_instance_memory_used_bytes", gpu_instance="1") == 10 * 2**30
    assert value(text, "nodeml_gpu_instance_memory_total_bytes", gpu_instance="5") == 20 * 2**30
    assert (
        value(text, "nodeml_gpu_compute_instance_memory_used_bytes", gpu_instance="1",
              compute_instance="1")
        == 3 * 2**30
    )  # fmt: skip
    assert value(text, "nodeml_gpu_mig_device_info", gpu_instance="5", compute_instance="0",
                 mig_uuid="MIG-55555555-0000-0000-0000-000000000001") == 1.0  # fmt: skip
    assert value(text, "nodeml_gpu_sm_active_ratio", gpu_instance="1") == pytest.approx(0.6)
    assert value(text, "nodeml_gpu_sm_active_ratio", gpu_instance="5") == pytest.approx(0.1)
    # Under MIG the GPU-wide GPM series give way to the per-instance ones (no double count).
    sm_series = [ls for (n, ls) in values(text) if n == "nodeml_gpu_sm_active_ratio"]
    assert all(dict(ls).get("gpu_instance") for ls in sm_series)
    assert value(text, "nodeml_process_gpu_memory_bytes", pid="4002", gpu_instance="1",
                 compute_instance="1", comm="python3") == 3 * 2**30  # fmt: skip
    assert value(text, "nodeml_process_gpu_sm_utilization_ratio") is None
    assert value(text, "nodeml_process_gpu_sm_seconds_total") is None


# --- lost GPUs, missing driver, bad replay files ---------------------------------------------


def test_a_lost_gpu_is_dropped_and_flagged_while_the_others_stay(caplog):
    caplog.set_level(logging.ERROR, logger="node_exporter_ml")
    clock = Clock()
    collector = make_collector(scenario("lost-gpu"), clock)
    u0, u1 = "GPU-11111111-2222-3333-4444-555555555555", "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    data = run_to(collector, clock, 2)  # GPU 1 lost from frame 2
    assert [d.uuid for d in data.devices] == [u0]
    text = render(collector, data)
    assert value(text, "nodeml_gpu_lost", gpu="1", uuid=u1) == 1.0
    assert value(text, "nodeml_gpu_lost", gpu="0", uuid=u0) == 0.0
    assert value(text, "nodeml_gpu_power_watts", gpu="1") is None
    assert value(text, "nodeml_process_gpu_memory_bytes", pid="2001") is None
    assert value(text, "nodeml_process_gpu_memory_bytes", pid="1001") == 8 * 2**30
    clock.at_frame(3)
    collector.update(None)
    lost_logs = [r for r in caplog.records if "is lost" in r.getMessage()]
    assert len(lost_logs) == 1  # once while it stays lost
    caplog.set_level(logging.INFO, logger="node_exporter_ml")
    clock.at_frame(4)  # back
    data = collector.update(None)
    assert [d.uuid for d in data.devices] == [u0, u1]
    assert not data.lost
    back = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    assert back == ["GPU 1 (GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee) answers again"]
    clock.at_frame(5)  # GPU 0 answers Unknown on the power reading
    data = collector.update(None)
    assert [d.uuid for d in data.devices] == [u1]
    assert [(g.index, g.uuid) for g in data.lost] == [(0, u0)]
    # It keeps failing its readings (the replay stays on the last frame): still one line each,
    # never "answers again" in between, since its handle still answers.
    for _ in range(3):
        clock.now += 1.0
        collector.update(None)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("GPU 0" in m and "is lost" in m for m in messages) == 1
    assert not any("GPU 0" in m and "answers again" in m for m in messages)


def test_no_driver_reports_no_data_and_retries_every_minute(caplog):
    caplog.set_level(logging.DEBUG, logger="node_exporter_ml")
    clock = Clock()
    replay = Replay.from_file(str(scenario("no-driver")), clock=clock)
    collector = make_collector(scenario("no-driver"), clock, library=replay)
    for t in (0.0, 1.0, 30.0, INIT_RETRY_SECONDS - 1):
        clock.now = START + t
        with pytest.raises(NoDataError, match=r"Driver Not Loaded|within 60s"):
            collector.update(None)
    assert replay.init_count == 1  # not retried before a minute passed
    clock.now = START + INIT_RETRY_SECONDS + 1  # second attempt, the driver still loads
    with pytest.raises(NoDataError, match="Driver Not Loaded"):
        collector.update(None)
    assert replay.init_count == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "NVIDIA driver" in errors[0].getMessage()
    clock.now = START + 2 * INIT_RETRY_SECONDS + 2  # past init_error_until_s: it works
    data = collector.update(None)
    assert [d.name for d in data.devices] == ["Tesla T4"]
    assert any("NVML initialised" in r.getMessage() for r in caplog.records)


class _Unloading:
    """Replay whose driver goes away (Uninitialized) while the collector runs."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self.gone = False

    def __getattr__(self, name: str):
        return getattr(self.replay, name)

    def nvmlDeviceGetCount(self):  # noqa: N802
        if self.gone:
            raise nvml_error("Uninitialized")
        return self.replay.nvmlDeviceGetCount()


def test_driver_going_away_mid_run_turns_into_no_data_and_recovers():
    clock = Clock()
    lib = _Unloading(Replay.from_file(str(scenario("multi-gpu")), clock=clock))
    collector = make_collector(scenario("multi-gpu"), clock, library=lib)
    assert len(run_to(collector, clock, 1).devices) == 2
    lib.gone = True
    clock.at_frame(2)
    with pytest.raises(NoDataError, match="Uninitialized"):
        collector.update(None)
    lib.gone = False
    clock.now += INIT_RETRY_SECONDS + 1
    assert len(collector.update(None).devices) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "line 1: expected valid JSON"),
        ('{"format": "other/1"}', 'format: expected "nodeml-nvml-replay/1"'),
        (
            '{"format": "nodeml-nvml-replay/1", "devices": [{"uuid": "GPU-x"}], "frames": '
            '[{"devices": []}]}',
            "frames[0].devices: expected 1 objects",
        ),
        ('{"format": "nodeml-nvml-replay/1", "devices": [], "frames": []}', "frames: expected"),
    ],
    ids=["not json", "wrong format", "frame without its devices", "no frames"],
)
def test_bad_replay_file_is_a_clear_no_data(tmp_path, caplog, content, message):
    path = tmp_path / "bad.nvml.json"
    path.write_text(content)
    caplog.set_level(logging.ERROR, logger="node_exporter_ml")
    collector = make_collector(path, Clock())
    with pytest.raises(NoDataError) as err:
        collector.update(None)
    assert [
        r.getMessage().endswith("check the file given to --nvml.replay") for r in caplog.records
    ] == [True]
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_replay_file_is_a_clear_no_data(tmp_path):
    collector = make_collector(tmp_path / "nope.json", Clock())
    with pytest.raises(NoDataError, match="cannot read replay file"):
        collector.update(None)


# --- XID events ------------------------------------------------------------------------------


async def _xids(collector: NvmlCollector, want: int) -> NvmlData:
    deadline = time.monotonic() + 5
    while True:
        data = await asyncio.to_thread(collector.update, None)
        if sum(x.count for x in data.xid_errors) >= want or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.05)


async def test_xid_events_are_counted_from_the_event_thread():
    clock = Clock()
    clock.at_frame(0)
    collector = make_collector(scenario("multi-gpu"), clock)
    await collector.start()
    try:
        data = await asyncio.to_thread(collector.update, None)
        # Every watched XID of every GPU starts at 0, so increase() sees the first event.
        before = {(x.index, x.xid): x.count for x in data.xid_errors}
        assert before == {(g, xid): 0 for g in (0, 1) for xid in WATCHED_XIDS}
        clock.at_frame(2)
        data = await _xids(collector, 3)
    finally:
        await collector.stop()
    counts = {(x.index, x.xid): x.count for x in data.xid_errors if x.count}
    assert counts == {(1, 79): 2, (0, 13): 1}
    text = render(collector, data)
    assert value(text, "nodeml_gpu_xid_errors_total", gpu="1", xid="79",
                 uuid="GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee") == 2.0  # fmt: skip
    assert value(text, "nodeml_gpu_xid_errors_total", gpu="1", xid="48",
                 uuid="GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee") == 0.0  # fmt: skip


async def test_xid_events_through_the_unversioned_wait_on_an_old_driver():
    clock = Clock()
    clock.at_frame(0)
    collector = make_collector(scenario("old-driver"), clock)
    await collector.start()
    try:
        clock.at_frame(1)
        data = await _xids(collector, 1)
    finally:
        await collector.stop()
    assert [(x.index, x.xid, x.count) for x in data.xid_errors if x.count] == [(0, 48, 1)]


async def test_start_without_a_driver_keeps_the_agent_running():
    clock = Clock()
    collector = make_collector(scenario("no-driver"), clock)
    await collector.start()  # init fails: no thread, no exception
    with pytest.raises(NoDataError):
        await asyncio.to_thread(collector.update, None)
    await collector.stop()


def test_every_fixture_is_a_valid_replay():
    for path in sorted(Path(NVML_FIXTURES).glob("*.nvml.json")):
        Replay.from_file(str(path))


class _Recording:
    """A replay that records the NVML functions called on it."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        attr = getattr(self.replay, name)
        if name.startswith("nvml") and callable(attr):
            self.calls.append(name)
        return attr


def test_never_the_sleeping_pcie_call_and_static_facts_once():
    clock = Clock()
    lib = _Recording(Replay.from_file(str(NEIGHBOUR), clock=clock))
    collector = make_collector(NEIGHBOUR, clock, library=lib)
    run_to(collector, clock, 1)
    first = list(lib.calls)
    lib.calls.clear()
    clock.at_frame(2)
    collector.update(None)
    assert "nvmlDeviceGetPcieThroughput" not in first + lib.calls  # sleeps 20 ms per call
    for static in ("nvmlDeviceGetName", "nvmlDeviceGetSerial", "nvmlDeviceGetHandleByIndex",
                   "nvmlDeviceGetMaxClockInfo", "nvmlGpmQueryDeviceSupport"):  # fmt: skip
        assert static in first
        assert static not in lib.calls
    assert lib.calls.count("nvmlDeviceGetProcessUtilization") == 1
    assert lib.calls.count("nvmlGpmSampleGet") == 1


def test_energy_rides_in_the_field_batch_where_the_driver_has_it():
    clock = Clock()
    lib = _Recording(Replay.from_file(str(scenario("multi-gpu")), clock=clock))
    collector = make_collector(scenario("multi-gpu"), clock, library=lib)
    data = run_to(collector, clock, 1)
    h100, a10 = data.devices
    assert h100.energy_joules_total == (1_000_000 + 650_000 + 7) / 1000  # field 83
    assert a10.energy_joules_total == (5_000_000 + 120_000) / 1000  # its own call
    assert lib.calls.count("nvmlDeviceGetTotalEnergyConsumption") == 2  # A10 only, 2 ticks


class _EventsGoAway(_Unloading):
    def nvmlEventSetWait_v2(self, event_set, timeout_ms):  # noqa: N802
        if self.gone:
            raise nvml_error("Uninitialized")
        return self.replay.nvmlEventSetWait_v2(event_set, timeout_ms)


async def test_xid_watch_ends_with_nvml_and_restarts_with_it():
    clock, frames = Clock(), Clock()  # the collector's retry clock, the replay's frame clock
    frames.at_frame(0)
    replay = await asyncio.to_thread(Replay.from_file, str(scenario("multi-gpu")), frames)
    lib = _EventsGoAway(replay)
    collector = make_collector(scenario("multi-gpu"), clock, library=lib)
    await collector.start()
    try:
        first = collector._event_thread
        assert first is not None
        lib.gone = True
        await asyncio.to_thread(first.join, 5)
        assert not first.is_alive()
        with pytest.raises(NoDataError):
            await asyncio.to_thread(collector.update, None)
        lib.gone = False
        clock.now += INIT_RETRY_SECONDS + 1
        await asyncio.to_thread(collector.update, None)
        assert collector._event_thread is not None
        assert collector._event_thread is not first
        frames.at_frame(2)
        data = await _xids(collector, 3)
    finally:
        await collector.stop()
    assert sum(x.count for x in data.xid_errors) == 3


# --- MPS clients and the energy split (issue 8) -----------------------------------------------


def test_mps_clients_are_attributed_once_each():
    clock = Clock()
    collector = make_collector(scenario("mps"), clock)
    data = run_to(collector, clock, 2)
    procs = sorted((p.pid, p.used_memory_bytes, p.mps_client) for p in data.devices[0].processes)
    assert procs == [
        (5000, 30 * 2**20, False),  # the MPS server itself
        (5001, 6 * 2**30, True),
        (5002, 4 * 2**30, True),  # in both NVML lists, counted once
        (5003, 2 * 2**30, True),
    ]
    text = render(collector, data, snapshot_of(data, {5002: {"namespace": "a", "pod": "p2"}}))
    assert value(text, "nodeml_process_gpu_mps_client_info", pid="5002", pod="p2") == 1.0
    assert value(text, "nodeml_process_gpu_mps_client_info", pid="5000") is None
    total = sum(v for (n, _), v in values(text).items() if n == "nodeml_process_gpu_memory_bytes")
    assert total == 30 * 2**20 + 12 * 2**30


def _split_sums(replay_path: Path, last: int) -> tuple[float, float]:
    """(processes + idle energy, the GPU counter's increase) over ticks 0..last."""
    clock = Clock()
    collector = make_collector(replay_path, clock)
    first = run_to(collector, clock, 0).devices[0].energy_joules_total
    data = run_to(collector, clock, last, first=1)
    gpu = data.devices[0]
    split = sum(p.energy_joules_total for p in gpu.processes) + gpu.idle_energy_joules_total
    return split, gpu.energy_joules_total - first


@pytest.mark.parametrize(
    ("replay", "last"),
    [(scenario("two-tenants"), 9), (NEIGHBOUR, 31)],
    ids=["two tenants", "neighbour while both run"],
)
def test_energy_split_adds_up_to_the_gpu_counter(replay, last):
    split, counter = _split_sums(replay, last)
    assert counter > 0
    assert split == pytest.approx(counter, rel=1e-3)


def test_energy_follows_the_sm_share():
    clock = Clock()
    collector = make_collector(scenario("two-tenants"), clock)
    data = run_to(collector, clock, 9)
    e = {p.pid: p.energy_joules_total for p in data.devices[0].processes}
    doc = json.loads(scenario("two-tenants").read_text())
    energy = [f["devices"][0]["energy_mj"] / 1000 for f in doc["frames"]]
    # Each second's energy times the share of that second's newest sample (A: none at t=3).
    a_shares = [0.6, 0.6, 0.0, 0.6, 0.2, 0.2, 0.2, 0.2, 0.2]
    want_a = sum(s * (energy[i + 1] - energy[i]) for i, s in enumerate(a_shares))
    assert e[6001] == pytest.approx(want_a)
    assert data.devices[0].idle_energy_joules_total > 0


def test_no_energy_split_without_per_process_shares():
    clock = Clock()
    collector = make_collector(scenario("mig"), clock)
    data = run_to(collector, clock, 2)
    assert data.devices[0].idle_energy_joules_total is None
    assert all(p.energy_joules_total is None for p in data.devices[0].processes)
    text = render(collector, data)
    assert value(text, "nodeml_process_gpu_energy_joules_total") is None
    assert value(text, "nodeml_gpu_idle_energy_joules_total") is None


def test_energy_used_while_a_gpu_was_lost_is_not_attributed():
    clock = Clock()
    collector = make_collector(scenario("lost-gpu"), clock)
    before = run_to(collector, clock, 1).devices[1]
    after = run_to(collector, clock, 4, first=2).devices[1]  # lost at frames 2-3
    spent = sum(p.energy_joules_total for p in after.processes) + after.idle_energy_joules_total
    spent_before = sum(p.energy_joules_total for p in before.processes)
    spent_before += before.idle_energy_joules_total
    assert spent == pytest.approx(spent_before)  # frame 4 restarts the split from its reading


def test_no_gpu_at_all_is_no_data(tmp_path):
    path = tmp_path / "empty.nvml.json"
    path.write_text(
        json.dumps({"format": "nodeml-nvml-replay/1", "devices": [], "frames": [{"devices": []}]})
    )
    with pytest.raises(NoDataError, match="no NVIDIA GPU"):
        make_collector(path, Clock()).update(None)


def test_nvlink_counters_in_bytes(tmp_path):
    # Fields 138/139 (NVLINK_THROUGHPUT_DATA_TX/RX) count KiB; the series are bytes.
    doc = json.loads(scenario("lost-gpu").read_text())
    for frame in doc["frames"]:
        for dev in frame["devices"]:
            dev.setdefault("field_values", {}).update({"138": 1000 + frame["t"], "139": 2000})
    path = tmp_path / "nvlink.nvml.json"
    path.write_text(json.dumps(doc))
    clock = Clock()
    collector = make_collector(path, clock)
    data = run_to(collector, clock, 1)
    text = render(collector, data)
    u0 = "GPU-11111111-2222-3333-4444-555555555555"
    assert value(text, "nodeml_gpu_nvlink_transmit_bytes_total", uuid=u0) == 1001 * 1024
    assert value(text, "nodeml_gpu_nvlink_receive_bytes_total", uuid=u0) == 2000 * 1024
