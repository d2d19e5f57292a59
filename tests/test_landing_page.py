"""The landing page in headless Chromium: it renders, with the collectors and their status."""

from __future__ import annotations

import os
import subprocess

import pytest

from node_exporter_ml.agent import Agent
from node_exporter_ml.collectors.drift import DriftCollector
from node_exporter_ml.web import build_app
from tests.helpers import CountingCollector, config, registry
from tests.pictures import chromium, decode_png
from tests.serving_fakes import NVML_RECORDING
from tools.agentproc import AgentProcess

pytestmark = pytest.mark.timeout(90)


def test_landing_page_renders_collectors_in_chromium(tmp_path):
    agent = AgentProcess(["--sampler.interval=0.5s", f"--nvml.replay={NVML_RECORDING}"], tmp_path)
    agent.start()
    try:
        agent.wait_ready()
        page = agent.get("/").text
        assert "<script" not in page
        for name in ("nvml", "process", "cgroup", "serving", "drift", "kube"):
            assert f"<td>{name}</td>" in page
        assert "class=ok>ok<" in page  # nvml replays fine
        assert "class=failing>failing<" in page  # kube: not in a cluster
        shot = tmp_path / "landing.png"
        cmd = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=800,600", f"--screenshot={shot}", f"{agent.url}/",
        ]  # fmt: skip
        result = subprocess.run(
            cmd, capture_output=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)},
            check=False,
        )  # fmt: skip
        assert shot.exists(), result.stderr.decode(errors="replace")[-2000:]
    finally:
        agent.stop()
    width, height, channels, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (800, 600)

    def count(pred) -> int:
        return sum(1 for i in range(0, len(pixels), channels) if pred(pixels[i : i + 3]))

    assert count(lambda p: p != b"\xff\xff\xff") > width * height * 0.01, "page looks blank"
    assert count(lambda p: p[1] > 0x50 and p[0] < 0x30 and p[2] < 0x30) > 20, "no green 'ok'"
    assert count(lambda p: p[0] > 0x90 and p[1] < 0x30 and p[2] < 0x30) > 20, "no red 'failing'"


@pytest.mark.parametrize(
    ("collector", "linked"), [(DriftCollector, True), (CountingCollector, False)]
)
async def test_the_landing_page_links_what_route_providers_serve(
    aiohttp_client, tmp_path, collector, linked
):
    agent = Agent(
        config(collector.name, drift_state_dir=str(tmp_path / "state")),
        registry=registry(collector),
        process_metrics=False,
    )
    client = await aiohttp_client(build_app(agent))
    page = await (await client.get("/")).text()
    assert ('<a href="/api/v1/openapi.json">Drift API (OpenAPI)</a>' in page) is linked
