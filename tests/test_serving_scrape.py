"""Faulty model servers only ever show up as target_up 0 with a counted reason."""

from __future__ import annotations

import asyncio
import gzip
import math
from collections.abc import Iterator

import pytest
from aiohttp import web
from blockbuster import blockbuster_ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.serving import ServingCollector
from node_exporter_ml.serving.data import ServingData
from node_exporter_ml.serving.options import ServingTarget
from node_exporter_ml.serving.scrape import ScrapeError, parse_body, parse_info_model
from node_exporter_ml.snapshot import Snapshot
from tests.helpers import make_config
from tests.serving_fakes import SERVING_FIXTURES
from tools.ports import free_port

GOOD = (SERVING_FIXTURES / "vllm.prom").read_text(encoding="utf-8")
GOOD_LATER = (SERVING_FIXTURES / "vllm.later.prom").read_text(encoding="utf-8")
CAP = 200_000


@pytest.fixture(autouse=True)
def no_blocking() -> Iterator[None]:
    with blockbuster_ctx("node_exporter_ml"):
        yield


@pytest.fixture
async def bad_servers(aiohttp_server):
    release = asyncio.Event()
    phase = {"later": False}

    async def good(request: web.Request) -> web.Response:
        return web.Response(text=GOOD_LATER if phase["later"] else GOOD, content_type="text/plain")

    async def hung(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text=GOOD)

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Grafana</body></html>", content_type="text/html")

    async def binary(request: web.Request) -> web.Response:
        return web.Response(body=bytes(range(256)) * 8, content_type="application/octet-stream")

    async def json_body(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def oversized(request: web.Request) -> web.Response:
        return web.Response(text="x_total 1\n" * (CAP // 5), content_type="text/plain")

    async def gzip_bomb(request: web.Request) -> web.Response:
        body = gzip.compress(b"# padding\n" * (CAP // 2))  # small on the wire, 5x the cap inside
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to refuse on
        await resp.prepare(request)
        for _ in range(CAP // 1000 + 5):
            await resp.write(b"# " + b"y" * 997 + b"\n")
        await resp.write_eof()
        return resp

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, text="warming up")

    async def gzipped_good(request: web.Request) -> web.Response:
        text = GOOD_LATER if phase["later"] else GOOD
        return web.Response(
            body=gzip.compress(text.encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain; version=0.0.4"},
        )

    app = web.Application()
    for name, handler in [
        ("good", good),
        ("hung", hung),
        ("html", html),
        ("binary", binary),
        ("json", json_body),
        ("oversized", oversized),
        ("gzip_bomb", gzip_bomb),
        ("streamed", streamed),
        ("unavailable", unavailable),
        ("gzipped", gzipped_good),
    ]:
        app.router.add_get(f"/{name}", handler)
    server = await aiohttp_server(app)
    yield server, phase
    release.set()


async def test_only_target_up_zero_and_reason(bad_servers):
    server, phase = bad_servers
    names = ["good", "hung", "html", "binary", "json", "oversized", "gzip_bomb", "streamed",
             "unavailable", "gzipped"]  # fmt: skip
    targets = [ServingTarget(url=str(server.make_url(f"/{n}")), name=n, pid=1) for n in names]
    targets.append(ServingTarget(url=f"http://127.0.0.1:{free_port()}/metrics", name="refusing"))
    config = make_config(
        serving_targets=tuple(targets),
        serving_timeout=0.3,
        serving_max_body_bytes=CAP,
        serving_concurrency=4,
    )
    clock = {"t": 0.0}
    collector = ServingCollector(CollectContext(config), clock=lambda: clock["t"])
    try:
        await collector.update(None)
        phase["later"], clock["t"] = True, 10.0
        data = await collector.update(None)
    finally:
        await collector.stop()
    assert isinstance(data, ServingData)
    status = {t.name: t for t in data.targets}
    expected = {
        "hung": "timeout",
        "html": "parse",
        "binary": "parse",
        "json": "parse",
        "oversized": "too_large",
        "gzip_bomb": "too_large",
        "streamed": "too_large",
        "unavailable": "http_503",
        "refusing": "refused",
    }
    for name, reason in expected.items():
        assert not status[name].up, name
        assert status[name].reason is None  # the reason lives in the counter
        assert status[name].models == ()
        assert data.errors_total[(name, reason)] == 2, (name, data.errors_total)
    for name in ("good", "gzipped"):
        assert status[name].up, name
        assert status[name].framework == "vllm"
        assert status[name].models, name
    families = {f.name: f for f in collector.families(data, Snapshot(taken_at=0.0, results={}))}
    up = {s.labels["target"]: s.value for s in families["nodeml_serving_target_up"].samples}
    assert up == {n: (1.0 if n in ("good", "gzipped") else 0.0) for n in status}
    errors = {
        (s.labels["target"], s.labels["reason"]): s.value
        for s in families["nodeml_serving_scrape_errors"].samples
    }
    assert errors == dict.fromkeys(expected.items(), 2.0)
    assert all(
        s.name == "nodeml_serving_scrape_errors_total"
        for s in families["nodeml_serving_scrape_errors"].samples
    )
    latency_targets = {
        s.labels["target"] for s in families["nodeml_serving_request_latency_seconds"].samples
    }
    assert latency_targets == {"good", "gzipped"}


async def test_a_target_that_comes_back_is_windowed_afresh(aiohttp_server):
    state = {"fail": False, "text": GOOD}

    async def flaky(request: web.Request) -> web.Response:
        if state["fail"]:
            return web.Response(status=500)
        return web.Response(text=state["text"], content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", flaky)
    server = await aiohttp_server(app)
    config = make_config(
        serving_window=30.0,
        serving_targets=(ServingTarget(url=str(server.make_url("/metrics")), name="v"),),
    )
    clock = {"t": 0.0}
    collector = ServingCollector(CollectContext(config), clock=lambda: clock["t"])
    try:
        await collector.update(None)
        state["fail"], clock["t"] = True, 5.0
        down = await collector.update(None)
        # Back after longer than the window: no delta spans the outage.
        state["fail"], state["text"], clock["t"] = False, GOOD_LATER, 100.0
        back = await collector.update(None)
        clock["t"] = 105.0
        again = await collector.update(None)
    finally:
        await collector.stop()
    assert not down.targets[0].up
    assert back.targets[0].up
    assert back.targets[0].models == ()
    assert again.targets[0].models  # counters unchanged: 0 requests, but a window exists
    assert again.targets[0].models[0].window.requests == 0


def test_info_model_parsing():
    assert parse_info_model(b'{"model_id": "bigscience/bloom"}') == "bigscience/bloom"
    assert parse_info_model(b"not json") is None
    assert parse_info_model(b"[1, 2]") is None
    assert parse_info_model(b'{"model_id": 3}') is None


async def test_many_hung_targets_stay_inside_the_collector_time_limit(bad_servers):
    server, _ = bad_servers
    good = ServingTarget(url=str(server.make_url("/good")), name="good", pid=1)
    hung = tuple(
        ServingTarget(url=str(server.make_url(f"/hung?n={i}")), name=f"hung{i}") for i in range(12)
    )
    # interval 1 s: the sampler gives the collector 0.8 s; 12 hung targets two at a time,
    # 0.5 s each, would need 3 s.
    config = make_config(
        interval=1.0, serving_targets=(good, *hung), serving_timeout=0.5, serving_concurrency=2
    )
    collector = ServingCollector(CollectContext(config))
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        data = await collector.update(None)
        elapsed = loop.time() - started
    finally:
        await collector.stop()
    assert elapsed < config.timeout
    status = {t.name: t for t in data.targets}
    assert status["good"].up
    assert all(not status[t.label].up for t in hung)
    assert all(data.errors_total[(t.label, "timeout")] == 1 for t in hung)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fixture=st.sampled_from(sorted(p.name for p in SERVING_FIXTURES.glob("*.prom"))),
    cut=st.integers(min_value=0, max_value=60_000),
    junk=st.text(max_size=40),
    at=st.integers(min_value=0, max_value=60_000),
)
def test_mangled_bodies_read_or_fail_as_parse(fixture, cut, junk, at):
    text = (SERVING_FIXTURES / fixture).read_text(encoding="utf-8")
    mangled = (text[:at] + junk + text[at:])[: max(cut, 1)]
    reason = None
    try:
        reading = parse_body(mangled.encode("utf-8", "surrogatepass"), {})
    except ScrapeError as err:
        reason = err.reason
    else:
        assert reading.framework
        for m in reading.models.values():
            assert m.count is None or not math.isinf(m.count)
    assert reason in (None, "parse")


async def test_a_cancelled_update_leaves_no_scrape_running(bad_servers):
    server, _ = bad_servers
    hung = tuple(
        ServingTarget(url=str(server.make_url(f"/hung?n={i}")), name=f"hung{i}") for i in range(4)
    )
    config = make_config(serving_targets=hung, serving_timeout=5.0)
    collector = ServingCollector(CollectContext(config))

    def scrapes() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks() if "Scraper.scrape" in t.get_coro().__qualname__]

    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(collector.update(None), 0.2)
        assert loop.time() - started < 2.0  # not held until the 5 s scrape timeout
        assert scrapes() == []
    finally:
        await collector.stop()


async def test_restart_is_seen_from_process_start_time(aiohttp_server):
    from tests.serving_fakes import SERVING_RECORDING, load

    frames = load(SERVING_RECORDING)["frames"]
    first, later = frames[0]["text"], frames[1]["text"]
    # The same counters as `later`, but from a process that started afresh since.
    restarted = later.replace("process_start_time_seconds 1.79570521123e+09",
                              "process_start_time_seconds 1.79570530000e+09")  # fmt: skip
    assert restarted != later
    bodies = [first, restarted]

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=bodies.pop(0), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = await aiohttp_server(app)
    url = str(server.make_url("/metrics"))
    config = make_config(serving_targets=(ServingTarget(url=url, name="mlp"),))
    clock = {"t": 0.0}
    collector = ServingCollector(CollectContext(config), clock=lambda: clock["t"])
    try:
        await collector.update(None)
        clock["t"] = 1.0
        data = await collector.update(None)
    finally:
        await collector.stop()
    (model,) = data.targets[0].models
    assert model.model == "mlp-8x4096"
    assert model.window.resets == 1
    assert model.window.requests == 1994  # the new process's whole count, not 1994 - 916


async def test_tgi_without_info_endpoint_is_model_unknown(aiohttp_server):
    text = (SERVING_FIXTURES / "tgi.prom").read_text(encoding="utf-8")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)  # no /info: 404
    server = await aiohttp_server(app)
    url = str(server.make_url("/metrics"))
    config = make_config(serving_targets=(ServingTarget(url=url, name="tgi"),))
    clock = {"t": 0.0}
    collector = ServingCollector(CollectContext(config), clock=lambda: clock["t"])
    try:
        await collector.update(None)
        clock["t"] = 5.0
        data = await collector.update(None)
    finally:
        await collector.stop()
    assert data.targets[0].framework == "tgi"
    assert [m.model for m in data.targets[0].models] == ["unknown"]
