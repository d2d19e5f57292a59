"""Shared by the deployment tests: where the artefacts are, what flags the agent has."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def agent_help() -> str:
    """`node-exporter-ml --help`, from the installed package."""
    return subprocess.run(
        [sys.executable, "-m", "node_exporter_ml", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
