"""GPU fault scenarios through the real collector, event thread included: health and action.

Each `faults-*.nvml.json` (written by fixtures/nvml/make_faults.py) is replayed frame by
frame; XID events are waited for before the next frame, as they arrive on real hardware
before the GPU stops answering. Goldens are rewritten with `pytest --update-golden`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import pytest

from node_exporter_ml.collectors.base import CollectContext, NoDataError
from node_exporter_ml.collectors.nvml import NvmlCollector
from node_exporter_ml.snapshot import NvmlData
from tests.helpers import make_config
from tests.nvml_helpers import NVML_FIXTURES, Clock, make_collector, render, value

GPU0 = {"gpu": "0", "uuid": "GPU-11111111-2222-3333-4444-555555555555"}
GPU1 = {"gpu": "1", "uuid": "GPU-66666666-7777-8888-9999-000000000000"}


def fault(name: str):
    return NVML_FIXTURES / f"faults-{name}.nvml.json"


async def replay_to(name: str, last: int, **config: object) -> tuple[NvmlCollector, NvmlData]:
    """Tick frames 0..last; before each tick, wait until that frame's XIDs were counted."""
    path = fault(name)
    frames = json.loads(path.read_text())["frames"]
    clock = Clock()
    clock.at_frame(0)
    collector = make_collector(path, clock, **config)
    await collector.start()
    try:
        data = None
        for i in range(last + 1):
            clock.at_frame(i)
            want = sum(len(f.get("events", ())) for f in frames[: i + 1])
            deadline = time.monotonic() + 5
            while True:
                data = await asyncio.to_thread(collector.update, None)
                if sum(x.count for x in data.xid_errors) >= want:
                    break
                assert time.monotonic() < deadline, f"XIDs of frame {i} never arrived"
                await asyncio.sleep(0.02)
    finally:
        await collector.stop()
    assert data is not None
    return collector, data


def health(text: bytes, gpu: dict[str, str]) -> dict[str, float]:
    checks = ("xid", "memory", "nvlink", "pcie", "thermal", "power", "fabric", "lost")
    got = {c: value(text, "nodeml_gpu_health", check=c, **gpu) for c in checks}
    return {c: v for c, v in got.items() if v is not None}


def action(text: bytes, gpu: dict[str, str]) -> str:
    actions = ("none", "restart_application", "reset_gpu", "drain_and_reset", "reboot_node",
               "contact_support")  # fmt: skip
    on = [a for a in actions if value(text, "nodeml_gpu_recommended_action", action=a, **gpu)]
    assert len(on) == 1, on
    return on[0]


HEALTHY = dict.fromkeys(("xid", "memory", "nvlink", "pcie", "thermal", "power", "fabric"), 0.0)
HEALTHY["lost"] = 0.0

GOLDENS = [
    ("xid79-lost", 2),
    ("xid79-lost", 5),
    ("xid48-dbe", 3),
    ("xid13-only", 3),
    ("fabric-down", 3),
    ("recovery-action", 3),
]


@pytest.mark.parametrize(("name", "frame"), GOLDENS, ids=[f"{n}-frame{f}" for n, f in GOLDENS])
async def test_golden(name, frame, update_golden):
    collector, data = await replay_to(name, frame)
    text = render(collector, data)
    golden = NVML_FIXTURES / "golden" / f"faults-{name}-frame{frame}.prom"
    if update_golden:
        golden.write_bytes(text)
    assert text.decode() == golden.read_text()
    assert await asyncio.to_thread(promtool_check, text) == ""


def promtool_check(text: bytes) -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test-deps` installs the Debian package prometheus"
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          timeout=30, check=False)  # fmt: skip
    return "" if done.returncode == 0 else done.stdout.decode() + done.stderr.decode()


async def test_before_any_fault_every_check_passes():
    collector, data = await replay_to("xid79-lost", 0)
    text = render(collector, data)
    assert health(text, GPU0) == HEALTHY == health(text, GPU1)
    assert action(text, GPU0) == action(text, GPU1) == "none"
    assert value(text, "nodeml_gpus") == value(text, "nodeml_gpu_expected") == 2.0
    for gpu in (GPU0, GPU1):
        assert value(text, "nodeml_gpu_xid_errors_total", xid="79", **gpu) == 0.0


async def test_xid79_then_lost_then_off_the_bus():
    collector, data = await replay_to("xid79-lost", 1)
    text = render(collector, data)
    assert health(text, GPU1) == {**HEALTHY, "xid": 2.0}
    assert action(text, GPU1) == "reboot_node"
    assert value(text, "nodeml_gpu_xid_errors_total", xid="79", **GPU1) == 1.0

    collector, data = await replay_to("xid79-lost", 2)
    text = render(collector, data)
    assert health(text, GPU1) == {"xid": 2.0, "lost": 2.0}
    assert action(text, GPU1) == "reboot_node"
    assert health(text, GPU0) == HEALTHY

    collector, data = await replay_to("xid79-lost", 5)
    text = render(collector, data)
    assert value(text, "nodeml_gpus") == 1.0
    assert value(text, "nodeml_gpu_expected") == 2.0
    assert health(text, GPU1) == {"lost": 2.0}
    assert action(text, GPU1) == "reboot_node"
    assert action(text, GPU0) == "none"


async def test_xid48_with_a_dbe_asks_for_a_gpu_reset():
    collector, data = await replay_to("xid48-dbe", 3)
    text = render(collector, data)
    assert health(text, GPU0) == {**HEALTHY, "xid": 2.0, "memory": 2.0}
    assert action(text, GPU0) == "reset_gpu"
    assert health(text, GPU1) == HEALTHY


async def test_xid13_only_restarts_the_application():
    collector, data = await replay_to("xid13-only", 3)
    text = render(collector, data)
    assert health(text, GPU0) == {**HEALTHY, "xid": 1.0}
    assert action(text, GPU0) == "restart_application"
    assert action(text, GPU1) == "none"


async def test_fabric_manager_down_fails_fabric_on_every_gpu():
    collector, data = await replay_to("fabric-down", 3)
    text = render(collector, data)
    for gpu in (GPU0, GPU1):
        assert health(text, gpu) == {**HEALTHY, "fabric": 2.0}
        assert action(text, gpu) == "drain_and_reset"


async def test_recovery_action_of_the_driver_is_followed():
    collector, data = await replay_to("recovery-action", 3)
    text = render(collector, data)
    assert health(text, GPU0) == {**HEALTHY, "xid": 2.0}
    assert action(text, GPU0) == "drain_and_reset"
    assert action(text, GPU1) == "none"


async def test_a_gpu_that_comes_back_after_a_reset_is_clean(tmp_path):
    doc = json.loads(fault("xid79-lost").read_text())
    for t in (4, 5):  # instead of falling off the bus, GPU 1 is reset and answers again
        del doc["frames"][t]["device_count"]
    path = tmp_path / "faults-reset.nvml.json"
    path.write_text(json.dumps(doc))
    clock = Clock()
    collector = make_collector(path, clock)
    await collector.start()
    try:
        clock.at_frame(1)
        deadline = time.monotonic() + 5
        while not any(
            x.count for x in (await asyncio.to_thread(collector.update, None)).xid_errors
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        clock.at_frame(2)
        lost = await asyncio.to_thread(collector.update, None)
        clock.at_frame(4)
        back = await asyncio.to_thread(collector.update, None)
    finally:
        await collector.stop()
    assert action(render(collector, lost), GPU1) == "reboot_node"
    text = render(collector, back)
    assert health(text, GPU1) == HEALTHY
    assert action(text, GPU1) == "none"
    assert value(text, "nodeml_gpu_xid_errors_total", xid="79", **GPU1) == 1.0  # still counted


def test_expected_gpus_flag_beats_the_first_count():
    clock = Clock()
    clock.at_frame(0)
    config = make_config(nvml_replay=str(fault("xid13-only")), interval=1.0, nvml_expected_gpus=4)
    collector = NvmlCollector(CollectContext(config), clock=clock)
    text = render(collector, collector.update(None))
    assert value(text, "nodeml_gpus") == 2.0
    assert value(text, "nodeml_gpu_expected") == 4.0
    for index in ("2", "3"):  # never seen: known only by index
        assert value(text, "nodeml_gpu_health", gpu=index, uuid="", check="lost") == 2.0


def test_no_gpu_left_with_an_expectation_is_data_not_an_error(tmp_path):
    doc = json.loads(fault("xid79-lost").read_text())
    for f in doc["frames"][1:]:
        f["device_count"] = 0
    path = tmp_path / "gone.nvml.json"
    path.write_text(json.dumps(doc))
    clock = Clock()
    collector = make_collector(path, clock)
    clock.at_frame(0)
    collector.update(None)
    clock.at_frame(1)
    text = render(collector, collector.update(None))
    assert value(text, "nodeml_gpus") == 0.0
    assert health(text, GPU0) == {"lost": 2.0} == health(text, GPU1)
    doc["frames"][0]["device_count"] = 0
    path.write_text(json.dumps(doc))
    fresh = make_collector(path, Clock())
    with pytest.raises(NoDataError):  # nothing ever seen, nothing expected: no GPU node
        fresh.update(None)


def test_nvlink_link_that_was_up_and_goes_down_fails(tmp_path):
    doc = json.loads(fault("xid13-only").read_text())
    for f in doc["frames"][3:]:
        f["devices"][1]["field_values"]["165:7"] = 0  # NVML_NVLINK_STATE_INACTIVE
        del f["devices"][1]["field_values"]["165:17"]  # and one that stops answering
    path = tmp_path / "link.nvml.json"
    path.write_text(json.dumps(doc))
    clock = Clock()
    collector = make_collector(path, clock)
    data = None
    for i in range(4):
        clock.at_frame(i)
        data = collector.update(None)
    text = render(collector, data)
    assert health(text, GPU1)["nvlink"] == 2.0
    assert action(text, GPU1) == "reboot_node"
    assert [f.reason for h in data.health if h.index == 1 for f in h.findings] == [
        "NVLink down: 7,17"
    ]
