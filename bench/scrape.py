"""Scrape cost: node-exporter-ml vs node_exporter, side by side on loopback, same client.

Starts the agent (every default collector on; NVML from the H100 replay in
tests/fixtures/nvml-recordings) and Debian's prometheus-node-exporter, waits until both are warm,
then scrapes each the same number of times over one keep-alive connection, as Prometheus
does, asking for gzip as Prometheus does. Prints p50/p99 latency, bytes per scrape, CPU
seconds per scrape (from /proc/<pid>/stat), peak RSS and the ratios agent/node_exporter.

    python bench/scrape.py [--scrapes 2000] [--warmup 5]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPLAY = ROOT / "tests" / "fixtures" / "nvml-recordings" / "h100-neighbour.nvml.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ACCEPT = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_http(port: int, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"port {port}{path} never became ready")


def scrape(port: int, n: int) -> tuple[list[float], int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, size = [], 0
    headers = {"Accept": ACCEPT, "Accept-Encoding": "gzip"}
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", "/metrics", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        latencies.append(time.perf_counter() - t0)
        size = len(body)
        if resp.status != 200:
            raise SystemExit(f"scrape of :{port} answered {resp.status}")
    conn.close()
    return latencies, size


def measure(name: str, pid: int, port: int, n: int) -> dict[str, float]:
    scrape(port, 20)  # warm the connection path
    cpu0 = cpu_seconds(pid)
    lat, size = scrape(port, n)
    cpu = cpu_seconds(pid) - cpu0
    q = statistics.quantiles(lat, n=100)
    return {
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "bytes": float(size),
        "cpu_ms_per_scrape": cpu / n * 1e3,
        "peak_rss_mib": peak_rss_bytes(pid) / 2**20,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=2000)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of sampling before")
    args = ap.parse_args()
    ne_bin = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if ne_bin is None:
        raise SystemExit("node_exporter missing: apt-get install prometheus-node-exporter")
    tmp = Path(tempfile.mkdtemp(prefix="nodeml-bench-"))
    agent_port, ne_port = free_port(), free_port()
    agent_args = [
        sys.executable,
        "-m",
        "node_exporter_ml",
        f"--web.listen-address=127.0.0.1:{agent_port}",
        f"--state.dir={tmp}/state",
        "--sampler.interval=1s",
    ]
    agent_args.append(f"--nvml.replay={REPLAY}")
    procs = [
        subprocess.Popen(agent_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(
            [ne_bin, f"--web.listen-address=127.0.0.1:{ne_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        wait_http(agent_port, "/readyz")
        wait_http(ne_port, "/metrics")
        time.sleep(args.warmup)
        cpu0 = cpu_seconds(procs[0].pid)
        time.sleep(5.0)
        idle_cpu = (cpu_seconds(procs[0].pid) - cpu0) / 5.0
        agent = measure("node-exporter-ml", procs[0].pid, agent_port, args.scrapes)
        ne = measure("node_exporter", procs[1].pid, ne_port, args.scrapes)
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
    print(f"machine: {os.cpu_count()} CPUs, {os.uname().machine}, Python {sys.version.split()[0]}")
    print(f"scrapes per exporter: {args.scrapes} (gzip, keep-alive, loopback)")
    print(f"{'':22}{'node-exporter-ml':>18}{'node_exporter':>16}{'ratio':>10}")
    for key, label in [
        ("p50_ms", "p50 latency (ms)"),
        ("p99_ms", "p99 latency (ms)"),
        ("bytes", "bytes per scrape"),
        ("cpu_ms_per_scrape", "CPU ms per scrape"),
        ("peak_rss_mib", "peak RSS (MiB)"),
    ]:
        ratio = agent[key] / ne[key] if ne[key] else float("nan")
        print(f"{label:22}{agent[key]:>18.3f}{ne[key]:>16.3f}{ratio:>10.3f}")
    goal_ok = agent["p50_ms"] <= ne["p50_ms"] / 5 and agent["cpu_ms_per_scrape"] <= (
        ne["cpu_ms_per_scrape"] / 5
    )
    verdict = "met" if goal_ok else "NOT met"
    print(f"goal (p50 and CPU per scrape <= 1/5 of node_exporter's): {verdict}")
    print(f"agent sampling in the background, not per scrape: {idle_cpu * 100:.2f}% of one core")
    print(f"goal (agent peak RSS < 80 MiB): {'met' if agent['peak_rss_mib'] < 80 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
