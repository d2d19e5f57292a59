"""The podresources collector against a real gRPC pod-resources server on a unix socket."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from node_exporter_ml.agent import Agent
from node_exporter_ml.collectors.base import CollectContext, NoDataError
from node_exporter_ml.collectors.podresources import PodResourcesCollector
from node_exporter_ml.exposition import Renderer
from node_exporter_ml.podresources.client import PodResourcesClient
from node_exporter_ml.podresources.devices import PodResourcesData
from node_exporter_ml.snapshot import (
    CollectorResult,
    GpuProcessSample,
    GpuSample,
    NvmlData,
    Snapshot,
)
from tests.helpers import config, registry
from tests.podresources.fakekubelet import (
    U0,
    U1,
    allocation,
    load_scenario,
    ordered,
    samples,
    series,
)


def make_collector(sock, interval=0.05):
    return PodResourcesCollector(
        CollectContext(config("podresources", interval=interval, podresources_socket=str(sock)))
    )


def render(collector, data, *, nvml=None, workloads=None):
    results = {"podresources": CollectorResult("podresources", True, 0.0, data)}
    if nvml is not None:
        results["nvml"] = CollectorResult("nvml", True, 0.0, nvml)
    snapshot = Snapshot(taken_at=1.0, results=results, workloads=workloads or {})
    return Renderer([collector], 5.0, process_metrics=False).render(snapshot).text.decode()


async def test_client_lists_gpu_allocations(kubelet, sock):
    client = PodResourcesClient(str(sock), clock=lambda: 1234.5)
    state = await client.poll_once()
    await client.stop()
    assert state.error is None
    data = state.data
    assert data is not None
    assert data.pods == 3
    assert data.listed_at == 1234.5
    assert [(a.namespace, a.pod, a.container, a.device.gpu_uuid) for a in data.allocations] == [
        ("serving", "llm-0", "server", U0),
        ("research", "batch-7", "train", U1),
    ]
    assert kubelet.calls == 1


async def test_idle_allocated_gpu_shows_its_pod_and_unallocated_use_is_flagged(
    kubelet, sock, fast_polls
):
    collector = make_collector(sock)
    await collector.start()  # returns once the kubelet answered (within 1 s)
    try:
        data = await collector.update(None)
    finally:
        await collector.stop()
    nvml = NvmlData(
        devices=(
            # GPU 0: the allocated server (pid 100) and a notebook that holds no GPU (200).
            GpuSample(0, U0, processes=(GpuProcessSample(100), GpuProcessSample(200))),
            GpuSample(1, U1),  # allocated to research/batch-7, idle
        )
    )
    workloads = {
        100: {"namespace": "serving", "pod": "llm-0", "container": "server"},
        200: {"namespace": "research", "pod": "notebook", "container": "jupyter"},
    }
    text = render(collector, data, nvml=nvml, workloads=workloads)
    assert series(text, "nodeml_gpu_allocation_info") == ordered(
        [
            allocation("0", U0, "serving", "llm-0", "server"),
            allocation("1", U1, "research", "batch-7", "train"),
        ]
    )
    assert series(text, "nodeml_gpu_unallocated_use") == [{"gpu": "0", "uuid": U0, "pid": "200"}]
    ours = {k: v for k, v in samples(text).items() if k[0].startswith("nodeml_gpu_")}
    assert len(ours) == 3
    assert set(ours.values()) == {1.0}
    assert "# HELP nodeml_gpu_allocation_info" in text


async def test_unknown_and_malformed_resources_are_ignored(kubelet, sock):
    kubelet.scenario = load_scenario("mixed-resources")
    collector = make_collector(sock)
    state = await collector.client.poll_once()
    await collector.stop()
    assert state.data is not None
    assert state.data.ignored == ("nvidia.com/gpu=not-a-gpu-id",)
    nvml = NvmlData(devices=(GpuSample(0, U0), GpuSample(1, U1)))
    text = render(collector, state.data, nvml=nvml)
    assert series(text, "nodeml_gpu_allocation_info") == ordered(
        [
            allocation("0", U0, "serving", "llm-0", "server"),
            allocation("1", U1, "research", "gke-shared", "a"),
            allocation("1", U1, "research", "gke-shared", "b"),
        ]
    )


async def test_without_nvml_allocations_keep_the_kubelet_ids(kubelet, sock):
    collector = make_collector(sock)
    state = await collector.client.poll_once()
    await collector.stop()
    text = render(collector, state.data)
    assert sorted(
        (s["gpu"], s["uuid"], s["pod"]) for s in series(text, "nodeml_gpu_allocation_info")
    ) == [("", U1, "batch-7"), ("", U0, "llm-0")]
    assert series(text, "nodeml_gpu_unallocated_use") == []


async def test_missing_socket_is_no_data_logged_once(tmp_path, fast_polls, caplog):
    caplog.set_level(logging.DEBUG, logger="node_exporter_ml.podresources")
    collector = make_collector(tmp_path / "absent.sock")
    with pytest.raises(NoDataError, match="no answer from the kubelet yet"):
        await collector.update(None)
    await collector.start()
    try:
        await collector.client.wait_polled(2)
        with pytest.raises(NoDataError, match=r"absent\.sock: no such socket"):
            await collector.update(None)
    finally:
        await collector.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("no kubelet pod-resources socket at ")
    assert caplog.records[0].levelno == logging.INFO


async def test_stale_socket_nobody_listening_is_no_data(sock):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))  # the file stays after close(): a kubelet that died uncleanly
    stale.close()
    collector = make_collector(sock)
    state = await collector.client.poll_once()
    await collector.stop()
    assert state.data is None
    assert "List failed: UNAVAILABLE" in (state.error or "")
    with pytest.raises(NoDataError, match="UNAVAILABLE"):
        await collector.update(None)


async def test_path_that_is_not_a_socket(tmp_path):
    (tmp_path / "kubelet.sock").write_text("")
    collector = make_collector(tmp_path / "kubelet.sock")
    state = await collector.client.poll_once()
    assert state.error is not None
    assert state.error.endswith("not a unix socket")


async def test_kubelet_restart_recovers_without_restarting_the_collector(
    kubelet, sock, fast_polls, caplog
):
    caplog.set_level(logging.INFO, logger="node_exporter_ml.podresources")
    collector = make_collector(sock)
    client = collector.client
    await collector.start()
    try:
        state = await client.wait_polled(0)
        assert state.data is not None
        assert len((await collector.update(None)).allocations) == 2

        await kubelet.stop()  # the kubelet deletes its socket on the way down
        assert not sock.exists()
        state = await client.wait_polled(client.polls)
        assert state.data is None
        with pytest.raises(NoDataError):
            await collector.update(None)
        await client.wait_polled(client.polls + 2)  # a few retries: still one log line

        # A new kubelet, new pods: batch-7 finished, llm-0 is still there.
        kubelet.scenario = load_scenario("idle-gpu")
        del kubelet.scenario["podResources"][1]
        await kubelet.start()
        data = None
        async with asyncio.timeout(10):
            while data is None:
                data = (await client.wait_polled(client.polls)).data
        assert [a.pod for a in (await collector.update(None)).allocations] == ["llm-0"]
    finally:
        await collector.stop()
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0][0] == "WARNING"
    assert "unavailable" in messages[0][1]
    assert "no such socket" in messages[0][1]
    assert messages[1] == ("INFO", f"kubelet pod-resources API at {sock} answers again")


async def test_backoff_doubles_while_the_kubelet_is_away(tmp_path, monkeypatch):
    sleeps = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds):
        sleeps.append(seconds)
        await real_sleep(0)

    client = PodResourcesClient(str(tmp_path / "absent.sock"), interval=5.0, backoff_max=30.0)
    monkeypatch.setattr("node_exporter_ml.podresources.client.asyncio.sleep", fake_sleep)
    await client.start()
    await client.wait_polled(6)
    await client.stop()
    assert sleeps[:6] == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]


async def test_agent_runs_the_collector_off_the_scrape_path(kubelet, sock, fast_polls):
    cfg = config("podresources", interval=0.05, podresources_socket=str(sock))
    agent = Agent(cfg, registry=registry(PodResourcesCollector), process_metrics=False)
    await agent.start()
    try:
        async with asyncio.timeout(10):
            while b"nodeml_gpu_allocation_info{" not in getattr(agent.rendered, "text", b""):
                await agent.sampler.tick()  # as the loop does; the scrape only reads the cache
        text = agent.rendered.text.decode()
    finally:
        await agent.stop()
    assert samples(text)[("nodeml_collector_success", (("collector", "podresources"),))] == 1.0
    assert {s["pod"] for s in series(text, "nodeml_gpu_allocation_info")} == {"llm-0", "batch-7"}


def test_update_returns_the_polled_data_as_is(sock):
    collector = make_collector(sock)
    data = PodResourcesData(listed_at=5.0)
    collector.client.state = type(collector.client.state)(data)
    assert asyncio.run(collector.update(None)) is data


async def test_a_bug_in_a_poll_does_not_end_the_task(
    kubelet, sock, fast_polls, monkeypatch, caplog
):
    def broken(pods):
        raise ValueError("parser bug")

    collector = make_collector(sock)
    monkeypatch.setattr("node_exporter_ml.podresources.client.parse_allocations", broken)
    await collector.start()
    try:
        state = await collector.client.wait_polled(collector.client.polls + 1)
        assert state.error == "ValueError: parser bug"
        with pytest.raises(NoDataError, match="parser bug"):
            await collector.update(None)
        monkeypatch.undo()
        async with asyncio.timeout(10):
            while collector.client.state.data is None:
                await collector.client.wait_polled(collector.client.polls)
    finally:
        await collector.stop()
    assert len((await collector.update(None)).allocations) == 2
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "pod-resources poll failed"
    ]
