"""Hostile values at every edge: 4xx at the API, one line and exit 2 at startup, never a 500."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from node_exporter_ml.cli import main
from node_exporter_ml.drift.bodies import Limits
from node_exporter_ml.drift.service import DriftService
from node_exporter_ml.drift.store import DB_NAME, Window
from tests.drift_helpers import app_for, make_rows, running_service

HUGE = "9" * 5000  # past Python's 4,300-digit int limit
LIMITS = Limits(max_rows=5000, max_models=2, max_features=4)


@pytest.fixture
async def service(tmp_path: Path):
    async with running_service(
        str(tmp_path / "state"), interval=3600, window=Window(rows=100), limits=LIMITS
    ) as svc:
        yield svc


@pytest.fixture
async def client(aiohttp_client, service):
    client = await aiohttp_client(app_for(service))
    resp = await client.put("/api/v1/models/m/reference", json={"rows": make_rows(50, seed=1)})
    assert resp.status == 201, await resp.text()
    return client


def _pair(options: str) -> bytes:
    data = '{"columns": {"a": [1, 2, 3, 4]}}'
    return f'{{"reference": {data}, "current": {data}, "options": {options}}}'.encode()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(
            "/api/v1/models/m/observations",
            f'{{"rows": [{{"amount": {HUGE}}}]}}'.encode(),
            id="huge int in observations",
        ),
        pytest.param(
            "/api/v1/models/m/labels",
            f'{{"labels": [{{"id": "a", "label": {HUGE}}}]}}'.encode(),
            id="huge int in labels",
        ),
        pytest.param("/api/v1/drift/evaluate", _pair(f'{{"threshold": {HUGE}}}'), id="huge int"),
        pytest.param(
            "/api/v1/drift/evaluate", _pair('{"threshold": 1' + "0" * 400 + "}"), id="big"
        ),
        pytest.param("/api/v1/drift/evaluate", _pair('{"drift_share": 1e308}'), id="share 1e308"),
        pytest.param("/api/v1/drift/evaluate", _pair('{"threshold": 1e999}'), id="inf"),
        pytest.param("/api/v1/drift/evaluate", _pair('{"threshold": NaN}'), id="nan"),
    ],
)
async def test_huge_numbers_are_400(client, path, body):
    resp = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert "error" in await resp.json()


async def test_huge_integers_in_csv_are_text_not_a_500(client):
    csv = f"a,b\n1,x\n{HUGE},y\n3,z\n".encode()
    resp = await client.put(
        "/api/v1/models/csv/reference", data=csv, headers={"Content-Type": "text/csv"}
    )
    assert resp.status == 201, await resp.text()


async def test_model_and_feature_caps(client):
    rows = make_rows(20, seed=2)
    assert (await client.put("/api/v1/models/two/reference", json={"rows": rows})).status == 201
    resp = await client.put("/api/v1/models/three/reference", json={"rows": rows})
    assert resp.status == 429
    assert "drift.max_models" in (await resp.json())["error"]
    # Replacing a known model's reference is not a new model.
    assert (await client.put("/api/v1/models/two/reference", json={"rows": rows})).status == 200
    assert (await client.delete("/api/v1/models/two")).status == 200
    assert (await client.put("/api/v1/models/three/reference", json={"rows": rows})).status == 201
    wide = [{f"f{i}": float(i) for i in range(5)}]
    resp = await client.put("/api/v1/models/three/reference", json={"rows": wide})
    assert resp.status == 413
    assert "drift.max_features" in (await resp.json())["error"]
    resp = await client.post("/api/v1/models/m/observations", json={"rows": wide})
    assert resp.status == 413


async def test_full_disk_is_507_with_a_json_error(client, service, caplog):
    # SQLite's own size limit fails a write exactly as a full disk does (SQLITE_FULL).
    def fill() -> None:
        conn = service.store._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await service.in_db(fill)
    resp = await client.post("/api/v1/models/m/observations", json={"rows": make_rows(3000)})
    assert resp.status == 507
    assert "full" in (await resp.json())["error"]


async def test_a_damaged_stored_result_is_skipped_at_start(tmp_path, caplog):
    state = tmp_path / "state"
    svc = DriftService(str(state), interval=3600)
    await svc.start(run_loop=False)
    client_rows = make_rows(30)
    for model in ("good", "bad"):
        prepared = await svc.in_worker(
            svc.prepare_reference_json, json.dumps({"rows": client_rows}).encode()
        )
        await svc.in_db(svc.store_reference, model, prepared)
        await svc.in_db(svc.evaluate_model, model)
    await svc.stop()

    def damage() -> None:
        with sqlite3.connect(state / DB_NAME) as conn:
            conn.execute("UPDATE result SET report = '{not json' WHERE model = 'bad'")

    await asyncio.to_thread(damage)
    again = DriftService(str(state), interval=3600)
    with caplog.at_level(logging.ERROR):
        await again.start(run_loop=False)
    try:
        assert set(again.latest()) == {"good"}
        assert "skipping the stored result of bad" in caplog.text
    finally:
        await again.stop()


async def test_a_second_agent_on_one_state_dir_is_refused(tmp_path):
    first = DriftService(str(tmp_path / "state"), interval=3600)
    await first.start(run_loop=False)
    try:
        second = DriftService(str(tmp_path / "state"), interval=3600)
        with pytest.raises(Exception, match=r"in use by another agent \(pid \d+\)"):
            await second.start(run_loop=False)
    finally:
        await first.stop()
    third = DriftService(str(tmp_path / "state"), interval=3600)  # released on stop
    await third.start(run_loop=False)
    await third.stop()


# --- startup: one line, exit 2 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        pytest.param("drift:\n  window_seconds: .nan\n", "drift.window_seconds", id="nan window"),
        pytest.param("drift:\n  window_rows: " + "1" + "0" * 23 + "\n", "window_rows", id="1e23"),
        pytest.param(f"drift:\n  max_rows: {HUGE}\n", "expected valid YAML", id="huge int"),
        pytest.param("serving:\n  timeout: .inf\n", "serving.timeout", id="inf timeout"),
        pytest.param(
            "serving:\n  targets:\n    - url: http://127.0.0.1:99999/metrics\n",
            "serving.targets[0].url",
            id="port 99999",
        ),
        pytest.param(
            "serving:\n  targets:\n    - url: 'http://[::1/metrics'\n",
            "serving.targets[0].url",
            id="broken IPv6 host",
        ),
    ],
)
def test_bad_config_values_exit_2_with_one_line(tmp_path, capsys, yaml_text, message):
    path = tmp_path / "agent.yaml"
    path.write_text(yaml_text)
    assert main([f"--config.file={path}", f"--state.dir={tmp_path}/s"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert message in err


@pytest.mark.parametrize(
    "flag",
    [
        "--collector.timeout=nan",
        "--sampler.interval=inf",
        "--drift.interval=1e400",
        "--sampler.interval=400d",
        "--kube.api-url=https://10.0.0.1:99999",
    ],
)
def test_bad_flag_values_exit_2_with_one_line(flag):
    proc = subprocess.run(
        [sys.executable, "-m", "node_exporter_ml", flag, "--web.listen-address=127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "Traceback" not in proc.stderr
