"""The cgroup collector: CPU, throttling, memory, IO and pressure of inference cgroups."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client.core import Metric

from node_exporter_ml.collectors.base import BlockingCollector, CollectContext
from node_exporter_ml.host import VANISHED
from node_exporter_ml.host.cgroup_path import identify
from node_exporter_ml.host.cgroupfs import CgroupFS, CgroupPaths
from node_exporter_ml.host.procfs import ProcFS
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.pids import inference_pids
from node_exporter_ml.registry import register_collector
from node_exporter_ml.series import Series, table_families
from node_exporter_ml.snapshot import CGROUP, NVML, PROCESS, CgroupData, CgroupSample, Snapshot

log = logging.getLogger(__name__)


def _pressure(res: str, kind: str, line: str, who: str) -> Series[CgroupSample]:
    attr = f"pressure_{res}_{kind}_seconds_total"
    return Series(
        f"nodeml_container_{attr}", "counter",
        f"Time {who} tasks of the cgroup were stalled on {res} (PSI {line} total in "
        f"{res}.pressure; cgroup v2 only).",
        lambda s: getattr(s, attr),
    )  # fmt: skip


_C = Series[CgroupSample]

# Rows: one cgroup per workload, labelled with the workload (else the cgroup path).
FAMILIES: tuple[Series[CgroupSample], ...] = (
    _C("nodeml_container_cpu_usage_seconds_total", "counter",
       "CPU time of the container's cgroup: cpu.stat usage_usec (v2), cpuacct.usage (v1).",
       lambda s: s.cpu_usage_seconds_total),
    _C("nodeml_container_cpu_periods_total", "counter",
       "CFS enforcement periods of the cgroup: cpu.stat nr_periods.",
       lambda s: s.cpu_periods_total),
    _C("nodeml_container_cpu_throttled_periods_total", "counter",
       "CFS periods in which the cgroup was throttled: cpu.stat nr_throttled.",
       lambda s: s.cpu_throttled_periods_total),
    _C("nodeml_container_cpu_throttled_seconds_total", "counter",
       "Time the cgroup was throttled by its CPU limit: cpu.stat throttled_usec (v2), "
       "throttled_time (v1).", lambda s: s.cpu_throttled_seconds_total),
    _C("nodeml_container_cpu_limit_cores", "gauge",
       "CPU limit of the cgroup in cores: cpu.max (v2), cpu.cfs_quota_us/cfs_period_us (v1); "
       "absent when unlimited.", lambda s: s.cpu_limit_cores),
    _C("nodeml_container_memory_usage_bytes", "gauge",
       "Memory charged to the cgroup: memory.current (v2), memory.usage_in_bytes (v1).",
       lambda s: s.memory_current_bytes),
    _C("nodeml_container_memory_working_set_bytes", "gauge",
       "Memory usage minus inactive file cache (memory.stat inactive_file), as cAdvisor "
       "computes it.", lambda s: s.memory_working_set_bytes),
    _C("nodeml_container_memory_limit_bytes", "gauge",
       "Memory limit of the cgroup: memory.max (v2), memory.limit_in_bytes (v1); absent when "
       "unlimited.", lambda s: s.memory_limit_bytes),
    _C("nodeml_container_oom_kills_total", "counter",
       "Processes of the cgroup killed by the OOM killer: memory.events oom_kill (v2), "
       "memory.oom_control oom_kill (v1).", lambda s: s.oom_kills_total),
    _C("nodeml_container_io_read_bytes_total", "counter",
       "Bytes the cgroup read from block devices: io.stat rbytes (v2), "
       "blkio.throttle.io_service_bytes Read (v1).", lambda s: s.io_read_bytes_total),
    _C("nodeml_container_io_written_bytes_total", "counter",
       "Bytes the cgroup wrote to block devices: io.stat wbytes (v2), "
       "blkio.throttle.io_service_bytes Write (v1).", lambda s: s.io_write_bytes_total),
    *(
        _pressure(res, kind, line, who)
        for res in ("cpu", "memory", "io")
        for kind, line, who in (("waiting", "some", "some"), ("stalled", "full", "all"))
    ),
)  # fmt: skip


def cgroup_labels(sample: CgroupSample, snapshot: Snapshot) -> dict[str, str]:
    """The workload labels of the cgroup's processes, else the cgroup path itself."""
    for pid in sample.pids:
        labels = snapshot.workload_labels(pid)
        if labels:
            return dict(labels)
    return {"cgroup": sample.path}


@register_collector(
    "cgroup",
    produces=CGROUP,
    reads={PROCESS: "cgroup selection", NVML: "the cgroups of GPU processes"},
)
class CgroupCollector(BlockingCollector[CgroupData]):
    """Per-container cgroup statistics of the inference processes, cgroup v1, v2 or hybrid.

    Reads /proc/<pid>/cgroup for the pids the last snapshot named (GPU holders from
    NVML, the process collector's inference processes: a one-tick lag), then cpu.stat,
    cpu.max, memory.{current,max,stat,events}, io.stat and *.pressure (v2) or their v1
    equivalents under --path.cgroupfs (`systemd-cgtop`, `cat cpu.stat`).

        nodeml_container_cpu_throttled_seconds_total{namespace="ml",pod="vllm-0",container="x"} 3
    """

    def __init__(self, ctx: CollectContext) -> None:
        super().__init__(ctx)
        self.procfs = ProcFS(ctx.config.procfs)
        self.cgroupfs = CgroupFS(ctx.config.cgroupfs)
        self._once = OnceLogger(log)

    def update(self, previous: Snapshot | None) -> CgroupData:
        """Read the cgroups of the pids the previous snapshot knew (vanished pids skipped)."""
        groups: dict[str, tuple[CgroupPaths, list[int]]] = {}
        for pid in inference_pids(previous):
            try:
                lines = self.procfs.read_cgroup(pid)
            except VANISHED:
                continue
            key, _ = identify(lines)
            if key is None or key == "/":  # the root cgroup's statistics are the host's
                continue
            groups.setdefault(key, (CgroupPaths.from_lines(lines), []))[1].append(pid)
        samples = {}
        for key, (paths, members) in groups.items():
            sample = self.cgroupfs.read(key, paths, tuple(members))
            if sample is None:
                self._once.log(
                    logging.DEBUG, f"gone:{key}", "cgroup: %s not under %s", key, self.cgroupfs.root
                )
                continue
            samples[key] = sample
        return CgroupData(cgroups=samples)

    def families(self, data: CgroupData, snapshot: Snapshot) -> Iterable[Metric]:
        """One family per statistic; each series labelled with its workload."""
        labelled: list[tuple[dict[str, str], CgroupSample]] = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        for key in sorted(data.cgroups):
            sample = data.cgroups[key]
            labels = cgroup_labels(sample, snapshot)
            ident = tuple(sorted(labels.items()))
            if ident not in seen:  # two cgroups of one workload: keep the first
                seen.add(ident)
                labelled.append((labels, sample))
        yield from table_families(FAMILIES, labelled)
