"""kill -9 of the real agent after a 2xx loses nothing: acknowledged rows survive a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from node_exporter_ml.drift.store import Store, Window
from tests.drift_helpers import make_rows
from tools.ports import free_port

BATCHES = 24
BATCH_ROWS = 40


async def start_runner(state_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    """The real agent, drift collector only, on a free port; returns once it is ready."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node_exporter_ml", f"--web.listen-address=127.0.0.1:{port}",
        f"--state.dir={state_dir}", "--collector.disable-defaults", "--collector.drift",
        "--sampler.interval=1s", "--drift.interval=1h",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if proc.returncode is not None:
                _, err = await proc.communicate()
                raise AssertionError(f"agent exited: {err.decode()[-2000:]}")
            try:
                async with http.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return proc, base
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise AssertionError("agent not ready after 20 s")


def kill9(proc: asyncio.subprocess.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)


@pytest.mark.timeout(60)
async def test_kill_9_loses_nothing_acknowledged(tmp_path):
    state = tmp_path / "state"
    proc, base = await start_runner(state)
    acked: set[int] = set()
    try:
        async with aiohttp.ClientSession() as http:
            ref = make_rows(200, seed=1)
            async with http.put(f"{base}/api/v1/models/m/reference", json={"rows": ref}) as r:
                assert r.status == 201

            async def post(batch: int) -> int:
                rows = make_rows(BATCH_ROWS, seed=batch, ids=True, start=batch * 1000)
                async with http.post(
                    f"{base}/api/v1/models/m/observations", json={"rows": rows}
                ) as r:
                    assert r.status == 200
                    return batch

            # Some batches in flight at once; kill -9 the moment the 12th 2xx arrives.
            tasks = [asyncio.create_task(post(b)) for b in range(BATCHES)]
            for done in asyncio.as_completed(tasks):
                try:
                    acked.add(await done)
                except (aiohttp.ClientError, AssertionError):
                    continue
                if len(acked) == BATCHES // 2:
                    kill9(proc)
                    break
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if proc.returncode is None:
            kill9(proc)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) == BATCHES // 2

    # Restart on the same state directory: every acknowledged batch is there, whole.
    proc, base = await start_runner(state)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/v1/models/m/drift") as r:
                assert r.status == 200
                report = await r.json()
            ids = {f"r{b * 1000 + i}" for b in acked for i in range(BATCH_ROWS)}
            labels = [{"id": i, "label": "ok"} for i in sorted(ids)]
            async with http.post(f"{base}/api/v1/models/m/labels", json={"labels": labels}) as r:
                assert r.status == 200
                assert (await r.json())["matched"] == len(ids)
    finally:
        kill9(proc)
        await proc.wait()
    assert report["window"]["rows"] >= len(acked) * BATCH_ROWS
    assert report["window"]["rows"] % BATCH_ROWS == 0  # no batch is half there

    def stored_ids() -> tuple[set[str], int]:
        store = Store(str(state))
        store.open()
        try:
            rows = store.window("m", Window(rows=100_000))
            return {o.obs_id for o in rows if o.obs_id}, store.counts("m")[1]
        finally:
            store.close()

    present, n_labels = await asyncio.to_thread(stored_ids)
    assert ids <= present
    assert n_labels == len(ids)  # the labels acknowledged before the second kill -9
    for batch in range(BATCHES):
        batch_ids = {f"r{batch * 1000 + i}" for i in range(BATCH_ROWS)}
        assert batch_ids <= present or not (batch_ids & present), f"batch {batch} is partial"
