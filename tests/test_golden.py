"""Golden exposition of the whole agent (after node_exporter's e2e test).

The real app (aiohttp client) with every default collector over fixture inputs: the nvml
collector replaying one frame of the real H100 recording (neighbour phase), fixture /proc and
cgroup trees for its two processes, the fake API server with their pods, a model server
serving the recording's /metrics text, an empty drift store and no kubelet socket. Samples
whose values depend on time or on this machine are dropped by one regex; HELP and TYPE lines
stay. `pytest --update-golden` rewrites the file for review.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.golden_agent import scrape_agent

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "e2e-output.txt"

# Samples that depend on time, on this machine or on scheduling: dropped from the golden.
NONDETERMINISTIC = re.compile(
    r"^(process_|python_|nodeml_build_info|nodeml_snapshot_timestamp_seconds"
    r"|nodeml_collector_duration_seconds|nodeml_serving_scrape_duration_seconds"
    r"|nodeml_process_gpu_sm_seconds_total|nodeml_process_gpu_energy_joules_total"
    r"|nodeml_gpu_idle_energy_joules_total|nodeml_process_start_time_seconds"
    r"|nodeml_drift_evaluation_|nodeml_node_uptime_seconds)"
)


def normalise(text: str) -> str:
    keep = [
        line
        for line in text.splitlines()
        if line.startswith("#") or not NONDETERMINISTIC.match(line)
    ]
    return "\n".join(keep) + "\n"


@pytest.mark.timeout(60)
async def test_golden_exposition(aiohttp_client, inputs, update_golden):
    text = await scrape_agent(aiohttp_client, inputs)
    if shutil.which("promtool"):
        proc = await asyncio.create_subprocess_exec(
            "promtool", "check", "metrics", stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate(text.encode())
        assert proc.returncode == 0, out.decode()
        assert out.decode().strip() == "", out.decode()
    else:
        pytest.fail("promtool missing: `make test` installs Debian's prometheus package")

    got = normalise(text)
    if update_golden:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(GOLDEN.write_text, got)
        return
    want = await asyncio.to_thread(GOLDEN.read_text)
    assert got == want, "exposition changed; review and run `pytest --update-golden`"
