"""SocketOwners: one cache of socket owners for every collector, over fake /proc trees."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.process import ProcessCollector
from node_exporter_ml.collectors.serving import ServingCollector
from node_exporter_ml.config import Config
from node_exporter_ml.host.socket_owners import SocketOwners
from node_exporter_ml.serving.options import ServingTarget
from tests.helpers import make_config
from tools.host_trees import FakeProc, stat_line, write_proc

VLLM = ("127.0.0.1", 8000)
TRITON = ("127.0.0.1", 8002)
NOBODY = ("127.0.0.1", 9999)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def root(tmp_path: Path) -> Path:
    procs = [
        FakeProc(pid=100, starttime=50, sockets=(34567,)),  # vLLM on :8000
        FakeProc(pid=200, starttime=70, sockets=(45678,)),  # Triton on :8002
        FakeProc(pid=300),
    ]
    return write_proc(tmp_path / "proc", procs, tcp=[("0A", 8000, 34567), ("0A", 8002, 45678)])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def owners(root: Path, clock: Clock) -> SocketOwners:
    return SocketOwners(str(root), ttl=60.0, clock=clock)


def test_finds_owners_and_caches_them(owners: SocketOwners, clock: Clock) -> None:
    assert owners.lookup("process", [VLLM, NOBODY]) == [100, None]
    clock.now += 59.0
    assert owners.lookup("process", [VLLM, NOBODY]) == [100, None]
    assert owners.scans == 1  # nobody listening on :9999 is an answer too, kept as long


def test_one_scan_covers_every_askers_endpoints(owners: SocketOwners, clock: Clock) -> None:
    assert owners.lookup("serving", [VLLM, TRITON]) == [100, 200]
    assert owners.lookup("process", [VLLM]) == [100]
    assert owners.scans == 1
    clock.now += 60.0  # all stale: the first asker's scan covers the other's endpoints
    assert owners.lookup("process", [VLLM]) == [100]
    assert owners.lookup("serving", [TRITON, VLLM]) == [200, 100]
    assert owners.scans == 2


def test_an_endpoint_nobody_asked_before_is_scanned(owners: SocketOwners) -> None:
    assert owners.lookup("process", [VLLM]) == [100]
    assert owners.lookup("serving", [TRITON]) == [200]
    assert owners.scans == 2


def test_a_new_listener_is_seen_after_the_ttl(root: Path, owners: SocketOwners, clock: Clock):
    assert owners.lookup("process", [NOBODY]) == [None]
    write_proc(root, [FakeProc(pid=400, sockets=(56789,))], tcp=[("0A", 9999, 56789)])
    clock.now += 30.0
    assert owners.lookup("process", [NOBODY]) == [None]
    clock.now += 30.0
    assert owners.lookup("process", [NOBODY]) == [400]


def test_an_exited_owner_is_looked_up_again_at_once(root: Path, owners: SocketOwners) -> None:
    assert owners.lookup("process", [VLLM, TRITON]) == [100, 200]
    shutil.rmtree(root / "100")
    assert owners.lookup("process", [VLLM, TRITON]) == [None, 200]
    assert owners.scans == 2


def test_a_reused_pid_is_not_the_owner(root: Path, owners: SocketOwners) -> None:
    assert owners.lookup("process", [VLLM]) == [100]
    # pid 100 exited and was reused by a process that listens nowhere
    (root / "100" / "stat").write_text(stat_line(FakeProc(pid=100, starttime=999)))
    for fd in (root / "100" / "fd").iterdir():
        fd.unlink()
    assert owners.lookup("process", [VLLM]) == [None]
    assert owners.scans == 2


def test_a_dns_name_or_an_unreadable_root_finds_nobody(tmp_path: Path) -> None:
    owners = SocketOwners(str(tmp_path / "missing"))
    assert owners.lookup("serving", [("vllm.ml.svc", 8000), VLLM]) == [None, None]
    assert owners.lookup("process", []) == []


# --- both collectors built with one context share the scans ----------------------------------


async def test_process_and_serving_collectors_share_one_scan(root: Path) -> None:
    target = ServingTarget(url="http://127.0.0.1:8000/metrics", name="vllm")
    config = make_config(procfs=str(root), serving_targets=(target,))
    ctx = CollectContext(config)
    process, serving = ProcessCollector(ctx), ServingCollector(ctx)
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(None, process.update, None)
        assert data.processes[100].reasons == frozenset({"serving"})
        assert ctx.sockets.scans == 1
        # The listener is gone from /proc: only the shared answer still names pid 100.
        tcp = root / "net" / "tcp"
        tcp.write_text(tcp.read_text().splitlines(keepends=True)[0])
        status = (await serving.update(None)).targets[0]
        for _ in range(200):  # the owner is taken at a later tick
            if status.socket_pid is not None:
                break
            await asyncio.sleep(0.01)
            status = (await serving.update(None)).targets[0]
    finally:
        await serving.stop()
    assert status.socket_pid == 100
    assert ctx.sockets.scans == 1


def test_each_context_has_its_own_owners_unless_given_one(root: Path) -> None:
    config = Config(procfs=str(root))
    shared = SocketOwners(str(root))
    assert CollectContext(config).sockets is not CollectContext(config).sockets
    assert CollectContext(config, shared).sockets is shared


def test_a_reload_keeps_the_socket_owners(root: Path) -> None:
    from node_exporter_ml.agent import Agent

    agent = Agent(make_config(procfs=str(root), collectors=frozenset({"process"})))
    (process,) = agent.collectors
    before = process.ctx.sockets
    agent.reload()  # SIGHUP: the owners found so far are still good
    assert process.ctx.sockets is before
