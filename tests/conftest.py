"""Fixtures and hooks only (helpers live in modules: tests/helpers.py, tests/paths.py, ...): a
blocking-call guard on the event loop, the --update-golden flag, the hypothesis profile."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from tests.golden_agent import write_inputs


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


@pytest.fixture
def agent_args(tmp_path) -> dict[str, object]:
    """Config fields that point every collector at fixtures instead of this machine."""
    return {"drift_state_dir": str(tmp_path / "state")}


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, object]:
    """The golden agent's inputs under tmp_path, for tests/golden_agent.py's `scrape_agent`."""
    return write_inputs(tmp_path)


# CI runs a fixed set of examples (a random failure there would block a landing without
# pointing at a change); developers' runs keep exploring new ones.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")
