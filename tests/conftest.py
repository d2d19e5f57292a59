"""Shared fixtures: a blocking-call guard on the event loop, the --update-golden flag."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

# Every file a test reads is in the repository (tests/fixtures/README.md says what is where).
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The real H100 recording: NVML replay frames and the model server's /metrics at the same seconds.
NEIGHBOUR_NVML = FIXTURES / "nvml-recordings" / "h100-neighbour.nvml.json"
NEIGHBOUR_SERVING = FIXTURES / "nvml-recordings" / "h100-neighbour.serving.json"
SERVING_FIXTURES = FIXTURES / "serving"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Any blocking call (file, socket, sleep) made on a running event loop fails the test."""
    with blockbuster_ctx("node_exporter_ml") as bb:
        yield bb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agent_args(tmp_path) -> dict[str, object]:
    """Config fields that point every collector at fixtures instead of this machine."""
    return {"drift_state_dir": str(tmp_path / "state")}


# CI runs a fixed set of examples (a random failure there would block a landing without
# pointing at a change); developers' runs keep exploring new ones.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")
