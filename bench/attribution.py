"""Benchmark: CPU per tick of the process + cgroup collectors on a generated node.

A generated procfs/cgroupfs tree (cgroup v2, systemd driver, containerd) with 2,000
processes, 50 of them inference processes: 30 GPU holders (from NVML data) and 20 found
by a `processes.match` cmdline rule, so every tick also lists all 2,000 pids and checks
their (pid, starttime). Goal: at most 50 ms of CPU per tick for both collectors together.

    python bench/attribution.py [--processes 2000] [--inference 50] [--ticks 50]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.cgroup import CgroupCollector
from node_exporter_ml.collectors.process import ProcessCollector
from node_exporter_ml.config import Config, FileConfig, ProcessMatch
from node_exporter_ml.correlation import attribute_workloads
from node_exporter_ml.snapshot import (
    CollectorResult,
    GpuProcessSample,
    GpuSample,
    NvmlData,
    Snapshot,
)
from tests.host_trees import CgroupStats, FakeProc, make_v2_root, write_cgroup_v2, write_proc

GOAL_MS = 50.0


def build(root: Path, processes: int, inference: int) -> NvmlData:
    """Write the tree; return NVML data naming the GPU holders."""
    gpu_holders = inference * 3 // 5
    procs, gpu_pids = [], []
    make_v2_root(root / "cg")
    for i in range(processes):
        pid = 1000 + i
        pod = f"{i // 8:08x}-0000-4000-8000-{i:012x}"
        cid = f"{i:064x}"
        path = (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{pod.replace('-', '_')}.slice/cri-containerd-{cid}.scope"
        )
        if i < gpu_holders:
            gpu_pids.append(pid)
            cmdline: tuple[str, ...] = ("python3", "-m", "torch.distributed.run", "train.py")
        elif i < inference:
            cmdline = ("python3", "-m", "vllm.entrypoints.openai.api_server", "--port", "8000")
        else:
            cmdline = ("/usr/bin/sidecar", "--flag", str(i))
        procs.append(
            FakeProc(
                pid=pid,
                comm=cmdline[0].rsplit("/", 1)[-1][:15],
                cmdline=cmdline,
                cgroup=f"0::{path}\n",
                starttime=1000 + i,
            )
        )
        if i < inference:
            write_cgroup_v2(root / "cg" / path.lstrip("/"), CgroupStats())
    write_proc(root / "proc", procs)
    devices = tuple(
        GpuSample(
            index=g,
            uuid=f"GPU-{g:08x}",
            processes=tuple(GpuProcessSample(pid=p) for p in gpu_pids[g::8]),
        )
        for g in range(8)
    )
    return NvmlData("580.159.04", devices)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2000)
    ap.add_argument("--inference", type=int, default=50)
    ap.add_argument("--ticks", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nvml = build(root, args.processes, args.inference)
        rules = (ProcessMatch(cmdline=re.compile(r"vllm\.entrypoints")),)
        ctx = CollectContext(
            Config(
                procfs=str(root / "proc"),
                cgroupfs=str(root / "cg"),
                file=FileConfig(process_match=rules),
            )
        )
        proc, cgroup = ProcessCollector(ctx), CgroupCollector(ctx)
        previous = Snapshot(0.0, {"nvml": CollectorResult("nvml", True, 0.0, nvml)})

        def tick(previous: Snapshot) -> tuple[Snapshot, float]:
            started = time.process_time()
            pdata = proc.update(previous)
            with_proc = previous.replace(
                results={**previous.results, "process": CollectorResult("process", True, 0, pdata)}
            )
            cdata = cgroup.update(with_proc)
            cpu = time.process_time() - started
            snap = Snapshot(
                0.0, {**with_proc.results, "cgroup": CollectorResult("cgroup", True, 0, cdata)}
            )
            return attribute_workloads(snap), cpu

        first, cold = tick(previous)
        costs = []
        snap = first
        for _ in range(args.ticks):
            snap, cpu = tick(
                snap.replace(results={**snap.results, "nvml": previous.results["nvml"]})
            )
            costs.append(cpu)
    found = len(snap.results["process"].data.processes)  # type: ignore[union-attr]
    cgroups = len(snap.results["cgroup"].data.cgroups)  # type: ignore[union-attr]
    costs.sort()
    median, worst = costs[len(costs) // 2] * 1000, costs[-1] * 1000
    print(
        f"tree: {args.processes} processes, {args.inference} inference "
        f"({found} read in depth, {cgroups} cgroups read)"
    )
    print(f"first tick (cold cache): {cold * 1000:.1f} ms CPU")
    print(
        f"steady state over {args.ticks} ticks: median {median:.1f} ms, max {worst:.1f} ms CPU "
        f"per tick (goal <= {GOAL_MS:.0f} ms): {'OK' if median <= GOAL_MS else 'OVER'}"
    )
    return 0 if median <= GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
