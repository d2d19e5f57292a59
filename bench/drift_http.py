"""HTTP-path timing of the drift API against Evidently on the same files, in the same run.

Starts the drift routes on a real aiohttp server in a child process (as the agent serves them:
parsing and evaluation in its worker processes), then times, over loopback:

- ``evaluate_json``: POST /api/v1/drift/evaluate with both tables as column-oriented JSON;
- ``evaluate_csv`` / ``evaluate_parquet``: the same with two CSV / Parquet files, multipart;
- ``put_reference_csv`` / ``put_reference_parquet``: PUT a model's reference;
- ``observations_{json,csv,parquet}``: POST the current rows as observations, in batches of
  10,000 rows (each batch one committed transaction), as rows per second;
- ``window_report``: GET the model's drift report, a fresh evaluation of its window (the newest
  10,000 observations) against the reference, as every --drift.interval.

Each figure is wall time seen by the client, body encoding excluded. Memory: the agent's
resident set after the workload and its peak (VmHWM), the worker processes' peak, and the peak
of agent plus worker during the JSON evaluation (the first request, so the peaks are its own).

The peers, measured in the same run on the same CSV bytes: ``pandas.read_csv`` (what CSV uploads
use) against ``pyarrow.csv.read_csv`` (the alternative it was chosen over), and, with
``--evidently-python``, Evidently end to end (``pandas.read_csv`` of both files +
``Report([DataDriftPreset()]).run``) in a Python that has evidently 0.7.23.
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

    from node_exporter_ml.drift.bodies import Limits
    from node_exporter_ml.drift.service import DriftService
    from node_exporter_ml.drift.store import Window
    from node_exporter_ml.drift.web import routes

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


def _status_bytes(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) in bytes; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _workers(pid: int) -> list[int]:
    """The server's drift worker processes: the children of its forkserver."""
    import psutil

    return [w.pid for child in psutil.Process(pid).children() for w in child.children()]


# --- the client ----------------------------------------------------------------------------


def to_csv(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """CSV text of column-oriented data (floats in repr form, so nothing is rounded)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(columns)
    writer.writerow(names)
    writer.writerows(zip(*(columns[n] for n in names), strict=True))
    return out.getvalue().encode()


def to_parquet(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """Parquet bytes of column-oriented data, as ``pd.DataFrame(columns).to_parquet()``."""
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(dict(columns)).to_parquet(buf, index=False)
    return buf.getvalue()


def _slice(columns: Mapping[str, Sequence[Any]], start: int, stop: int) -> dict[str, Any]:
    return {n: list(v[start:stop]) for n, v in columns.items()}


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


def _form(reference: bytes, current: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("reference", io.BytesIO(reference), filename="reference")
    form.add_field("current", io.BytesIO(current), filename="current")
    return form


async def _client(
    base: str,
    server_pid: int,
    reference: Mapping[str, Sequence[Any]],
    current: Mapping[str, Sequence[Any]],
    files: Mapping[str, bytes],
) -> dict[str, float]:
    both_json = json.dumps(
        {"reference": {"columns": reference}, "current": {"columns": current}}
    ).encode()
    n_cur = len(next(iter(current.values())))
    spans = [(i, min(i + BATCH_ROWS, n_cur)) for i in range(0, n_cur, BATCH_ROWS)]
    batches = {
        "json": [json.dumps({"rows": _rows(current, a, b)}).encode() for a, b in spans],
        "csv": [to_csv(_slice(current, a, b)) for a, b in spans],
        "parquet": [to_parquet(_slice(current, a, b)) for a, b in spans],
    }
    media = {"json": "application/json", "csv": "text/csv",
             "parquet": "application/vnd.apache.parquet"}  # fmt: skip
    out: dict[str, float] = {
        "json_body_bytes": float(len(both_json)),
        "csv_body_bytes": float(len(files["ref_csv"]) + len(files["cur_csv"])),
        "parquet_body_bytes": float(len(files["ref_parquet"]) + len(files["cur_parquet"])),
    }
    timeout = aiohttp.ClientTimeout(total=3600)
    url = f"{base}/api/v1/drift/evaluate"
    async with aiohttp.ClientSession(timeout=timeout) as http:
        out["evaluate_json"], _ = await _timed(
            http, "POST", url, data=both_json, headers={"Content-Type": media["json"]}
        )
        # Peaks so far belong to the JSON evaluation alone (the first request).
        workers = _workers(server_pid)
        out["json_peak_agent_plus_worker_bytes"] = float(
            _status_bytes(server_pid, "VmHWM") + max(_status_bytes(w, "VmHWM") for w in workers)
        )
        del both_json
        out["evaluate_csv"], _ = await _timed(
            http, "POST", url, data=_form(files["ref_csv"], files["cur_csv"])
        )
        out["evaluate_parquet"], _ = await _timed(
            http, "POST", url, data=_form(files["ref_parquet"], files["cur_parquet"])
        )
        model = f"{base}/api/v1/models/bench"
        for fmt in ("csv", "parquet"):
            out[f"put_reference_{fmt}"], _ = await _timed(
                http, "PUT", f"{model}/reference", data=io.BytesIO(files[f"ref_{fmt}"]),
                headers={"Content-Type": media[fmt]},
            )  # fmt: skip
        for fmt, bodies in batches.items():
            total = 0.0
            for body in bodies:
                took, _ = await _timed(http, "POST", f"{model}/observations",
                                       data=io.BytesIO(body),
                                       headers={"Content-Type": media[fmt]})  # fmt: skip
                total += took
            out[f"observations_{fmt}_rows_per_second"] = n_cur / total
        out["window_report"], report = await _timed(http, "GET", f"{model}/drift")
        out["window_rows"] = float(report["window"]["rows"])
        out["workers_peak_rss_bytes"] = float(
            max(_status_bytes(w, "VmHWM") for w in _workers(server_pid))
        )
    return out


def run_http_benchmark(
    reference: Mapping[str, Sequence[Any]],
    current: Mapping[str, Sequence[Any]],
    *,
    window_rows: int = 10_000,
) -> dict[str, float]:
    """Time the drift API's HTTP paths on column-oriented data; seconds, bytes and row counts.

    `reference` and `current` map column names to lists or numpy arrays.
    """
    # numpy arrays (bench/drift.py's build_side) become lists: JSON and csv need Python values.
    reference = {k: v.tolist() if hasattr(v, "tolist") else list(v) for k, v in reference.items()}
    current = {k: v.tolist() if hasattr(v, "tolist") else list(v) for k, v in current.items()}
    files = {
        "ref_csv": to_csv(reference),
        "cur_csv": to_csv(current),
        "ref_parquet": to_parquet(reference),
        "cur_parquet": to_parquet(current),
    }
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
            agent_idle = _status_bytes(proc.pid, "VmRSS")
            result = asyncio.run(_client(base, proc.pid, reference, current, files))
            result["agent_rss_idle_bytes"] = float(agent_idle)
            result["agent_rss_after_bytes"] = float(_status_bytes(proc.pid, "VmRSS"))
            result["agent_peak_rss_bytes"] = float(_status_bytes(proc.pid, "VmHWM"))
        finally:
            proc.kill()
            proc.wait()
        result.update(parser_peers(files["ref_csv"]))
    return result


def parser_peers(data: bytes) -> dict[str, float]:
    """One CSV file typed by pandas.read_csv (what uploads use) and by pyarrow.csv (the peer)."""
    import pandas as pd
    import pyarrow.csv as pacsv

    started = time.perf_counter()
    pd.read_csv(io.BytesIO(data))
    mid = time.perf_counter()
    pacsv.read_csv(io.BytesIO(data))
    return {"parse_pandas_read_csv": mid - started,
            "parse_pyarrow_csv": time.perf_counter() - mid}  # fmt: skip


EVIDENTLY = """
import sys, time, warnings
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
started = time.perf_counter()
reference, current = pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    Report([DataDriftPreset()], include_tests=True).run(current, reference)
print(time.perf_counter() - started)
"""


def evidently_seconds(python: str, ref_csv: bytes, cur_csv: bytes) -> float:
    """Evidently end to end on the two CSV files: read_csv of both + Report.run (imports apart)."""
    with tempfile.TemporaryDirectory(prefix="nodeml-evidently-") as tmp:
        paths = []
        for name, data in (("reference.csv", ref_csv), ("current.csv", cur_csv)):
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            paths.append(path)
        done = subprocess.run([python, "-c", EVIDENTLY, *paths], capture_output=True,
                              text=True, check=True)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


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
    p.add_argument("--evidently-python", help="a Python with evidently 0.7.23 (the peer)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args.state_dir, args.window_rows))
        return 0
    reference = make_data(args.rows, 1, shifted=False)
    current = make_data(args.rows, 2, shifted=True)
    result = run_http_benchmark(reference, current, window_rows=args.window_rows)
    if args.evidently_python:
        result["evidently_read_csv_and_report_run"] = evidently_seconds(
            args.evidently_python, to_csv(reference), to_csv(current)
        )
    print(
        f"drift HTTP path, {args.rows:,} + {args.rows:,} rows x 25 columns, {os.cpu_count()} CPUs"
    )
    for key, value in result.items():
        if key.endswith("bytes"):
            print(f"  {key:36s} {value / 2**20:10.1f} MiB")
        elif key.endswith(("rows", "per_second")):
            print(f"  {key:36s} {value:10.0f}")
        else:
            print(f"  {key:36s} {value:10.2f} s")
    if "evidently_read_csv_and_report_run" in result:
        ratio = result["evidently_read_csv_and_report_run"] / result["evaluate_csv"]
        print(f"  evaluate_csv is {ratio:.1f}x faster than read_csv + Report.run")
    body = result["json_body_bytes"]
    print(f"  JSON peak / body: {result['json_peak_agent_plus_worker_bytes'] / body:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
