"""End to end (issue 4's Done-when): replayed NVML pids -> /proc -> cgroups -> pods.

The sampler runs a replay NVML source (frames of the real H100 recording, pids 415 and
476), the process, cgroup and kube collectors over fixture trees and the fake API server,
and the attribution enricher. Every GPU process must get its namespace/pod/container and
its container's throttling and memory series the fixture's values; the API server going
away keeps the labels and sets the kube collector's success to 0; its return recovers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.collectors.base import BlockingCollector, CollectContext
from node_exporter_ml.collectors.cgroup import CgroupCollector
from node_exporter_ml.collectors.kube import KubeCollector
from node_exporter_ml.collectors.process import ProcessCollector
from node_exporter_ml.config import Config
from node_exporter_ml.correlation import attribute_workloads
from node_exporter_ml.exposition import Renderer, SnapshotCollector
from node_exporter_ml.sampler import Sampler
from node_exporter_ml.snapshot import GpuProcessSample, GpuSample, NvmlData, Snapshot
from tests.helpers import make_config, with_options
from tests.neighbour_pods import (
    NEIGHBOUR,
    SERVER,
    add_pods,
    write_host,
)
from tools.fake_kube import FakeApi
from tools.host_trees import (
    FakeProc,
    sample_values,
    value,
)

# Frame t=21 s of fixtures/nvml-recordings/h100-neighbour.nvml.json, copied as is.
RECORDING = Path(__file__).parent / "fixtures" / "nvml" / "h100-neighbour.frame21.json"


def replay_frame(path: Path, t: float) -> NvmlData:
    """NvmlData of the replay frame at `t` s (format nodeml-nvml-replay/1)."""
    rec = json.loads(path.read_text())
    frame = next(f for f in rec["frames"] if f["t"] == t)
    devices = []
    for static, dev in zip(rec["devices"], frame["devices"], strict=True):
        util = {u["pid"]: u for u in dev.get("process_utilization", [])}
        procs = tuple(
            GpuProcessSample(
                pid=p["pid"],
                used_memory_bytes=p["used_memory_bytes"],
                sm_ratio=util[p["pid"]]["sm"] / 100 if p["pid"] in util else 0.0,
            )
            for p in dev["processes"]
        )
        devices.append(
            GpuSample(
                index=static["index"],
                uuid=static["uuid"],
                name=static["name"],
                memory_used_bytes=dev["memory"]["used"],
                processes=procs,
            )
        )
    return NvmlData(rec["driver_version"], tuple(devices))


class ReplayNvml(BlockingCollector):
    """Stands in for the nvml collector (built elsewhere): one frame of the recording."""

    name = "nvml"

    def __init__(self, ctx: CollectContext, data: NvmlData) -> None:
        super().__init__(ctx)
        self.data = data

    def update(self, previous: Snapshot | None) -> NvmlData:
        return self.data

    def families(self, data: object, snapshot: Snapshot) -> Iterable[Metric]:
        return ()


@dataclass
class Node:
    sampler: Sampler
    api: FakeApi
    kube: KubeCollector
    render: SnapshotCollector
    uuid: str


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx() as bb:
        yield bb


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Config, NvmlData]:
    write_host(
        tmp_path, FakeProc(pid=900, comm="kubelet", cgroup="0::/system.slice/kubelet.service\n")
    )
    cg = tmp_path / "cg"
    token = tmp_path / "token"
    config = make_config(
        procfs=str(tmp_path / "proc"),
        cgroupfs=str(cg),
        kube_node_name="node-a",
        kube_token_file=str(token),
        kube_api_url="set-below",
    )
    return config, replay_frame(RECORDING, 21.0)


@pytest.fixture
async def node(trees: tuple[Config, NvmlData]) -> AsyncIterator[Node]:
    config, nvml = trees
    api = FakeApi()
    add_pods(api)
    url = await api.start()
    ctx = CollectContext(with_options(config, kube_api_url=url))
    kube = KubeCollector(ctx)
    assert kube.source is not None
    kube.source.backoff = (0.02, 0.1)
    collectors = [ReplayNvml(ctx, nvml), ProcessCollector(ctx), CgroupCollector(ctx), kube]
    sampler = Sampler(collectors, interval=1.0, timeout=5.0, enrichers=[attribute_workloads])
    await sampler.start()
    try:
        yield Node(sampler, api, kube, SnapshotCollector(collectors, 1.0), nvml.devices[0].uuid)
    finally:
        await sampler.close()
        await api.stop()


async def _until(check: object) -> None:
    async with asyncio.timeout(5):
        while not check():  # type: ignore[operator]  # noqa: ASYNC110 - background state
            await asyncio.sleep(0.01)


async def _ticks(node: Node, n: int) -> Snapshot:
    for _ in range(n):
        snapshot = await node.sampler.tick()
    return snapshot


def _render(node: Node, snapshot: Snapshot) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    node.render.snapshot = snapshot
    return sample_values(node.render.collect())


SERVER_LABELS = {"namespace": "ml", "pod": "mlp-server-0", "container": "server"}
NEIGHBOUR_LABELS = {"namespace": "batch", "pod": "matmul-0", "container": "trainer"}


def _check_attribution(node: Node, snapshot: Snapshot) -> None:
    assert snapshot.workload_labels(SERVER) == SERVER_LABELS
    assert snapshot.workload_labels(NEIGHBOUR) == NEIGHBOUR_LABELS
    values = _render(node, snapshot)
    throttled = "nodeml_container_cpu_throttled_seconds_total"
    assert value(values, throttled, **SERVER_LABELS) == pytest.approx(3.1)
    assert value(values, throttled, **NEIGHBOUR_LABELS) == pytest.approx(12.5)
    assert value(values, "nodeml_container_cpu_throttled_periods_total", **SERVER_LABELS) == 1234
    assert value(values, "nodeml_container_cpu_limit_cores", **SERVER_LABELS) == 2.0
    assert value(values, "nodeml_container_cpu_limit_cores", **NEIGHBOUR_LABELS) is None
    ws = "nodeml_container_memory_working_set_bytes"
    assert value(values, ws, **SERVER_LABELS) == 3 << 30
    assert value(values, ws, **NEIGHBOUR_LABELS) == (7 << 30) - (512 << 20)
    assert value(values, "nodeml_container_memory_limit_bytes", **SERVER_LABELS) == 8 << 30
    assert value(values, "nodeml_container_memory_limit_bytes", **NEIGHBOUR_LABELS) is None
    assert value(
        values, "nodeml_container_pressure_cpu_waiting_seconds_total", **SERVER_LABELS
    ) == pytest.approx(5.0)
    cpu = "nodeml_process_cpu_seconds_total"
    assert value(values, cpu, pid="476", mode="user", **NEIGHBOUR_LABELS) == pytest.approx(990.0)
    for pid, labels in ((SERVER, SERVER_LABELS), (NEIGHBOUR, NEIGHBOUR_LABELS)):
        info = value(values, "nodeml_workload_info", pid=str(pid), uuid=node.uuid, **labels)
        assert info == 1
    assert value(values, "nodeml_process_cpu_seconds_total", pid="900", mode="user") is None


async def test_gpu_processes_get_pods_and_container_series(node: Node) -> None:
    await _until(lambda: node.kube.source is not None and node.kube.source.healthy)
    snapshot = await _ticks(node, 2)  # tick 1 learns the GPU pids, tick 2 reads them
    assert all(r.success for r in snapshot.results.values()), snapshot.results
    _check_attribution(node, snapshot)


async def test_exposition_parses_in_both_formats(node: Node) -> None:
    await _until(lambda: node.kube.source is not None and node.kube.source.healthy)
    snapshot = await _ticks(node, 2)
    renderer = Renderer(list(node.render.collectors.values()), 1.0, process_metrics=False)
    rendered = await asyncio.get_running_loop().run_in_executor(None, renderer.render, snapshot)
    text = rendered.text.decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"nodeml_container_cpu_throttled_seconds", "nodeml_workload_info"} <= names
    om = {f.name for f in openmetrics_families(rendered.openmetrics.decode())}
    assert "nodeml_process_cpu_seconds" in om
    assert (
        "nodeml_container_cpu_throttled_seconds_total"
        '{container="server",namespace="ml",pod="mlp-server-0"} 3.1' in text
    )


async def test_api_server_down_keeps_labels_and_recovers(node: Node) -> None:
    await _until(lambda: node.kube.source is not None and node.kube.source.healthy)
    await _ticks(node, 2)
    await node.api.stop()
    await _until(lambda: node.kube.source is not None and not node.kube.source.healthy)
    down = await _ticks(node, 1)
    assert not down.results["kube"].success
    _check_attribution(node, down)
    values = _render(node, down)
    assert value(values, "nodeml_collector_success", collector="kube") == 0
    assert value(values, "nodeml_collector_success", collector="cgroup") == 1

    await node.api.start()
    await _until(lambda: node.kube.source is not None and node.kube.source.healthy)
    up = await _ticks(node, 1)
    assert up.results["kube"].success
    _check_attribution(node, up)
    assert value(_render(node, up), "nodeml_collector_success", collector="kube") == 1
