from __future__ import annotations

import asyncio
import base64
import gzip

import bcrypt
import pytest
from aiohttp import web

from node_exporter_ml import webconfig
from node_exporter_ml.agent import Agent
from node_exporter_ml.web import build_app
from node_exporter_ml.webconfig import WebConfig
from node_exporter_ml.webguard import ADMISSION
from tests.helpers import (
    CountingCollector,
    FailingCollector,
    SlowCollector,
    config,
    registry,
    wait_ready,
)

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _agent(*classes, **kw):
    names = [c.name for c in classes]
    return Agent(config(*names, **kw), registry=registry(*classes), process_metrics=False)


async def test_readyz_is_503_until_first_snapshot(aiohttp_client):
    agent = _agent(CountingCollector, SlowCollector, collector_timeout=0.5)
    client = await aiohttp_client(build_app(agent))
    assert (await client.get("/readyz")).status == 503
    resp = await client.get("/metrics")
    assert resp.status == 503
    assert (await client.get("/healthz")).status == 200
    await wait_ready(client)
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert 'nodeml_collector_success{collector="slow"} 0.0' in text
    assert 'nodeml_collector_success{collector="counting"} 1.0' in text
    agent.collectors[1].release.set()  # type: ignore[attr-defined]


async def test_metrics_negotiates_format_and_gzip(aiohttp_client):
    client = await aiohttp_client(build_app(_agent(CountingCollector)))
    await wait_ready(client)
    resp = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.read()).endswith(b"# EOF\n")
    resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert b"nodeml_build_info" in gzip.decompress(await resp.read())
    resp = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in resp.headers
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


async def test_landing_page_lists_collectors_and_status(aiohttp_client):
    client = await aiohttp_client(build_app(_agent(CountingCollector, FailingCollector)))
    await wait_ready(client)
    page = await (await client.get("/")).text()
    assert "node-exporter-ml" in page
    assert "counting" in page
    assert "RuntimeError: device on fire" in page
    assert 'href="/metrics"' in page


async def test_basic_auth_rejects_wrong_password_and_caches_bcrypt(aiohttp_client, monkeypatch):
    calls = []
    real = bcrypt.checkpw

    def counting_checkpw(password, hashed):
        calls.append((password, hashed))
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting_checkpw)
    web_config = WebConfig(users={"prometheus": HASH}, headers={"X-Frame-Options": "DENY"})
    client = await aiohttp_client(build_app(_agent(CountingCollector), web_config))
    await wait_ready(client)  # probes need no credentials
    assert (await client.get("/metrics")).status == 401
    resp = await client.get("/metrics", headers={"Authorization": _basic("prometheus", "nope")})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert (
        await client.get("/metrics", headers={"Authorization": _basic("eve", "s3cret")})
    ).status == 401
    for _ in range(5):
        resp = await client.get(
            "/metrics", headers={"Authorization": _basic("prometheus", "s3cret")}
        )
        assert resp.status == 200
        assert resp.headers["X-Frame-Options"] == "DENY"
    assert calls.count((b"s3cret", HASH)) == 1, "bcrypt runs once per distinct credential"
    assert (await client.get("/metrics", headers={"Authorization": "Basic !!!"})).status == 401


async def test_max_requests_answers_503_beyond_limit_per_budget(aiohttp_client):
    agent = _agent(CountingCollector, max_requests=2)
    app = build_app(agent)
    gate = asyncio.Event()

    async def hold(request):
        await gate.wait()
        return web.Response(text="held")

    app.router.add_get("/hold", hold)
    client = await aiohttp_client(app)
    await wait_ready(client)
    held = [asyncio.create_task(client.get("/hold")) for _ in range(2)]
    for _ in range(200):
        if app[ADMISSION].inflight["api"] == 2:
            break
        await asyncio.sleep(0.01)
    resp = await client.get("/hold")
    assert resp.status == 503
    assert "too many concurrent requests" in await resp.text()
    # Scrapes and probes have their own budget: a full API budget does not starve them.
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/metrics")).status == 200
    gate.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("tls_server_config:\n  cert_file: a\n", "tls_server_config.key_file: missing"),
        ("tls_server_config: {cert_file: a, key_file: b, min_version: SSL3}", "min_version"),
        ("tls_server_config: {cert_file: a, key_file: b, client_auth_type: Maybe}", "client_auth"),
        ("basic_auth_users: [alice]", "basic_auth_users: expected a mapping"),
        ("http_server_config: {http2: true}", "HTTP/2 is not supported"),
        ("tls_config: {}", "tls_config: unknown key"),
    ],
)
def test_web_config_errors(tmp_path, yaml_text, message):
    with pytest.raises(webconfig.ConfigError, match=message.replace("(", r"\(")):
        webconfig.parse_web_config(yaml_text, "web.yml", tmp_path)
