"""Check the nvml collector against nvidia-smi on a real NVIDIA GPU, and measure its overhead.

    python scripts/gpu_check.py [--seconds 20] [--json report.json]

Needs an NVIDIA GPU with about 10 GiB free, PyTorch with CUDA, and nvidia-smi. It:

1. starts two PyTorch processes on GPU 0, a heavy one (bf16 matmuls back to back) and a
   light one (small matmuls with sleeps), each holding a known amount of memory;
2. runs this package's nvml collector against real NVML every second for --seconds, and
   nvidia-smi --query-gpu / --query-compute-apps alongside it;
3. compares: per-process memory equal (to the MiB nvidia-smi prints), GPU utilisation and
   power within stated tolerances, the heavy process with the higher SM share; prints a
   table and the collector's CPU seconds per tick;
4. serves a small PyTorch model in a loop on the same GPU and compares its p50/p99 latency
   in alternating windows with the collector sampling every second and without it
   (goal: under 1 % difference).

Exits 0 when every check passes, 1 on a mismatch, 2 when a prerequisite is missing.
It finishes in about two minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
UTIL_TOLERANCE_POINTS = 15.0  # GPU utilisation: mean difference, percentage points
POWER_TOLERANCE = 0.10  # mean power: relative (or 30 W, whichever is larger)
POWER_TOLERANCE_W = 30.0
DEVICE_MEMORY_TOLERANCE_MIB = 256.0  # nvidia-smi and NVML v2 may differ by the reserved part
LATENCY_GOAL = 0.01  # 1 % difference in p50/p99 with and without the agent

WORKER = r"""
import json, sys, time, torch
mode, seconds, pad_gib = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
dev = torch.device("cuda")
pad = torch.empty(int(pad_gib * 1024**3), dtype=torch.uint8, device=dev)
if mode == "heavy":
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
else:
    x = torch.randn(1024, 1024, device=dev)
torch.cuda.synchronize()
print("ready", flush=True)
end = time.time() + seconds
while time.time() < end:
    if mode == "heavy":
        for _ in range(20):
            c = a @ b
        torch.cuda.synchronize()
    else:
        y = x @ x
        torch.cuda.synchronize()
        time.sleep(0.05)
"""

SERVER = r"""
import json, sys, time, torch
seconds, out = float(sys.argv[1]), sys.argv[2]
dev = torch.device("cuda")
model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(4)]).to(dev).eval()
x = torch.randn(8, 1024, device=dev)
with torch.inference_mode():
    for _ in range(200):
        model(x)
    torch.cuda.synchronize()
    print("ready", flush=True)
    samples = []
    end = time.time() + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        model(x)
        torch.cuda.synchronize()
        samples.append((time.time(), time.perf_counter() - t0))
with open(out, "w") as f:
    json.dump(samples, f)
"""


@dataclass(frozen=True)
class Row:
    """One comparison: what the agent saw, what nvidia-smi saw, the tolerance, the verdict."""

    check: str
    agent: str
    smi: str
    tolerance: str
    ok: bool


# --- pure helpers (tested without a GPU) -----------------------------------------------------


def parse_smi_gpus(text: str) -> dict[str, dict[str, float]]:
    """`nvidia-smi --query-gpu=uuid,utilization.gpu,power.draw,memory.used` CSV by uuid."""
    out = {}
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        uuid, util, power, used = parts

        def num(s: str) -> float:
            try:
                return float(s)
            except ValueError:
                return float("nan")  # "[N/A]", "[Not Supported]"

        out[uuid] = {"util": num(util), "power": num(power), "memory_mib": num(used)}
    return out


def parse_smi_apps(text: str) -> dict[int, float]:
    """`nvidia-smi --query-compute-apps=pid,used_memory` CSV: pid -> MiB."""
    out = {}
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            try:
                out[int(parts[0])] = float(parts[1])
            except ValueError:
                continue
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def mean(values: Sequence[float]) -> float:
    """Mean of the finite values (nan when none)."""
    finite = [v for v in values if v == v]
    return statistics.fmean(finite) if finite else float("nan")


def compare(
    agent_util: Sequence[float],
    smi_util: Sequence[float],
    agent_power: Sequence[float],
    smi_power: Sequence[float],
    agent_memory: Sequence[float],
    smi_memory: Sequence[float],
    agent_procs: dict[int, float],
    smi_procs: dict[int, float],
    sm_share: dict[int, float],
    heavy: int,
    light: int,
) -> list[Row]:
    """The checks, from per-second samples of both sides (ratios x100, watts, MiB)."""
    rows = []
    a, s = mean(agent_util), mean(smi_util)
    rows.append(
        Row("GPU utilisation, mean %", f"{a:.1f}", f"{s:.1f}",
            f"+-{UTIL_TOLERANCE_POINTS:g} points", abs(a - s) <= UTIL_TOLERANCE_POINTS)
    )  # fmt: skip
    a, s = mean(agent_power), mean(smi_power)
    tol = max(POWER_TOLERANCE * s, POWER_TOLERANCE_W)
    rows.append(Row("power, mean W", f"{a:.1f}", f"{s:.1f}", f"+-{tol:.0f} W", abs(a - s) <= tol))
    a, s = mean(agent_memory), mean(smi_memory)
    rows.append(
        Row("device memory used, MiB", f"{a:.0f}", f"{s:.0f}",
            f"+-{DEVICE_MEMORY_TOLERANCE_MIB:g} MiB", abs(a - s) <= DEVICE_MEMORY_TOLERANCE_MIB)
    )  # fmt: skip
    for name, pid in (("heavy", heavy), ("light", light)):
        am, sm = agent_procs.get(pid), smi_procs.get(pid)
        ok = am is not None and sm is not None and abs(am - sm) <= 1.0
        rows.append(
            Row(f"{name} process {pid} memory, MiB", "absent" if am is None else f"{am:.0f}",
                "absent" if sm is None else f"{sm:.0f}", "equal (1 MiB rounding)", ok)
        )  # fmt: skip
    h, lt = sm_share.get(heavy, 0.0), sm_share.get(light, 0.0)
    rows.append(
        Row("SM share heavy > light, mean %", f"{h * 100:.1f} > {lt * 100:.1f}", "-",
            "strictly higher", h > lt)
    )  # fmt: skip
    return rows


def latency_rows(with_agent: Sequence[float], without: Sequence[float]) -> list[Row]:
    """p50/p99 latency with and without the agent sampling, against the 1 % goal."""
    rows = []
    for q in (50, 99):
        on, off = percentile(with_agent, q), percentile(without, q)
        diff = (on - off) / off if off > 0 else float("nan")
        rows.append(
            Row(f"model latency p{q}, ms (agent on vs off)", f"{on * 1000:.3f}",
                f"{off * 1000:.3f}", f"< {LATENCY_GOAL:.0%} ({diff:+.2%})", diff < LATENCY_GOAL)
        )  # fmt: skip
    return rows


def print_table(rows: Sequence[Row]) -> None:
    """A fixed-width table of rows."""
    header = ("check", "agent", "nvidia-smi / off", "tolerance", "ok")
    table = [header] + [
        (r.check, r.agent, r.smi, r.tolerance, "yes" if r.ok else "NO") for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


# --- the run ---------------------------------------------------------------------------------


def fail(msg: str, code: int = 2) -> int:
    """Print why the check cannot run and return the exit code."""
    print(f"gpu_check: {msg}", file=sys.stderr)
    return code


def start_worker(code: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a PyTorch child and wait until it says it is ready."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise RuntimeError(f"PyTorch child failed to start: {(line + err).strip()[-800:]}")
    return proc


def smi(args: list[str]) -> str:
    """Run nvidia-smi and return its stdout."""
    return subprocess.run(
        ["nvidia-smi", *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout


class Sampler:
    """Runs the collector (update + render) every `period` seconds in a thread while `on`."""

    def __init__(self, tick: Callable[[], None], period: float = 1.0) -> None:
        self.tick = tick
        self.period = period
        self.on = threading.Event()
        self.stop = threading.Event()
        self.cpu: list[float] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            if self.on.is_set():
                started = time.monotonic()
                cpu = time.thread_time()
                self.tick()
                self.cpu.append(time.thread_time() - cpu)
                self.stop.wait(max(0.0, self.period - (time.monotonic() - started)))
            else:
                self.stop.wait(0.05)


def main() -> int:
    """Run the check; exit codes as the module docstring says."""
    try:
        return run()
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as err:
        return fail(f"{type(err).__name__}: {err}", 1)


def run() -> int:
    """The check itself (main() turns its failures into one line and exit code 1)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="comparison window (20)")
    ap.add_argument("--latency-seconds", type=float, default=40.0, help="overhead run (40)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    if shutil.which("nvidia-smi") is None:
        return fail("nvidia-smi not found on PATH (install the NVIDIA driver utilities)")
    try:
        import torch
    except ImportError:
        return fail("PyTorch is not installed (pip install torch)")
    if not torch.cuda.is_available():
        return fail("PyTorch sees no CUDA device (driver, CUDA build of torch, visible devices?)")

    from prometheus_client import CollectorRegistry, generate_latest

    from node_exporter_ml.collectors.base import CollectContext, NoDataError
    from node_exporter_ml.collectors.nvml import NvmlCollector
    from node_exporter_ml.config import Config
    from node_exporter_ml.snapshot import CollectorResult, NvmlData, Snapshot

    collector = NvmlCollector(CollectContext(Config(interval=1.0)))
    try:
        data = collector.update(None)
    except NoDataError as err:
        return fail(f"the nvml collector cannot use NVML here: {err}")
    if not data.devices:
        return fail("NVML sees no GPU")
    gpu = data.devices[0]
    free = (gpu.memory_free_bytes or 0) / 1024**3
    heavy_gib, light_gib = min(6.0, free * 0.3), min(2.0, free * 0.1)
    if heavy_gib < 0.5:
        return fail(f"GPU 0 has only {free:.1f} GiB free")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu.uuid)
    print(f"GPU 0: {gpu.name} {gpu.uuid}, driver {data.driver_version}; "
          f"children hold {heavy_gib:.1f} and {light_gib:.1f} GiB")  # fmt: skip

    class _Families:
        data: NvmlData | None = None

        def collect(self):  # type: ignore[no-untyped-def]
            snap = Snapshot(time.time(), {"nvml": CollectorResult("nvml", True, 0.0, self.data)})
            return collector.families(self.data, snap)

    source = _Families()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(source)
    latest: list[NvmlData] = []

    def tick() -> None:
        source.data = collector.update(None)
        generate_latest(registry)
        latest.append(source.data)

    run_for = args.seconds + 15
    children: list[subprocess.Popen[str]] = []
    try:
        children.append(start_worker(WORKER, ["heavy", str(run_for), str(heavy_gib)], env))
        children.append(start_worker(WORKER, ["light", str(run_for), str(light_gib)], env))
        heavy, light = children[0].pid, children[1].pid
        time.sleep(2)  # let both settle into their loops
        sampler = Sampler(tick)
        sampler.thread.start()
        sampler.on.set()
        agent_util, agent_power, agent_mem, smi_util, smi_power, smi_mem = ([] for _ in range(6))
        agent_procs: dict[int, float] = {}
        smi_procs: dict[int, float] = {}
        shares: dict[int, list[float]] = {heavy: [], light: []}
        seen = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            gpus = parse_smi_gpus(
                smi(["--query-gpu=uuid,utilization.gpu,power.draw,memory.used",
                     "--format=csv,noheader,nounits"])
            )  # fmt: skip
            apps = parse_smi_apps(
                smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
            )
            row = gpus.get(gpu.uuid)
            if row is not None:
                smi_util.append(row["util"])
                smi_power.append(row["power"])
                smi_mem.append(row["memory_mib"])
            smi_procs.update({p: m for p, m in apps.items() if p in (heavy, light)})
            for d in latest[seen:]:
                g = next((x for x in d.devices if x.uuid == gpu.uuid), None)
                if g is None:
                    continue
                if g.utilization_ratio is not None:
                    agent_util.append(g.utilization_ratio * 100)
                if g.power_watts is not None:
                    agent_power.append(g.power_watts)
                if g.memory_used_bytes is not None:
                    agent_mem.append(g.memory_used_bytes / MIB)
                for p in g.processes:
                    if p.pid in shares:
                        if p.used_memory_bytes is not None:
                            agent_procs[p.pid] = p.used_memory_bytes / MIB
                        if p.sm_ratio is not None:
                            shares[p.pid].append(p.sm_ratio)
            seen = len(latest)
            time.sleep(1.0)
        sampler.on.clear()
        sampler.stop.set()
        sampler.thread.join(5)
    finally:
        for c in children:
            c.kill()
            c.wait(10)

    rows = compare(agent_util, smi_util, agent_power, smi_power, agent_mem, smi_mem,
                   agent_procs, smi_procs, {p: mean(v) for p, v in shares.items()},
                   heavy, light)  # fmt: skip
    cpu_ms = [c * 1000 for c in sampler.cpu]
    print()
    print_table(rows)
    print(f"\nagent CPU per tick (update + text render, 1 GPU): mean {mean(cpu_ms):.2f} ms, "
          f"p99 {percentile(cpu_ms, 99):.2f} ms over {len(cpu_ms)} ticks")  # fmt: skip

    # Overhead: a small model served in a loop; the agent alternates 5 s on / 5 s off.
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "latency.json")
        server = start_worker(SERVER, [str(args.latency_seconds), out], env)
        sampler = Sampler(tick)
        sampler.thread.start()
        windows: list[tuple[float, float, bool]] = []
        end = time.time() + args.latency_seconds - 1
        on = False
        while time.time() < end:
            start = time.time()
            (sampler.on.set if on else sampler.on.clear)()
            time.sleep(min(5.0, max(0.0, end - start)))
            windows.append((start + 0.5, time.time(), on))  # skip the switch itself
            on = not on
        sampler.on.clear()
        sampler.stop.set()
        server.wait(args.latency_seconds + 60)
        samples = json.loads(Path(out).read_text())
    with_agent = [lat for t, lat in samples for a, b, o in windows if o and a <= t < b]
    without = [lat for t, lat in samples for a, b, o in windows if not o and a <= t < b]
    lat_rows = latency_rows(with_agent, without)
    print(f"\nlatency of a 4x1024 MLP (batch 8) served in a loop: {len(with_agent)} requests "
          f"with the agent sampling every second, {len(without)} without")  # fmt: skip
    print_table(lat_rows)
    all_rows = rows + lat_rows
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "gpu": gpu.name,
                    "driver": data.driver_version,
                    "rows": [asdict(r) for r in all_rows],
                    "agent_cpu_ms_per_tick_mean": mean(cpu_ms),
                },
                indent=1,
            )
        )
    bad = [r.check for r in rows if not r.ok]
    if bad:
        print(f"\nMISMATCH: {', '.join(bad)}")
        return 1
    if not all(r.ok for r in lat_rows):
        print("\nagent overhead above the 1 % goal (reported, not a mismatch)")
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
