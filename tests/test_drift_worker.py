"""The drift worker processes: replaced on death, timeout, task budget and memory cap."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pytest

from node_exporter_ml.collectors.drift import DriftData, worker_families
from node_exporter_ml.drift.bodies import Limits
from node_exporter_ml.drift.engine.columnar import CSV, Upload
from node_exporter_ml.drift.engine.errors import DataError
from node_exporter_ml.drift.store import Window
from node_exporter_ml.drift.worker import WorkerError, WorkerLimits, WorkerPool
from tests.drift_helpers import app_for, make_rows, running_service
from tests.drift_worker_tasks import churn, die, nap


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state in /proc says it is gone.
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def pool():
    p = WorkerPool(1, WorkerLimits(timeout=30.0))
    yield p
    p.close()


def _raise_data_error(message: str) -> None:
    raise DataError(message)


def test_results_and_errors_cross_the_process_boundary(pool):
    assert pool.pids() == []  # started on first use
    assert pool.call(os.getpid) != os.getpid()
    assert pool.call(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        pool.call(divmod, 1, 0)
    assert pool.call(bytes, 3) == b"\0\0\0"
    assert pool.restarts() == {"tasks": 0, "memory": 0, "timeout": 0, "crashed": 0}
    assert pool.resident_memory_bytes() > 10 * 2**20  # measured after the task


def test_a_dead_worker_answers_its_task_and_is_replaced(pool):
    first = pool.call(os.getpid)
    with pytest.raises(WorkerError) as err:
        pool.call(die, 3)
    assert err.value.reason == "crashed"
    assert "exit code 3" in str(err.value)
    assert not _alive(first)
    second = pool.call(os.getpid)
    assert second != first
    assert pool.restarts()["crashed"] == 1


def test_a_worker_past_its_timeout_is_killed():
    pool = WorkerPool(1, WorkerLimits(timeout=0.5))
    try:
        first = pool.call(os.getpid)
        started = time.monotonic()
        with pytest.raises(WorkerError) as err:
            pool.call(nap, 30)
        assert time.monotonic() - started < 10
        assert err.value.reason == "timeout"
        assert not _alive(first)
        assert pool.call(divmod, 9, 4) == (2, 1)
        assert pool.restarts() == {"tasks": 0, "memory": 0, "timeout": 1, "crashed": 0}
    finally:
        pool.close()


def test_recycled_after_its_task_budget_and_above_its_memory_cap():
    pool = WorkerPool(1, WorkerLimits(max_tasks=2))
    try:
        pids = [pool.call(os.getpid) for _ in range(5)]
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        assert pool.restarts()["tasks"] == 2
    finally:
        pool.close()
    pool = WorkerPool(1, WorkerLimits(max_rss_bytes=1))  # every worker is over it
    try:
        first, second = pool.call(os.getpid), pool.call(os.getpid)
        assert first != second
        assert pool.restarts()["memory"] == 2
    finally:
        pool.close()


def test_close_stops_every_worker():
    pool = WorkerPool(2)
    pid = pool.call(os.getpid)
    pool.close()
    assert not _alive(pid)
    assert pool.pids() == []
    with pytest.raises(WorkerError):
        pool.call(os.getpid)


def test_the_worker_families():
    families = {f.name: f for f in worker_families(DriftData((), {"timeout": 2}, 123))}
    samples = families["nodeml_drift_worker_restarts"].samples
    restarts = {s.labels["reason"]: s.value for s in samples if s.name.endswith("_total")}
    assert restarts == {"tasks": 0, "memory": 0, "timeout": 2, "crashed": 0}
    memory = families["nodeml_drift_worker_resident_memory_bytes"].samples
    assert [s.value for s in memory] == [123]


# --- through the API -----------------------------------------------------------------------


@pytest.fixture
async def service(tmp_path: Path):
    async with running_service(
        str(tmp_path / "state"),
        interval=3600,
        window=Window(rows=500),
        limits=Limits(max_body_bytes=4 * 2**20),
        worker=WorkerLimits(timeout=30.0),
    ) as svc:
        yield svc


BODY = {"reference": {"rows": make_rows(400)}, "current": {"rows": make_rows(400, seed=5)}}


async def test_a_killed_worker_is_a_503_and_the_next_request_works(aiohttp_client, service):
    client = await aiohttp_client(app_for(service))
    assert (await client.post("/api/v1/drift/evaluate", json=BODY)).status == 200
    assert service.pool is not None
    (pid,) = service.pool.pids()
    os.kill(pid, signal.SIGKILL)
    await asyncio.to_thread(_wait_gone, pid)
    resp = await client.post("/api/v1/drift/evaluate", json=BODY)
    assert resp.status == 503
    assert "died" in (await resp.json())["error"]
    resp = await client.post("/api/v1/drift/evaluate", json=BODY)
    assert resp.status == 200
    assert service.pool.restarts()["crashed"] == 1
    assert service.pool.pids() != [pid]


async def test_a_timed_out_evaluation_is_a_504(aiohttp_client, tmp_path):
    async with running_service(str(tmp_path / "s"), worker=WorkerLimits(timeout=0.001)) as svc:
        client = await aiohttp_client(app_for(svc))
        resp = await client.post("/api/v1/drift/evaluate", json=BODY)
        assert resp.status == 504
        assert "longer than 0.001 s" in (await resp.json())["error"]
        assert svc.pool is not None
        assert svc.pool.restarts()["timeout"] == 1
        # Writes wait for their worker too: nothing is stored when it timed out.
        resp = await client.put("/api/v1/models/m/reference", json={"rows": make_rows(2000)})
        assert resp.status == 504
        assert (await (await client.get("/api/v1/models")).json())["models"] == []


# --- the real agent ------------------------------------------------------------------------


def _vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _post(url: str, body: dict, method: str = "POST") -> int:
    import json
    import urllib.request

    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(resp.status)


@pytest.mark.timeout(120)
def test_the_agent_never_loads_the_engine_and_stays_small(tmp_path):
    from tools.agentproc import AgentProcess

    agent = AgentProcess(["--collector.disable-defaults", "--collector.drift",
                          "--sampler.interval=0.5s"], tmp_path).start()  # fmt: skip
    try:
        agent.wait_ready()
        assert agent.proc is not None
        pid = agent.proc.pid
        url = f"{agent.url}/api/v1/drift/evaluate"
        body = {"reference": {"rows": make_rows(5000)},
                "current": {"rows": make_rows(5000, seed=7)}}  # fmt: skip
        assert _post(url, body) == 200  # the first use starts the worker
        settled = _vm_rss(pid)
        for _ in range(4):
            assert _post(url, body) == 200
        grown = _vm_rss(pid) - settled
        assert grown < 4 * 2**20, f"the agent grew by {grown / 2**20:.1f} MiB in 4 evaluations"
        # A large reference crosses back from the worker and is stored by the agent: what
        # that leaves in its heap is given back (11 MiB stayed after a 50,000-row one).
        rng = random.Random(5)
        wide = {f"x{i}": [rng.random() for _ in range(50_000)] for i in range(20)}
        before = _vm_rss(pid)
        for _ in range(2):
            put = {"columns": wide}
            assert _post(f"{agent.url}/api/v1/models/m/reference", put, "PUT") in (200, 201)
        grown = _vm_rss(pid) - before
        assert grown < 4 * 2**20, f"the agent grew by {grown / 2**20:.1f} MiB in 2 references"
        with open(f"/proc/{pid}/maps", encoding="ascii") as f:
            mapped = f.read()
        for lib in ("numpy", "scipy", "pandas", "pyarrow"):
            assert f"/{lib}/" not in mapped, f"{lib} is loaded in the agent's process"
        # The worker's memory reaches /metrics with the next snapshot: wait for that tick.
        deadline = time.monotonic() + 15
        while True:
            text = agent.metrics()
            name = "nodeml_drift_worker_resident_memory_bytes "
            memory = next(line for line in text.splitlines() if line.startswith(name))
            if float(memory.split()[1]) > 10 * 2**20 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert 'nodeml_drift_worker_restarts_total{reason="crashed"} 0.0' in text
        assert float(memory.split()[1]) > 10 * 2**20
    finally:
        agent.stop()


async def test_a_model_deleted_and_created_again_is_not_served_from_the_worker_cache(
    aiohttp_client, service
):
    client = await aiohttp_client(app_for(service))
    for n in (300, 200):  # both times version 1: only the worker's cache could mix them up
        resp = await client.put("/api/v1/models/m/reference", json={"rows": make_rows(n)})
        assert (await resp.json())["version"] == 1
        await client.post("/api/v1/models/m/observations", json={"rows": make_rows(50, seed=3)})
        report = await (await client.get("/api/v1/models/m/drift")).json()
        assert report["reference"]["rows"] == n
        assert report["dataset"]["number_of_columns"] == 3
        assert (await client.delete("/api/v1/models/m")).status == 200


def test_a_sent_task_holds_no_body(pool):
    import sys
    import threading
    from multiprocessing import Pipe

    from node_exporter_ml.drift.engine.columnar import Blob
    from node_exporter_ml.drift.worker import BLOB_BYTES, Task

    sent = b"x" * (4 * BLOB_BYTES)
    body = bytearray(sent)
    alone = sys.getrefcount(body)
    task = Task.of(len, (Blob(body),))
    assert sys.getrefcount(body) > alone  # held by the task until it is written
    ours, theirs = Pipe()
    got: list[tuple[object, tuple[object, ...]]] = []
    reader = threading.Thread(target=lambda: got.append(Task.receive(theirs)))
    reader.start()
    task.send(ours)
    reader.join(timeout=30)
    assert sys.getrefcount(body) == alone  # released once sent: only this test holds it
    assert len(body) == 0  # and the body it read for the task is freed, not kept in the agent
    fn, args = got[0]
    assert fn is len
    assert isinstance(args[0], Blob)
    assert args[0].take() == sent
    # A bytearray argument arrives as bytes, large (out of band) or small (in the pickle).
    assert pool.call(type, bytearray(b"ab")) is bytes
    assert pool.call(bytes.count, bytearray(b"a" * BLOB_BYTES), b"a") == BLOB_BYTES
    upload = Upload(bytearray(sent), CSV)
    assert pool.call(_length_of, upload) == len(sent)
    assert len(upload.data) == 0  # an upload's body is consumed the same way


def _length_of(upload: Upload) -> int:
    return len(upload.data)


def test_a_worker_gives_back_what_its_task_freed(pool):
    pool.call(os.getpid)
    idle = pool.resident_memory_bytes()
    assert pool.call(churn, 200) > 0  # some 200 MiB of small objects, freed when it returns
    grown = pool.resident_memory_bytes() - idle
    assert grown < 40 * 2**20, f"the worker kept {grown / 2**20:.0f} MiB after its task"
