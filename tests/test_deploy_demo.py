"""`make demo`: the example model server and the agent show latency, process and drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
