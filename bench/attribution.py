"""Benchmark: CPU per tick of the process + cgroup collectors on a generated node.

A generated procfs/cgroupfs tree (cgroup v2, systemd driver, containerd) with 2,000
processes, 50 of them inference processes: 30 GPU holders (from NVML data) and 20 found
by a `processes.match` cmdline rule, so every tick also lists all 2,000 pids and checks
their (pid, starttime). Goal: at most 50 ms of CPU per tick for both collectors together.

Peer: psutil doing the process collector's part over the same tree (its PROCFS_PATH pointed
at it): process_iter() with the cmdline rule, then for each inference process what the
collector reports (cpu_times, memory_info, num_threads, num_fds, name) in oneshot().

    python bench/attribution.py [--processes 2000] [--inference 50] [--ticks 50]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.cgroup import CgroupCollector
from node_exporter_ml.collectors.process import ProcessCollector, ProcessMatch, ProcessOptions
from node_exporter_ml.config import Config
from node_exporter_ml.correlation import attribute_workloads
from node_exporter_ml.snapshot import (
    CollectorResult,
    GpuProcessSample,
    GpuSample,
    NvmlData,
    Snapshot,
)
from tools.host_trees import CgroupStats, FakeProc, make_v2_root, write_cgroup_v2, write_proc

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
    for p in procs:  # psutil's memory_info() reads statm (pages), which the collector does not
        (root / "proc" / str(p.pid) / "statm").write_text(f"2097152 {p.rss_kb // 4} 250 1 0 9 0\n")
    devices = tuple(
        GpuSample(
            index=g,
            uuid=f"GPU-{g:08x}",
            processes=tuple(GpuProcessSample(pid=p) for p in gpu_pids[g::8]),
        )
        for g in range(8)
    )
    return NvmlData("580.159.04", devices)


def psutil_tick(rule: re.Pattern[str], gpu_pids: list[int]) -> tuple[int, float]:
    """The peer: the process collector's reads done with psutil; (processes read, CPU s)."""
    started = time.process_time()
    matched = {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if rule.search(" ".join(p.info["cmdline"] or ()))
    }
    read = 0
    for pid in sorted(matched.union(gpu_pids)):
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                proc.cpu_times(), proc.memory_info(), proc.num_threads(), proc.num_fds()
                proc.name()
            read += 1
        except psutil.NoSuchProcess:
            continue
    return read, time.process_time() - started


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
            Config(procfs=str(root / "proc"), cgroupfs=str(root / "cg")).with_options(
                ProcessOptions(match=rules)
            )
        )
        proc, cgroup = ProcessCollector(ctx), CgroupCollector(ctx)
        previous = Snapshot(0.0, {"nvml": CollectorResult("nvml", True, 0.0, nvml)})

        def tick(previous: Snapshot) -> tuple[Snapshot, float, float]:
            started = time.process_time()
            pdata = proc.update(previous)
            proc_cpu = time.process_time() - started
            with_proc = previous.replace(
                results={**previous.results, "process": CollectorResult("process", True, 0, pdata)}
            )
            cdata = cgroup.update(with_proc)
            cpu = time.process_time() - started
            snap = Snapshot(
                0.0, {**with_proc.results, "cgroup": CollectorResult("cgroup", True, 0, cdata)}
            )
            return attribute_workloads(snap), cpu, proc_cpu

        first, cold, proc_cold = tick(previous)
        costs, proc_costs = [], []
        snap = first
        for _ in range(args.ticks):
            snap, cpu, proc_cpu = tick(
                snap.replace(results={**snap.results, "nvml": previous.results["nvml"]})
            )
            costs.append(cpu)
            proc_costs.append(proc_cpu)
        psutil.PROCFS_PATH = str(root / "proc")
        gpu_pids = [p.pid for d in nvml.devices for p in d.processes]
        _, peer_cold = psutil_tick(rules[0].cmdline, gpu_pids)  # type: ignore[arg-type]
        peer = []
        for _ in range(args.ticks):
            peer_read, cpu = psutil_tick(rules[0].cmdline, gpu_pids)  # type: ignore[arg-type]
            peer.append(cpu)
        psutil.PROCFS_PATH = "/proc"
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
    peer.sort()
    own = sorted(proc_costs)
    print(
        f"process part only, agent vs psutil {psutil.__version__} ({peer_read} processes read): "
        f"median {own[len(own) // 2] * 1000:.1f} ms vs {peer[len(peer) // 2] * 1000:.1f} ms CPU "
        f"per tick (cold: {proc_cold * 1000:.1f} ms vs {peer_cold * 1000:.1f} ms)"
    )
    return 0 if median <= GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
