"""Floods against a live agent (loopback, bounded in clients and seconds): scrapes and probes
keep answering. Issue 11: 45 clients looping GET .../drift, or 50 with wrong passwords, used to
turn 37-83% of /metrics scrapes and most /healthz probes into 503s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from tests.drift_helpers import make_rows
from tools.agentproc import AgentProcess

pytestmark = pytest.mark.timeout(120)

FLOOD_SECONDS = 4.0


@contextlib.contextmanager
def running(tmp_path: Path, *args: str) -> Iterator[AgentProcess]:
    agent = AgentProcess(
        ["--collector.disable-defaults", "--collector.drift", "--sampler.interval=1s", *args],
        tmp_path,
    ).start()
    try:
        agent.wait_ready()
        yield agent
    finally:
        agent.stop()
        log = (tmp_path / f"agent-{agent.port}.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _watch(session, url, headers, stop: asyncio.Event) -> Counter[str]:
    """Scrape /metrics and probe /healthz and /readyz every 100 ms, as Prometheus and kubelet."""
    seen: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=5)
    while not stop.is_set():
        for path, hdrs in (("/metrics", headers), ("/healthz", {}), ("/readyz", {})):
            try:
                async with session.get(url + path, headers=hdrs, timeout=timeout) as resp:
                    await resp.read()
                    seen[f"{path} {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError) as err:
                seen[f"{path} {type(err).__name__}"] += 1
        await asyncio.sleep(0.1)
    return seen


async def _flood(session, request, stop: asyncio.Event) -> Counter[int]:
    answered: Counter[int] = Counter()
    i = 0
    while not stop.is_set():
        i += 1
        try:
            async with request(session, i) as resp:
                await resp.read()
                answered[resp.status] += 1
        except (aiohttp.ClientError, TimeoutError):
            answered[-1] += 1
    return answered


async def _under_flood(url, watch_headers, clients, request) -> tuple[Counter[str], Counter[int]]:
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as flood, aiohttp.ClientSession() as own:
        floods = [asyncio.create_task(_flood(flood, request, stop)) for _ in range(clients)]
        await asyncio.sleep(0.5)  # the flood is on before the first watched scrape
        watcher = asyncio.create_task(_watch(own, url, watch_headers, stop))
        await asyncio.sleep(FLOOD_SECONDS)
        stop.set()
        seen = await watcher
        answered: Counter[int] = Counter()
        for counts in await asyncio.gather(*floods):
            answered.update(counts)
    return seen, answered


def _all_ok(seen: Counter[str]) -> None:
    bad = {k: v for k, v in seen.items() if not k.endswith(" 200")}
    assert not bad, f"scrapes/probes failed under the flood: {dict(seen)}"
    assert sum(seen.values()) >= 15, dict(seen)


async def test_drift_get_flood_does_not_starve_scrapes_or_probes(tmp_path: Path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("drift:\n  window_seconds: 1h\n")  # every GET evaluates afresh
    with running(tmp_path, f"--config.file={cfg}") as agent:
        async with aiohttp.ClientSession() as s:
            rows = make_rows(3000, seed=1)
            url = agent.url + "/api/v1/models/g"
            async with s.put(url + "/reference", json={"rows": rows}) as resp:
                assert resp.status == 201
            rows = make_rows(3000, shift=0.5, seed=2)
            async with s.post(url + "/observations", json={"rows": rows}) as resp:
                assert resp.status == 200

        def get_drift(session, i):
            return session.get(url + "/drift")

        seen, answered = await _under_flood(agent.url, {}, 45, get_drift)
    _all_ok(seen)
    assert answered[200] > 0, answered  # the flood itself was served, not refused wholesale


async def test_wrong_password_flood_does_not_starve_scrapes_or_probes(tmp_path: Path):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    right = {"Authorization": _basic("prometheus", "s3cret")}
    with running(tmp_path, f"--web.config.file={web}") as agent:
        assert agent.get("/metrics", right).status == 200  # Prometheus's verdict is cached

        def guess(session, i):
            return session.get(
                agent.url + "/metrics", headers={"Authorization": _basic("prometheus", f"g{i}")}
            )

        seen, answered = await _under_flood(agent.url, right, 50, guess)
    _all_ok(seen)
    assert set(answered) <= {401, 503}, answered
    assert answered[401] > 0


def test_sighup_revokes_a_leaked_drift_token(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("leaked\n")
    with running(tmp_path, f"--drift.token-file={token}") as agent:
        body = json.dumps({"rows": make_rows(20)}).encode()

        def put(tok: str) -> int:
            import urllib.error
            import urllib.request

            req = urllib.request.Request(
                agent.url + "/api/v1/models/m/reference",
                data=body,
                method="PUT",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {tok}"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as err:
                return int(err.code)

        assert put("leaked") == 201
        token.write_text("fresh\n")
        agent.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while put("leaked") != 401 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert put("leaked") == 401
        assert put("fresh") == 200


def _soft_nofile_1024() -> None:
    import resource

    resource.setrlimit(
        resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )


def test_idle_and_slow_connections_neither_exhaust_nor_linger(tmp_path: Path):
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2400:
        pytest.skip(f"needs 2,400 descriptors for its own sockets, hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2400), hard))
    agent = AgentProcess(
        ["--collector.disable-defaults", "--sampler.interval=1s", "--web.idle-timeout=2s"],
        tmp_path,
        preexec_fn=_soft_nofile_1024,  # the usual default soft limit, as under a plain shell
    ).start()
    idle: list[socket.socket] = []
    try:
        agent.wait_ready()
        for _ in range(1100):  # more than a 1024 soft limit
            idle.append(socket.create_connection(("127.0.0.1", agent.port), timeout=5))
        assert agent.get("/metrics").status == 200
        assert agent.get("/healthz").status == 200
        # A client trickling its headers, and the idle ones, are closed after the idle timeout.
        slow = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert slow.recv(100) == b""
        assert time.monotonic() - started < 6
        slow.close()
        idle[0].settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert idle[0].recv(100) == b""
    finally:
        for s in idle:
            s.close()
        agent.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_malformed_requests_log_no_traceback(tmp_path: Path):
    import socket

    with running(tmp_path) as agent:
        for garbage in (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # TLS to plain HTTP
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost x\r\n\r\n",
            b"POST /api/v1/drift/evaluate HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as s:
                s.sendall(garbage)
                with contextlib.suppress(OSError):
                    s.recv(1000)
        assert agent.get("/healthz").status == 200
        log = agent.output()
    assert "Error handling request" not in log


def test_second_agent_on_one_state_dir_exits_2_naming_the_holder(tmp_path: Path):
    with running(tmp_path) as first:
        assert first.proc is not None
        second = AgentProcess(["--collector.disable-defaults", "--collector.drift"], tmp_path)
        second.start()
        assert second.proc is not None
        assert second.proc.wait(20) == 2
        out = second.output()
        second.stop()
    assert f"in use by another agent (pid {first.proc.pid})" in out
    assert out.strip().count("\n") == 0, out
