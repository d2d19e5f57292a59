"""/metrics and /healthz under hostile floods (issue 11), next to the same scrapes with no flood.

Starts the agent (drift collector only, a model with a time window so every GET evaluates) on
loopback, then for each scenario runs the flood for --seconds while a scraper asks for /metrics
and /healthz every 100 ms, and prints their latency and how many answered 200:

- ``quiet``: no flood (the peer every other line is read against);
- ``drift GET``: 45 clients looping GET /api/v1/models/g/drift;
- ``wrong passwords``: 50 clients guessing basic-auth passwords (bcrypt cost 10);
- ``evaluations``: 8 clients looping POST /api/v1/drift/evaluate with 20,000-row tables.

    .venv/bin/python bench/flood.py --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt

Request = Callable[[aiohttp.ClientSession, int], Any]


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()


def _rows(n: int, shift: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"a": rng.gauss(shift, 1), "b": rng.choice("xyz"), "c": rng.randint(0, 9)} for _ in range(n)
    ]


async def _scrape(session: aiohttp.ClientSession, url: str, headers: dict[str, str], stop):
    lat: dict[str, list[float]] = {"/metrics": [], "/healthz": []}
    ok = dict.fromkeys(lat, 0)
    total = dict.fromkeys(lat, 0)
    while not stop.is_set():
        for path in lat:
            started = time.perf_counter()
            try:
                async with session.get(
                    url + path, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as resp:
                    await resp.read()
                    ok[path] += resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                pass
            total[path] += 1
            lat[path].append(time.perf_counter() - started)
        await asyncio.sleep(0.1)
    return lat, ok, total


async def _loop(session: aiohttp.ClientSession, request: Request, stop) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            async with request(session, i) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            pass


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else float("nan")


async def _scenario(
    url: str, headers: dict[str, str], clients: int, request: Request | None, seconds: float
) -> tuple[dict[str, list[float]], dict[str, int], dict[str, int]]:
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as flood, aiohttp.ClientSession() as own:
        tasks = (
            [asyncio.create_task(_loop(flood, request, stop)) for _ in range(clients)]
            if request
            else []
        )
        await asyncio.sleep(0.5 if tasks else 0)
        scraper = asyncio.create_task(_scrape(own, url, headers, stop))
        await asyncio.sleep(seconds)
        stop.set()
        result = await scraper
        await asyncio.gather(*tasks)
    return result


async def _setup(url: str, headers: dict[str, str]) -> None:
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.put(url + "/api/v1/models/g/reference", json={"rows": _rows(5000, 0, 1)}) as r:
            assert r.status == 201, await r.text()
        async with s.post(
            url + "/api/v1/models/g/observations", json={"rows": _rows(5000, 0.3, 2)}
        ) as r:
            assert r.status == 200, await r.text()
        for _ in range(100):  # Prometheus's credential: one bcrypt run, then cached
            async with s.get(url + "/readyz") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.1)


def _print(name: str, result: Any) -> None:
    lat, ok, total = result
    cells = [name]
    for path in ("/metrics", "/healthz"):
        cells += [
            f"{_pct(lat[path], 0.5):.1f}",
            f"{_pct(lat[path], 0.99):.1f}",
            f"{ok[path]}/{total[path]}",
        ]
    print("{:<18} {:>10} {:>10} {:>8}   {:>10} {:>10} {:>8}".format(*cells))


async def _bench(url: str, right: dict[str, str], seconds: float) -> None:
    for _ in range(100):
        try:
            await _setup(url, right)
            break
        except aiohttp.ClientError:
            await asyncio.sleep(0.2)
    table = {"columns": {"a": [random.gauss(0, 1) for _ in range(20_000)]}}
    # Encoded once: encoding per request would load this process's loop, not the agent's.
    body = json.dumps({"reference": table, "current": table}).encode()
    json_right = {**right, "Content-Type": "application/json"}

    def evaluate(s: aiohttp.ClientSession, i: int) -> Any:
        return s.post(url + "/api/v1/drift/evaluate", data=body, headers=json_right)

    def guess(s: aiohttp.ClientSession, i: int) -> Any:
        return s.get(url + "/metrics", headers={"Authorization": _basic(f"g{i}")})

    def drift(s: aiohttp.ClientSession, i: int) -> Any:
        return s.get(url + "/api/v1/models/g/drift", headers=right)

    scenarios: list[tuple[str, int, Request | None]] = [
        ("quiet (peer)", 0, None),
        ("drift GET", 45, drift),
        ("wrong passwords", 50, guess),
        ("evaluations", 8, evaluate),
    ]
    print(f"{seconds:g} s per scenario; latency in ms; answered 200 / asked")
    head = ("flood", "metrics p50", "p99", "200s", "healthz p50", "p99", "200s")
    print("{:<18} {:>10} {:>10} {:>8}   {:>10} {:>10} {:>8}".format(*head))
    for name, clients, request in scenarios:
        _print(name, await _scenario(url, right, clients, request, seconds))


def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        web = d / "web.yml"
        hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=10)).decode()
        web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
        cfg = d / "agent.yaml"
        cfg.write_text("drift:\n  window_seconds: 1h\n")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        agent = subprocess.Popen(
            [
                sys.executable, "-m", "node_exporter_ml", f"--web.listen-address=127.0.0.1:{port}",
                f"--state.dir={d}/state", "--collector.disable-defaults", "--collector.drift",
                "--sampler.interval=1s", f"--web.config.file={web}", f"--config.file={cfg}",
            ],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            right = {"Authorization": _basic("s3cret")}
            asyncio.run(_bench(f"http://127.0.0.1:{port}", right, seconds))
        finally:
            agent.terminate()
            agent.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    main(parser.parse_args().seconds)
