"""Benchmark of the serving collector (issue 5 item 7).

1. 32 model-server targets, served from the framework fixtures by a separate process,
   scraped by the real ServingCollector (plus the LatencyCauses enricher) every second:
   the agent's CPU time over wall time, as a share of one core (goal < 5 %).
2. Time to parse a 1 MB exposition with the serving parser (goal < 20 ms), next to
   prometheus_client's text_string_to_metric_families for reference.

Usage: python bench/serving.py [--seconds 30] [--targets 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import socket
import statistics
import time
from pathlib import Path

import uvloop
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.serving import LatencyCauses, ServingCollector
from node_exporter_ml.config import Config
from node_exporter_ml.serving.options import ServingOptions, ServingTarget
from node_exporter_ml.serving.parse import parse_exposition
from node_exporter_ml.serving.scrape import parse_body
from node_exporter_ml.snapshot import CollectorResult, Snapshot

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "serving"
FRAMEWORKS = sorted(p.name.removesuffix(".prom") for p in FIXTURES.glob("*.prom")
                    if not p.name.endswith(".later.prom"))  # fmt: skip


def _serve(port: int, ready: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    texts = {
        fw: ((FIXTURES / f"{fw}.prom").read_text(), (FIXTURES / f"{fw}.later.prom").read_text())
        for fw in FRAMEWORKS
    }
    served: dict[str, int] = {}

    async def metrics(request: web.Request) -> web.Response:
        key = request.match_info["n"]
        fw = FRAMEWORKS[int(key) % len(FRAMEWORKS)]
        n = served[key] = served.get(key, 0) + 1
        return web.Response(text=texts[fw][min(n - 1, 1)], content_type="text/plain")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/t/{n}/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def scrape_loop(port: int, targets: int, seconds: float) -> dict[str, float]:
    config = Config().with_options(
        ServingOptions(
            window=60.0,
            targets=tuple(
                ServingTarget(url=f"http://127.0.0.1:{port}/t/{i}/metrics", name=f"t{i}", pid=1)
                for i in range(targets)
            ),
        )
    )
    collector = ServingCollector(CollectContext(config))
    causes = LatencyCauses(config)
    loop = asyncio.get_running_loop()
    # Warm up: first scrape of every target (sessions, label caches).
    await collector.update(None)
    durations = []
    ticks = 0
    cpu0, wall0 = _cpu_seconds(), time.monotonic()
    next_tick = wall0
    try:
        while time.monotonic() - wall0 < seconds:
            started = time.monotonic()
            data = await collector.update(None)
            snap = Snapshot(
                taken_at=time.time(),
                results={"serving": CollectorResult("serving", True, 0.0, data)},
            )
            snap = await loop.run_in_executor(None, causes, snap)
            list(collector.families(data, snap))
            durations.append(time.monotonic() - started)
            up = sum(t.up for t in data.targets)
            if up != targets:
                raise SystemExit(f"only {up}/{targets} targets up")
            ticks += 1
            next_tick += 1.0
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        await collector.stop()
    cpu, wall = _cpu_seconds() - cpu0, time.monotonic() - wall0
    return {
        "targets": targets,
        "ticks": ticks,
        "cpu_share_of_one_core": cpu / wall,
        "tick_seconds_median": statistics.median(durations),
        "tick_seconds_max": max(durations),
    }


def parse_benchmark(size: int = 1_000_000, repeat: int = 7) -> dict[str, float]:
    """Best-of-`repeat` parse times of ~1 MB expositions: a mix of all fixtures, and TGI's
    1024-bucket histograms alone (the densest lines, the worst case)."""
    out: dict[str, float] = {}
    mix = "".join((FIXTURES / f"{fw}.prom").read_text() for fw in FRAMEWORKS)
    tgi = (FIXTURES / "tgi.prom").read_text()
    for label, unit in (("mix", mix), ("tgi", tgi)):
        text = (unit * (size // len(unit) + 1))[:size]
        text = text[: text.rfind("\n") + 1]
        cache: dict = {}
        cold = []
        warm = []
        for _ in range(repeat):
            t = time.perf_counter()
            parse_exposition(text)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            parse_exposition(text, cache)
            warm.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in text_string_to_metric_families(text):
            pass
        out[f"parse_1mb_{label}_ms"] = min(cold) * 1000
        out[f"parse_1mb_{label}_label_cache_ms"] = min(warm) * 1000
        out[f"prometheus_client_1mb_{label}_ms"] = (time.perf_counter() - t) * 1000
        out[f"lines_1mb_{label}"] = text.count("\n")
        if label == "tgi":
            # What the collector does with such a body: TYPE scan, then only the
            # families the TGI profile reads are parsed.
            body = text.encode()
            reads = []
            for _ in range(repeat):
                t = time.perf_counter()
                parse_body(body, cache)
                reads.append(time.perf_counter() - t)
            out["collector_read_1mb_tgi_ms"] = min(reads) * 1000
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--targets", type=int, default=32)
    args = p.parse_args()
    port = _free_port()
    ready = multiprocessing.get_context("spawn").Event()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, ready), daemon=True
    )
    server.start()
    try:
        if not ready.wait(30):
            raise SystemExit("fixture server did not start")
        # The agent runs on uvloop; so does the benchmark.
        result = uvloop.run(scrape_loop(port, args.targets, args.seconds))
    finally:
        server.terminate()
        server.join(5)
    result.update(parse_benchmark())
    print(
        json.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}, indent=1
        )
    )


if __name__ == "__main__":
    main()
