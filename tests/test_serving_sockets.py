"""Socket ownership and discovery: fake /proc trees, and this process's real sockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from blockbuster import blockbuster_ctx

from node_exporter_ml.collectors import serving as serving_collector
from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.serving import ServingCollector
from node_exporter_ml.host import sockets
from node_exporter_ml.host.procfs import (
    LISTEN_STATE,
    ProcFS,
    TcpSocket,
    parse_fib_trie_local,
    parse_net_tcp,
)
from node_exporter_ml.serving.options import ServingTarget
from node_exporter_ml.snapshot import CollectorResult, ProcessData, ProcessSample, Snapshot
from tests.helpers import make_config
from tests.serving_fakes import SERVING_FIXTURES
from tools.host_trees import FakeProc, stat_line

TCP_HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
    "inode\n"
)
TCP6_HEADER = (
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
)
FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 10.244.1.0/24 2 0 2
        |-- 10.244.1.0
           /24 link UNICAST
        |-- 10.244.1.17
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
"""


def tcp_row(n: int, local: str, state: str, inode: int) -> str:
    return (
        f"   {n}: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000"
        f"     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    )


def make_proc(root: Path, pid: int, *, tcp: str = "", tcp6: str = "", inodes=(), netns="1") -> None:
    d = root / str(pid)
    (d / "net").mkdir(parents=True)
    (d / "fd").mkdir()
    (d / "ns").mkdir()
    (d / "net" / "tcp").write_text(TCP_HEADER + tcp)
    (d / "net" / "tcp6").write_text(TCP6_HEADER + tcp6)
    (d / "net" / "fib_trie").write_text(FIB_TRIE)
    (d / "stat").write_text(stat_line(FakeProc(pid=pid)))
    for i, inode in enumerate(inodes):
        os.symlink(f"socket:[{inode}]", d / "fd" / str(i + 3))
    os.symlink("/dev/null", d / "fd" / "0")
    os.symlink(f"net:[{netns}]", d / "ns" / "net")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    (tmp_path / "self" / "ns").mkdir(parents=True)
    os.symlink("net:[1]", tmp_path / "self" / "ns" / "net")
    # pid 100: vLLM on the host network, 0.0.0.0:8000 (0x1F40); also connected sockets.
    make_proc(
        tmp_path,
        100,
        tcp=tcp_row(0, "00000000:1F40", "0A", 5001) + tcp_row(1, "0100007F:D880", "01", 5002),
        inodes=(5001, 5002),
    )
    # pid 200: Triton in a pod network namespace, [::]:8002 (0x1F42) on IPv6.
    make_proc(
        tmp_path,
        200,
        tcp6=tcp_row(0, "00000000000000000000000000000000:1F42", "0A", 6001),
        inodes=(6001,),
        netns="2",
    )
    # pid 300: shares pid 100's namespace (sees its socket) but does not own it.
    make_proc(tmp_path, 300, tcp=tcp_row(0, "00000000:1F40", "0A", 5001), inodes=())
    return tmp_path


def test_parse_proc_net_tcp_keeps_listeners_only():
    text = TCP_HEADER + tcp_row(0, "0100007F:1F40", "0A", 7) + tcp_row(1, "0100007F:D880", "01", 8)
    text += "garbage line\n"
    listening = parse_net_tcp(text, state=LISTEN_STATE)
    assert listening == [TcpSocket("127.0.0.1", 8000, LISTEN_STATE, 7)]


def test_parse_ipv6_and_mapped_addresses():
    rows = tcp_row(0, "00000000000000000000000001000000:1F40", "0A", 1)  # ::1
    rows += tcp_row(1, "0000000000000000FFFF00000100007F:1F41", "0A", 2)  # ::ffff:127.0.0.1
    got = parse_net_tcp(TCP6_HEADER + rows, state=LISTEN_STATE)
    assert got == [
        TcpSocket("::1", 8000, LISTEN_STATE, 1),
        TcpSocket("127.0.0.1", 8001, LISTEN_STATE, 2),
    ]


def test_fib_trie_local_addresses():
    assert parse_fib_trie_local(FIB_TRIE) == {"10.244.1.17", "127.0.0.1"}


def test_find_listening_pid(proc: Path):
    root = str(proc)
    assert sockets.find_listening_pid(root, 8000, "127.0.0.1", [300, 100]) == 100
    assert sockets.find_listening_pid(root, 8000, "localhost", [100]) == 100
    assert sockets.find_listening_pid(root, 8001, "127.0.0.1", [100]) is None
    # The pod's wildcard socket serves its pod IP, not the host's loopback.
    assert sockets.find_listening_pid(root, 8002, "10.244.1.17", [100, 200]) == 200
    assert sockets.find_listening_pid(root, 8002, "127.0.0.1", [200]) is None
    assert sockets.find_listening_pid(root, 8000, "vllm.default.svc", [100]) is None
    assert sockets.find_listening_pid(root, 8000, "127.0.0.1", [999]) is None  # vanished


def test_many_endpoints_in_one_walk(proc: Path):
    endpoints = [("127.0.0.1", 8000), ("10.244.1.17", 8002), ("127.0.0.1", 8002), ("vllm", 80)]
    assert sockets.find_listening_pids(str(proc), endpoints) == [100, 200, None, None]


def test_unreadable_namespace_files_give_no_owner_not_an_error(proc: Path):
    fib = proc / "200" / "net" / "fib_trie"
    fib.unlink()
    fib.mkdir()  # reading it fails with an OSError other than FileNotFoundError
    assert sockets.find_listening_pid(str(proc), 8002, "10.244.1.17") is None
    assert sockets.read_listen_urls(str(proc), 200, [8002]) == []


def test_listen_urls_as_the_agent_reaches_them(proc: Path):
    root = str(proc)
    assert sockets.read_listen_urls(root, 100, [8000, 8002]) == [(8000, "127.0.0.1")]
    assert sockets.read_listen_urls(root, 200, [8000, 8002]) == [(8002, "10.244.1.17")]
    assert sockets.read_listen_urls(root, 300, [8000]) == []  # not its socket
    assert ProcFS(root).pids() == sorted(ProcFS(root).pids())
    assert set(ProcFS(root).pids()) == {100, 200, 300}


def test_finds_this_process_on_the_real_procfs():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        pid = os.getpid()
        assert sockets.find_listening_pid("/proc", port, "127.0.0.1", [pid]) == pid
    assert sockets.find_listening_pid("/proc", port, "127.0.0.1", [pid]) is None


# --- the collector: owner by socket, discovery ------------------------------------------------


@pytest.fixture(autouse=True)
def no_blocking() -> Iterator[None]:
    with blockbuster_ctx("node_exporter_ml"):
        yield


async def _vllm_server(aiohttp_server):
    text = (SERVING_FIXTURES / "vllm.prom").read_text(encoding="utf-8")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return await aiohttp_server(app)


async def test_target_without_owner_belongs_to_the_socket_owner(aiohttp_server):
    server = await _vllm_server(aiohttp_server)
    target = ServingTarget(url=str(server.make_url("/metrics")), name="v")
    collector = ServingCollector(CollectContext(make_config(serving_targets=(target,))))
    me = os.getpid()
    previous = Snapshot(
        taken_at=0.0,
        results={
            "process": CollectorResult(
                "process", True, 0.0, ProcessData({me: ProcessSample(pid=me, comm="python")})
            )
        },
    )
    try:
        data = await collector.update(previous)
        # The owner is looked up in the background and taken at a later tick.
        for _ in range(200):
            if data.targets[0].socket_pid is not None:
                break
            await asyncio.sleep(0.01)
            data = await collector.update(previous)
    finally:
        await collector.stop()
    assert data.targets[0].socket_pid == me
    info = next(
        f for f in collector.families(data, previous) if f.name == "nodeml_serving_target_info"
    )
    assert info.samples[0].labels["pid"] == str(me)


async def test_discover_probes_inference_processes(aiohttp_server, tmp_path, monkeypatch):
    server = await _vllm_server(aiohttp_server)
    port = server.port
    (tmp_path / "self" / "ns").mkdir(parents=True)
    os.symlink("net:[1]", tmp_path / "self" / "ns" / "net")
    make_proc(tmp_path, 4242, tcp=tcp_row(0, f"00000000:{port:04X}", "0A", 77), inodes=(77,))
    make_proc(tmp_path, 4343, tcp=tcp_row(0, "00000000:1F90", "0A", 78), inodes=(78,))
    monkeypatch.setattr(
        serving_collector, "DEFAULT_ENDPOINTS", ((port, "/metrics"), (8080, "/metrics"))
    )
    config = make_config(procfs=str(tmp_path), serving_discover=True)
    collector = ServingCollector(CollectContext(config))
    procs = {p: ProcessSample(pid=p, comm="python") for p in (4242, 4343)}
    previous = Snapshot(
        taken_at=0.0,
        results={"process": CollectorResult("process", True, 0.0, ProcessData(procs))},
    )
    try:
        data = await collector.update(previous)
        assert data.targets == ()  # probing runs in the background, not in the tick
        for _ in range(200):
            await asyncio.sleep(0.01)
            data = await collector.update(previous)
            if data.targets:
                break
    finally:
        await collector.stop()
    assert [(t.name, t.source, t.framework, t.socket_pid) for t in data.targets] == [
        (f"127.0.0.1:{port}", "discover", "vllm", 4242)
    ]
