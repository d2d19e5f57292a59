"""`make demo`: the example model server and the agent show latency, process and drift."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tools.agentproc import AgentProcess
from tools.ports import free_port

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_demo_shows_latency_process_metrics_and_drift(tmp_path):
    """What a newcomer sees within a minute, with no GPU (inputs drift after 5 s here)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "demo.py"),
            "--port=0",
            f"--state-dir={tmp_path / 'state'}",
            "--drift-after=5",
            "--until-ready",
            "--timeout=60",
        ],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "demo ready" in proc.stdout
    last = [line for line in proc.stdout.splitlines() if line.startswith("[")][-1]
    assert "latency p50" in last, last
    assert "server process:" in last, last
    assert "drifted features:" in last, last
    assert "amount" in last, last  # the feature whose distribution moved most
    assert "Traceback" not in out


def test_model_server_puts_its_reference_again_when_the_agent_lost_it(tmp_path):
    """A new agent pod starts with an empty drift store: the example server recovers."""
    agent = AgentProcess(
        ["--collector.disable-defaults", "--collector.drift", "--drift.interval=1s"], tmp_path
    ).start()
    server = None
    try:
        agent.wait_ready()
        server = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "model_server.py"),
                f"--port={free_port()}",
                f"--agent={agent.url}",
                "--feed-interval=0.5",
                "--first-batch=10",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def reference_updated_at() -> float | None:
            resp = agent.get("/api/v1/models/fraud-scorer/drift")
            if resp.status != 200:
                return None
            return float(json.loads(resp.text)["reference"]["updated_at"])

        assert wait_until(lambda: reference_updated_at() is not None, timeout=20)
        first = reference_updated_at()
        req = urllib.request.Request(f"{agent.url}/api/v1/models/fraud-scorer", method="DELETE")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        # The next feed gets 404 and the server PUTs its reference again: a newer one.
        assert wait_until(lambda: (reference_updated_at() or 0) > first, timeout=20), agent.output()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        agent.stop()
