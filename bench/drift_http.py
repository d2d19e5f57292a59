"""HTTP-path timing of the drift API, for bench/drift.py (or alone: python bench/drift_http.py).

Starts the drift routes on a real aiohttp server in a child process (as the agent serves them),
then times, over loopback:

- ``evaluate_json``: POST /api/v1/drift/evaluate with both tables as column-oriented JSON;
- ``evaluate_csv``: the same with two CSV files in a multipart form;
- ``put_reference_csv``: PUT a model's reference as CSV (parsed and validated, then committed);
- ``post_observations``: POST the current rows as observations, in batches of 10,000 rows
  (each batch one committed transaction);
- ``window_report``: GET the model's drift report, a fresh evaluation of its window (the default
  window is the newest 10,000 observations) against the reference, as every --drift.interval.

Each figure is wall time seen by the client, body encoding excluded. The server's peak RSS
(VmHWM) is reported too. The body limit is raised for the run: the default 64 MiB holds about
70,000 + 70,000 rows of 25 columns as CSV.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

BATCH_ROWS = 10_000
BODY_LIMIT = 2 * 1024 * 1024 * 1024


# --- the server (child process) ------------------------------------------------------------


async def _serve(state_dir: str, window_rows: int) -> None:
    from aiohttp import web

    from node_exporter_ml.drift.api import routes
    from node_exporter_ml.drift.service import DriftService, Limits
    from node_exporter_ml.drift.store import Window

    service = DriftService(
        state_dir,
        interval=3600.0,
        window=Window(rows=window_rows),
        limits=Limits(max_body_bytes=BODY_LIMIT, max_rows=10_000_000, max_columns=10_000),
    )
    await service.start(run_loop=False)
    app = web.Application()
    app.add_routes(routes(service))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    print(f"LISTENING {site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def _peak_rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# --- the client ----------------------------------------------------------------------------


def to_csv(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """CSV text of column-oriented data (floats in repr form, so nothing is rounded)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(columns)
    writer.writerow(names)
    writer.writerows(zip(*(columns[n] for n in names), strict=True))
    return out.getvalue().encode()


def _rows(columns: Mapping[str, Sequence[Any]], start: int, stop: int) -> list[dict[str, Any]]:
    names = list(columns)
    return [{n: columns[n][i] for n in names} for i in range(start, stop)]


async def _timed(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[float, Any]:
    started = time.perf_counter()
    async with http.request(method, url, **kw) as resp:
        body = await resp.read()
        took = time.perf_counter() - started
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status} {body[:300]!r}")
    return took, json.loads(body)


async def _client(
    base: str,
    reference: Mapping[str, Sequence[Any]],
    current: Mapping[str, Sequence[Any]],
) -> dict[str, float]:
    ref_csv, cur_csv = to_csv(reference), to_csv(current)
    both_json = json.dumps(
        {"reference": {"columns": reference}, "current": {"columns": current}}
    ).encode()
    n_cur = len(next(iter(current.values())))
    batches = [
        json.dumps({"rows": _rows(current, i, min(i + BATCH_ROWS, n_cur))}).encode()
        for i in range(0, n_cur, BATCH_ROWS)
    ]
    out: dict[str, float] = {
        "json_body_bytes": float(len(both_json)),
        "csv_body_bytes": float(len(ref_csv) + len(cur_csv)),
    }
    timeout = aiohttp.ClientTimeout(total=3600)
    json_headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=timeout) as http:
        out["evaluate_json"], _ = await _timed(
            http, "POST", f"{base}/api/v1/drift/evaluate", data=both_json, headers=json_headers
        )
        form = aiohttp.FormData()
        form.add_field("reference", io.BytesIO(ref_csv), filename="reference.csv")
        form.add_field("current", io.BytesIO(cur_csv), filename="current.csv")
        out["evaluate_csv"], _ = await _timed(
            http, "POST", f"{base}/api/v1/drift/evaluate", data=form
        )
        out["put_reference_csv"], _ = await _timed(
            http,
            "PUT",
            f"{base}/api/v1/models/bench/reference",
            data=io.BytesIO(ref_csv),
            headers={"Content-Type": "text/csv"},
        )
        total = 0.0
        for body in batches:
            took, _ = await _timed(
                http,
                "POST",
                f"{base}/api/v1/models/bench/observations",
                data=io.BytesIO(body),
                headers=json_headers,
            )
            total += took
        out["post_observations"] = total
        out["window_report"], report = await _timed(
            http, "GET", f"{base}/api/v1/models/bench/drift"
        )
        out["window_rows"] = float(report["window"]["rows"])
    return out


def run_http_benchmark(
    reference: Mapping[str, Sequence[Any]],
    current: Mapping[str, Sequence[Any]],
    *,
    window_rows: int = 10_000,
) -> dict[str, float]:
    """Time the drift API's HTTP paths on column-oriented data; seconds, bytes and row counts.

    `reference` and `current` map column names to lists or numpy arrays.

    Keys: ``evaluate_json``, ``evaluate_csv``, ``put_reference_csv``, ``post_observations``,
    ``window_report`` (seconds); ``json_body_bytes``, ``csv_body_bytes``, ``window_rows``,
    ``server_peak_rss_bytes``.
    """
    # numpy arrays (bench/drift.py's build_side) become lists: JSON and csv need Python values.
    reference = {k: v.tolist() if hasattr(v, "tolist") else list(v) for k, v in reference.items()}
    current = {k: v.tolist() if hasattr(v, "tolist") else list(v) for k, v in current.items()}
    with tempfile.TemporaryDirectory(prefix="nodeml-drift-bench-") as state:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--state-dir", state,
             "--window-rows", str(window_rows)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith(b"LISTENING "):
                raise RuntimeError(f"drift server did not start: {line!r}")
            base = f"http://127.0.0.1:{int(line.split()[1])}"
            result = asyncio.run(_client(base, reference, current))
            peak = _peak_rss_bytes(proc.pid)
            if peak is not None:
                result["server_peak_rss_bytes"] = float(peak)
        finally:
            proc.kill()
            proc.wait()
    return result


def make_data(rows: int, seed: int, shifted: bool) -> dict[str, list[Any]]:
    """20 numerical and 5 categorical columns (3, 5, 10, 20, 50 levels); some shifted."""
    rng = random.Random(seed)
    data: dict[str, list[Any]] = {}
    for j in range(20):
        shift = 0.3 if shifted and j % 4 == 0 else 0.0
        data[f"num_{j}"] = [rng.gauss(shift, 1.0) for _ in range(rows)]
    for levels in (3, 5, 10, 20, 50):
        names = [f"l{k}" for k in range(levels)]
        weights = [1.0 + (k == 0 and shifted and levels in (5, 20)) for k in range(levels)]
        data[f"cat_{levels}"] = rng.choices(names, weights, k=rows)
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--window-rows", type=int, default=10_000)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args.state_dir, args.window_rows))
        return 0
    reference = make_data(args.rows, 1, shifted=False)
    current = make_data(args.rows, 2, shifted=True)
    result = run_http_benchmark(reference, current, window_rows=args.window_rows)
    print(
        f"drift HTTP path, {args.rows:,} + {args.rows:,} rows x 25 columns, {os.cpu_count()} CPUs"
    )
    for key, value in result.items():
        if key.endswith("bytes"):
            print(f"  {key:24s} {value / 2**20:10.1f} MiB")
        elif key.endswith("rows"):
            print(f"  {key:24s} {value:10.0f}")
        else:
            print(f"  {key:24s} {value:10.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
