"""One authentication middleware: every route x every auth configuration x every credential.

Issue 11, High: with basic auth configured, any ``Authorization: Bearer <anything>`` used to
skip it under /api/ (reads always; writes too without a token file).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from pathlib import Path

import bcrypt
import pytest

from node_exporter_ml import webconfig, webguard
from node_exporter_ml.agent import Agent
from node_exporter_ml.collectors.drift import DriftCollector
from node_exporter_ml.web import build_app
from node_exporter_ml.webconfig import BasicAuth, WebConfig
from tests.helpers import config, registry

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
TOKEN = "tok-3f9a"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


CREDENTIALS = {
    "none": {},
    "wrong": {"Authorization": _basic("prometheus", "nope"), "X-Drift-Token": "nope"},
    "right": {"Authorization": _basic("prometheus", "s3cret"), "X-Drift-Token": TOKEN},
    "bearer junk": {"Authorization": "Bearer junk"},
    "bearer token": {"Authorization": f"Bearer {TOKEN}"},
}
CONFIGS = {"none": (False, False), "basic": (True, False), "token": (False, True)}
CONFIGS["both"] = (True, True)

# (method, path, is a write under /api/, is a probe)
ROUTES = [
    ("GET", "/metrics", False, False),
    ("GET", "/", False, False),
    ("GET", "/healthz", False, True),
    ("GET", "/readyz", False, True),
    ("GET", "/nowhere", False, False),
    ("GET", "/api/v1/openapi.json", False, False),
    ("GET", "/api/v1/models", False, False),
    ("GET", "/api/v1/models/m/drift", False, False),
    ("GET", "/drift/m", False, False),
    ("PUT", "/api/v1/models/m/reference", True, False),
    ("POST", "/api/v1/models/m/observations", True, False),
    ("POST", "/api/v1/models/m/labels", True, False),
    ("DELETE", "/api/v1/models/m", True, False),
    ("POST", "/api/v1/drift/evaluate", True, False),
    ("POST", "/api/v1/nowhere", True, False),
]


def _denied(cfg: str, cred: str, write: bool, probe: bool) -> bool:
    basic, token = CONFIGS[cfg]
    if probe:
        return False
    if basic and cred != "right":
        return True
    return write and token and cred not in ("right", "bearer token")


@pytest.mark.parametrize("cfg", list(CONFIGS))
async def test_every_route_every_config_every_credential(aiohttp_client, tmp_path, cfg):
    basic, token = CONFIGS[cfg]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    agent = Agent(
        config(
            "drift",
            drift_state_dir=str(tmp_path / "state"),
            drift_token_file=str(token_file) if token else None,
        ),
        registry=registry(DriftCollector),
        process_metrics=False,
    )
    web_config = WebConfig(users={"prometheus": HASH} if basic else {})
    client = await aiohttp_client(build_app(agent, web_config))
    for _ in range(250):
        if (await client.get("/readyz")).status == 200:
            break
        await asyncio.sleep(0.02)
    failures = []
    for (method, path, write, probe), (cred, headers) in itertools.product(
        ROUTES, CREDENTIALS.items()
    ):
        resp = await client.request(method, path, headers=headers, data=b"{}")
        denied = resp.status == 401
        if denied != _denied(cfg, cred, write, probe):
            failures.append(f"{method} {path} with {cred}: {resp.status}")
        if denied:
            assert "WWW-Authenticate" in resp.headers
            if path.startswith("/api/"):
                assert "error" in await resp.json()
    assert not failures, failures


async def test_unknown_user_costs_a_bcrypt_run_too(monkeypatch):
    calls = []
    real = bcrypt.checkpw

    def counting(password, hashed):
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting)
    auth = BasicAuth({"prometheus": HASH})
    assert auth.cached(_basic("eve", "x")) is None  # not answered at once: no timing oracle
    assert not await asyncio.to_thread(auth.verify, _basic("eve", "x"))
    assert len(calls) == 1
    assert calls[0] != HASH
    assert auth.cached(_basic("eve", "x")) is False  # and cached, like a wrong password


async def test_bcrypt_runs_are_capped_and_excess_answered_at_once(monkeypatch):
    running = []
    peak = []
    release = asyncio.Event()

    def slow_verify(header):
        running.append(1)
        peak.append(len(running))
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)
        running.pop()
        return False

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(webguard, "BCRYPT_QUEUE", 6)
    auth = webguard.Authenticator({"prometheus": HASH})
    monkeypatch.setattr(auth.basic, "verify", slow_verify)
    tasks = [
        asyncio.create_task(auth.basic_ok(_basic("prometheus", f"guess{i}"))) for i in range(6)
    ]
    await asyncio.sleep(0.1)
    # The queue is full: the next unknown credential is refused without a bcrypt run.
    assert await auth.basic_ok(_basic("prometheus", "one more")) is None
    release.set()
    assert await asyncio.gather(*tasks) == [False] * 6
    assert max(peak) == webguard.BCRYPT_CONCURRENCY


@pytest.mark.parametrize(
    ("hashed", "message"),
    [
        ("$2b$12$short", "bcrypt hash"),
        ("$2b$99$" + "a" * 53, "bcrypt hash"),
        ("plaintext", "bcrypt hash"),
    ],
)
def test_malformed_bcrypt_hash_is_a_startup_error(tmp_path: Path, hashed, message):
    text = f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    with pytest.raises(webconfig.ConfigError, match=message):
        webconfig.parse_web_config(text, "web.yml", tmp_path)
