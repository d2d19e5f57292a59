"""The whole agent over the golden fixtures, scraped once settled (test_golden, test_cardinality).

The real app (aiohttp client) with every default collector: the nvml collector replaying one
frame of the real H100 recording (neighbour phase), fixture /proc and cgroup trees for its two
processes, the fake API server with their pods, a model server serving the recording's
/metrics text, an empty drift store and no kubelet socket. conftest.py's `inputs` fixture
writes the files (`write_inputs`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from node_exporter_ml.agent import Agent
from node_exporter_ml.serving.options import ServingTarget
from node_exporter_ml.web import build_app
from tests.helpers import REGISTRY, make_config
from tests.neighbour_pods import (
    SERVER,
    add_pods,
    write_host,
)
from tests.serving_fakes import NVML_RECORDING, SERVING_RECORDING, load
from tools.fake_kube import FakeApi

FRAME = 23  # t=24 s: the neighbour holds the GPU


NEVER_UP = frozenset({"podresources"})
"""Collectors that cannot succeed over the fixtures (no kubelet pod-resources socket)."""


def _model_server(text: str) -> TestServer:
    """The recorded model server: its /metrics text, on 127.0.0.1 (start_server() to serve)."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return TestServer(app, host="127.0.0.1")


def write_inputs(tmp_path: Path) -> dict[str, object]:
    """The replay frame, /proc, cgroup tree and token under tmp_path; the model server's text."""
    recording = load(NVML_RECORDING)
    replay = dict(recording, frames=[recording["frames"][FRAME]])
    (tmp_path / "replay.json").write_text(json.dumps(replay))
    write_host(tmp_path)
    return {"tmp": tmp_path, "text": load(SERVING_RECORDING)["frames"][FRAME]["text"]}


async def _scrape_when_settled(client, agent: Agent) -> str:
    text = ""
    for _ in range(200):
        await asyncio.sleep(0.05)
        snap = agent.snapshot
        if snap is None or snap.workload_labels(SERVER).get("pod") is None:
            continue
        text = await (await client.get("/metrics")).text()
        # Every collector that can succeed here did, in this very snapshot: under load one may
        # overrun its 0.2 s timeout for a tick and leave its series out of that scrape.
        succeeded = all(
            f'nodeml_collector_success{{collector="{name}"}} 1.0' in text
            for name in agent.collector_names
            if name not in NEVER_UP
        )
        if (
            'nodeml_serving_target_up{target="mlp"} 1.0' in text
            and succeeded
            and "nodeml_workload_info" in text
        ):
            return text
    raise AssertionError("the agent never settled:\n" + text[-3000:])


async def scrape_agent(aiohttp_client, inputs: dict[str, object]) -> str:
    """The whole agent over the fixtures, scraped once it settled (the raw exposition)."""
    tmp: Path = inputs["tmp"]  # type: ignore[assignment]
    api = FakeApi()
    add_pods(api)
    api_url = await api.start()
    server = _model_server(str(inputs["text"]))
    await server.start_server()
    port = server.port
    names = {n for n, r in REGISTRY.items() if r.default_enabled}
    config = make_config(
        collectors=frozenset(names), interval=0.25, procfs=str(tmp / "proc"),
        cgroupfs=str(tmp / "cg"), nvml_replay=str(tmp / "replay.json"),
        drift_state_dir=str(tmp / "state"),
        kube_api_url=api_url, kube_token_file=str(tmp / "token"), kube_node_name="node-a",
        podresources_socket=str(tmp / "no-kubelet" / "kubelet.sock"),
        serving_targets=(
            ServingTarget(url=f"http://127.0.0.1:{port}/metrics", name="mlp", pid=SERVER),),
    )  # fmt: skip
    agent = Agent(config, registry=REGISTRY)
    try:
        client = await aiohttp_client(build_app(agent))
        text = await _scrape_when_settled(client, agent)
    finally:
        await server.close()
        await api.stop()
    return text
