"""Peak memory of the agent and its drift workers per upload size and format, for the body cap.

Starts the drift routes on a real server in a child process (bench/drift_http.py --serve, as
the agent serves them), then sends one stateless evaluation at a time (two tables of 25
columns, as bench/drift_http.py makes them) as JSON, CSV and Parquet, and samples every 20 ms
the proportional set size (PSS, from /proc/<pid>/smaps_rollup) of the server, its forkserver
and its workers together: what a container's memory cgroup is charged, shared library pages
counted once. The peer is the body itself: each peak is printed next to the body size.

    python bench/drift_memory.py --rows 25000 50000 100000 --limit-mib 512

The last lines give the largest body of each format whose peak stayed under 80% of the
memory limit: the ``drift.max_body_bytes`` that fits it (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drift_http import make_data, to_csv, to_parquet


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def tree_pss(pid: int) -> int:
    """PSS of the process and all its descendants."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return 0
    return sum(_pss(p.pid) for p in procs)


class PeakSampler:
    """Samples tree_pss(pid) every 20 ms in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_pss(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _post(url: str, fmt: str, ref: dict, cur: dict) -> tuple[int, float]:
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        if fmt == "json":
            body = json.dumps({"reference": {"columns": ref}, "current": {"columns": cur}})
            data: object = body.encode()
            size = len(body)
            headers = {"Content-Type": "application/json"}
        else:
            encode = to_csv if fmt == "csv" else to_parquet
            files = encode(ref), encode(cur)
            size = sum(map(len, files))
            form = aiohttp.FormData()
            form.add_field("reference", io.BytesIO(files[0]), filename="reference")
            form.add_field("current", io.BytesIO(files[1]), filename="current")
            data, headers = form, {}
        started = time.perf_counter()
        async with http.post(url, data=data, headers=headers) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{fmt}: {resp.status}")
        return size, time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    p.add_argument("--formats", nargs="+", default=["parquet", "csv", "json"])
    p.add_argument("--limit-mib", type=float, default=512)
    args = p.parse_args()
    server = Path(__file__).with_name("drift_http.py")
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="nodeml-drift-mem-") as state:
        proc = subprocess.Popen(
            [sys.executable, str(server), "--serve", "--state-dir", state], stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            url = f"http://127.0.0.1:{int(line.split()[1])}/api/v1/drift/evaluate"
            tiny = make_data(50, 9, shifted=False)
            asyncio.run(_post(url, "csv", tiny, tiny))  # the forkserver and a worker start
            idle = tree_pss(proc.pid)
            print(f"agent + forkserver + worker after a first tiny request: {idle / 2**20:.0f} MiB")
            print(f"{'format':8s} {'rows':>8s} {'body MiB':>9s} {'peak MiB':>9s} {'x body':>7s}")
            for rows in args.rows:
                ref, cur = make_data(rows, 1, shifted=False), make_data(rows, 2, shifted=True)
                for fmt in args.formats:
                    with PeakSampler(proc.pid) as sampler:
                        size, _ = asyncio.run(_post(url, fmt, ref, cur))
                    peak = sampler.peak
                    print(f"{fmt:8s} {rows:8d} {size / 2**20:9.1f} {peak / 2**20:9.0f} "
                          f"{peak / size:7.1f}")  # fmt: skip
                    if peak <= 0.8 * args.limit_mib * 2**20:
                        best[fmt] = max(best.get(fmt, 0.0), size)
        finally:
            proc.kill()
            proc.wait()
    for fmt, size in best.items():
        print(f"largest {fmt} body under 80% of {args.limit_mib:g} MiB: {size / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
