"""CPU cost of one nvml collector tick at fleet scale: 8 GPUs x 64 processes, from the replay.

The H100 neighbour recording is widened to 8 GPUs with 64 compute processes each (every
process with memory and a utilisation sample, field values on every GPU), and driven
through the real collector and a real client_python render. Prints the Python CPU seconds
per tick: the collector's update and families() (its own work), client_python's text
formatting of them, per GPU, the rendered size, and the NVML driver time the same calls cost
on a real H100 (from h100-probe.json), against the goal of 5 ms CPU per GPU. Exits 1 when
the collector's own work misses the goal.

    python bench/nvml_tick.py [--gpus 8] [--processes 64] [--ticks 200]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.nvml import NvmlCollector
from node_exporter_ml.config import Config
from node_exporter_ml.nvml.replay import Replay
from node_exporter_ml.snapshot import CollectorResult, Snapshot
from node_exporter_ml.textformat import LabelCache, render_text

RECORDINGS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nvml-recordings"
GOAL_MS_PER_GPU = 5.0
# The NVML calls one tick makes per GPU (no MIG), keyed as h100-probe.json's timing_us; the
# energy counter rides in the field-value batch (the probe's batch held it too).
PER_TICK_CALLS = (
    "dev0.nvmlDeviceGetUtilizationRates",
    "dev0.nvmlDeviceGetEncoderUtilization",
    "dev0.nvmlDeviceGetDecoderUtilization",
    "dev0.nvmlDeviceGetMemoryInfo",
    "dev0.nvmlDeviceGetPowerUsage",
    "dev0.nvmlDeviceGetEnforcedPowerLimit",
    "dev0.temp_gpu",
    "dev0.clock_sm",
    "dev0.clock_mem",
    "dev0.nvmlDeviceGetPerformanceState",
    "dev0.nvmlDeviceGetPersistenceMode",
    "dev0.nvmlDeviceGetMigMode",
    "dev0.nvmlDeviceGetCurrentClocksEventReasons",
    "dev0.field_values",
    "dev0.nvmlDeviceGetComputeRunningProcesses",
    "dev0.process_utilization",
    "dev0.gpm_sample_get",
    "dev0.gpm_metrics_get",
)


def widen(doc: dict[str, Any], gpus: int, processes: int) -> dict[str, Any]:
    """The recording with `gpus` copies of its GPU, each running `processes` processes."""
    out = copy.deepcopy(doc)
    base = doc["devices"][0]
    out["devices"] = []
    for g in range(gpus):
        dev = copy.deepcopy(base)
        dev["index"] = g
        dev["uuid"] = f"GPU-{g:08x}-921b-0395-2f3f-4ae082da1bb5"
        dev["pci_bus_id"] = f"00000000:{g + 6:02x}:00.0"
        out["devices"].append(dev)
    for frame in out["frames"]:
        src = frame["devices"][0]
        ts = max((u["timestamp_us"] for u in src["process_utilization"]), default=0)
        widened = []
        for g in range(gpus):
            reading = copy.deepcopy(src)
            pids = [100_000 + g * 1000 + p for p in range(processes)]
            reading["processes"] = [
                {"pid": pid, "used_memory_bytes": (1 + p % 7) * 2**28} for p, pid in enumerate(pids)
            ]
            reading["process_utilization"] = [
                {"pid": pid, "timestamp_us": ts - p, "sm": p % 100, "mem": p % 40, "enc": 0,
                 "dec": 0}
                for p, pid in enumerate(pids)
            ]  # fmt: skip
            reading["field_values"] = {
                str(f): 1000 + f for f in (3, 4, 5, 6, 74, 75, 76, 77, 82, 94, 142, 143, 197, 198)
            }
            widened.append(reading)
        frame["devices"] = widened
    return out


class _Families:
    def __init__(self, collector: NvmlCollector) -> None:
        self.collector = collector
        self.families: list[Any] = []

    def collect(self):  # type: ignore[no-untyped-def]
        return self.families


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--processes", type=int, default=64)
    ap.add_argument("--ticks", type=int, default=200)
    args = ap.parse_args()

    recording = RECORDINGS / "h100-neighbour.nvml.json"
    doc = widen(json.loads(recording.read_text()), args.gpus, args.processes)
    now = [1_000_000.0]
    replay = Replay(doc, clock=lambda: now[0], source="widened neighbour")
    collector = NvmlCollector(
        CollectContext(Config(interval=1.0)), clock=lambda: now[0], library=replay
    )
    source = _Families(collector)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(source)

    update_s, families_s, render_s, peer_s, size = [], [], [], [], 0
    labels = LabelCache()
    for tick in range(args.ticks + 2):
        now[0] = 1_000_000.0 + (tick % len(doc["frames"])) + 0.5
        if tick % len(doc["frames"]) == 0:
            collector = NvmlCollector(
                CollectContext(Config(interval=1.0)), clock=lambda: now[0], library=replay
            )
            source.collector = collector
            replay.started = 1_000_000.0
        t0 = time.process_time()
        data = collector.update(None)
        t1 = time.process_time()
        snapshot = Snapshot(
            taken_at=now[0], results={"nvml": CollectorResult("nvml", True, t1 - t0, data)}
        )
        source.families = list(collector.families(data, snapshot))
        t2 = time.process_time()
        text = render_text(source.families, labels)  # what the agent does each tick
        t3 = time.process_time()
        generate_latest(registry)  # the peer: client_python's own formatter
        t4 = time.process_time()
        if tick >= 2:  # the first ticks read static facts and open GPM
            update_s.append(t1 - t0)
            families_s.append(t2 - t1)
            render_s.append(t3 - t2)
            peer_s.append(t4 - t3)
            size = len(text)

    per_tick = [u + f + r for u, f, r in zip(update_s, families_s, render_s, strict=True)]
    own_ms = (statistics.mean(update_s) + statistics.mean(families_s)) * 1000
    mean_ms = statistics.mean(per_tick) * 1000
    p99_ms = sorted(per_tick)[int(len(per_tick) * 0.99) - 1] * 1000
    per_gpu = mean_ms / args.gpus
    probe = json.loads((RECORDINGS / "h100-probe.json").read_text())["timing_us"]
    nvml_ms = sum(probe[k] for k in PER_TICK_CALLS) / 1000
    print(f"nvml collector tick, {args.gpus} GPUs x {args.processes} processes, "
          f"{len(per_tick)} ticks (Python {sys.version.split()[0]})")  # fmt: skip
    print(
        f"  collector update (incl. the replay backend): "
        f"{statistics.mean(update_s) * 1000:8.2f} ms CPU/tick"
    )
    print(
        f"  collector families():                        "
        f"{statistics.mean(families_s) * 1000:8.2f} ms CPU/tick"
    )
    print(
        f"  text formatting (agent, cached labels):      "
        f"{statistics.mean(render_s) * 1000:8.2f} ms CPU/tick"
    )
    print(
        f"  text formatting (client_python, the peer):   "
        f"{statistics.mean(peer_s) * 1000:8.2f} ms CPU/tick"
    )
    print(f"  collector's own work per GPU:                {own_ms / args.gpus:8.2f} ms CPU/tick")
    print(
        f"  total:                                       "
        f"{mean_ms:8.2f} ms CPU/tick (p99 {p99_ms:.2f} ms)"
    )
    print(
        f"  total per GPU:                               "
        f"{per_gpu:8.2f} ms CPU/tick (goal <= {GOAL_MS_PER_GPU} ms)"
    )
    print(f"  rendered size (text format):                 {size:8d} bytes ({size // 1024} KiB)")
    print(f"  NVML driver time on a real H100 for the same calls (h100-probe.json): "
          f"{nvml_ms:.2f} ms per GPU per tick, outside the Python figure above")  # fmt: skip
    own = own_ms / args.gpus
    for what, figure in (("collector's own work", own), ("with text formatting", per_gpu)):
        verdict = "meets" if figure <= GOAL_MS_PER_GPU else "misses"
        print(f"  -> {what}: {figure:.2f} ms/GPU {verdict} the {GOAL_MS_PER_GPU} ms/GPU goal")
    return 0 if per_gpu <= GOAL_MS_PER_GPU else 1


if __name__ == "__main__":
    raise SystemExit(main())
