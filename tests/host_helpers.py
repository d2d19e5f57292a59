"""Helpers for the host collector tests: NVML data naming pids, a context over fixture roots,
and one tick of the process and cgroup collectors with attribution, as the sampler runs them."""

from __future__ import annotations

from pathlib import Path

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.cgroup import CgroupCollector
from node_exporter_ml.collectors.process import ProcessCollector
from node_exporter_ml.correlation import attribute_workloads
from node_exporter_ml.kube.pods import KubeData
from node_exporter_ml.snapshot import (
    NVML,
    CollectorResult,
    GpuProcessSample,
    GpuSample,
    NvmlData,
    Snapshot,
)
from tests.helpers import make_config

GPU = "GPU-478bad86-921b-0395-2f3f-4ae082da1bb5"


def nvml(*pids: int) -> NvmlData:
    procs = tuple(GpuProcessSample(pid=p, used_memory_bytes=1 << 30) for p in pids)
    return NvmlData("580.159.04", (GpuSample(index=0, uuid=GPU, processes=procs),))


def snap(**data: object) -> Snapshot:
    return Snapshot(0.0, {k: CollectorResult(k, True, 0.0, v) for k, v in data.items()})


def ctx(tmp_path: Path, **options: object) -> CollectContext:
    return CollectContext(
        make_config(procfs=str(tmp_path / "proc"), cgroupfs=str(tmp_path / "cg"), **options)
    )


def tick(c: CollectContext, previous: Snapshot, kube: KubeData | None = None) -> Snapshot:
    """One tick: process and cgroup collectors, then attribution, as the sampler runs them."""
    proc = ProcessCollector(c).update(previous)
    cg = CgroupCollector(c).update(
        previous.replace(
            results={**previous.results, "process": CollectorResult("process", True, 0, proc)}
        )
    )
    extra = {"kube": kube} if kube is not None else {}
    return attribute_workloads(snap(nvml=previous[NVML], process=proc, cgroup=cg, **extra))
