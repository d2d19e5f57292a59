"""Fixtures: a fake kubelet (a real gRPC server) on a unix socket in tmp_path."""

from __future__ import annotations

import pytest

from node_exporter_ml.collectors import podresources as collector_module
from tests.podresources.fakekubelet import FakeKubelet, load_scenario


@pytest.fixture
def sock(tmp_path):
    path = tmp_path / "kubelet.sock"
    assert len(str(path)) < 100, "unix socket paths are limited to 107 bytes"
    return path


@pytest.fixture
async def kubelet(sock):
    server = FakeKubelet(sock, load_scenario("idle-gpu"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def fast_polls(monkeypatch):
    """Let the collector poll every 50 ms (production polls no faster than every second)."""
    monkeypatch.setattr(collector_module, "MIN_POLL_SECONDS", 0.05)
