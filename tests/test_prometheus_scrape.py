"""A real Prometheus scrapes the real agent: the exposition is what Prometheus ingests."""

from __future__ import annotations

import pytest

from tools.agentproc import AgentProcess
from tools.promserver import PrometheusServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_prometheus_scrapes_agent(tmp_path):
    agent = AgentProcess(["--sampler.interval=1s"], tmp_path).start()
    prom = None
    try:
        agent.wait_ready()
        prom = PrometheusServer(
            tmp_path,
            [{"job_name": "nodeml", "static_configs": [{"targets": [f"127.0.0.1:{agent.port}"]}]}],
        ).start()
        up = prom.wait_for('up{job="nodeml"} == 1')
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{agent.port}"
        info = prom.wait_for("nodeml_build_info")
        assert info[0]["metric"]["version"]
        fresh = prom.wait_for("time() - nodeml_snapshot_timestamp_seconds < 10")
        assert fresh
        target = prom.targets()[0]
        assert target["health"] == "up", target
        assert not target["lastError"]
    finally:
        if prom is not None:
            prom.stop()
        agent.stop()
