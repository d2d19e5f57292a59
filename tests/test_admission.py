"""Admission: concurrent GETs share an evaluation; bodies are read under a deadline, first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node_exporter_ml.drift import web as api
from node_exporter_ml.drift.store import Window
from tests.drift_helpers import app_for, make_rows, running_service


@pytest.fixture
async def service(tmp_path: Path):
    # A time window: no result is ever "fresh", so every GET would evaluate on its own.
    async with running_service(
        str(tmp_path / "state"), interval=3600, window=Window(seconds=3600)
    ) as svc:
        yield svc


async def test_concurrent_gets_of_one_model_share_one_evaluation(aiohttp_client, service):
    client = await aiohttp_client(app_for(service))
    rows = make_rows(200, seed=1)
    assert (await client.put("/api/v1/models/m/reference", json={"rows": rows})).status == 201
    assert (await client.post("/api/v1/models/m/observations", json={"rows": rows})).status == 200
    runs = []
    real = service.evaluate_model

    def counted(model):
        runs.append(model)
        return real(model)

    service.evaluate_model = counted  # type: ignore[method-assign]
    answers = await asyncio.gather(*(client.get("/api/v1/models/m/drift") for _ in range(30)))
    assert [r.status for r in answers] == [200] * 30
    assert len(runs) <= 3, f"{len(runs)} evaluations for 30 concurrent GETs"


async def test_a_trickled_body_holds_no_slot_and_times_out(aiohttp_client, service, monkeypatch):
    monkeypatch.setattr(api, "BODY_TIMEOUT", 0.6)
    client = await aiohttp_client(app_for(service))
    rows = make_rows(50, seed=2)
    assert (await client.put("/api/v1/models/m/reference", json={"rows": rows})).status == 201

    async def trickle():
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            b"POST /api/v1/models/m/observations HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        try:
            for _ in range(20):
                await asyncio.sleep(0.1)
                writer.write(b" ")
                await writer.drain()
        except ConnectionError:
            pass
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        return status

    tricklers = [asyncio.create_task(trickle()) for _ in range(4)]  # twice the 2 work slots
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    resp = await client.post("/api/v1/models/m/observations", json={"rows": rows})
    assert resp.status == 200
    assert asyncio.get_running_loop().time() - started < 0.5, "a write waited for tricklers"
    statuses = await asyncio.gather(*tricklers)
    assert all(b" 408 " in s for s in statuses), statuses


async def test_stateless_evaluations_run_one_at_a_time(aiohttp_client, service):
    client = await aiohttp_client(app_for(service))
    running, peak = [], []
    real = service.in_process  # evaluation runs in the worker process; count calls into it

    def tracked(fn, *args):
        running.append(1)
        peak.append(len(running))
        try:
            return real(fn, *args)
        finally:
            running.pop()

    service.in_process = tracked  # type: ignore[method-assign]
    data = {"columns": {"a": [float(i % 17) for i in range(2000)]}}
    body = {"reference": data, "current": data}
    answers = await asyncio.gather(
        *(client.post("/api/v1/drift/evaluate", json=body) for _ in range(6))
    )
    assert [r.status for r in answers] == [200] * 6
    assert max(peak) == 1, "evaluations overlapped (each holds the GIL while scrapes wait)"
