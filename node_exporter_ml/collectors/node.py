"""The node collector: host CPU seconds by mode, load, memory, swap, uptime, via psutil."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil
from prometheus_client.core import Metric

from node_exporter_ml.collectors.base import BlockingCollector, CollectContext
from node_exporter_ml.host import ParseError
from node_exporter_ml.host.procfs import parse_loadavg
from node_exporter_ml.registry import register_collector
from node_exporter_ml.series import Series, table_families
from node_exporter_ml.snapshot import DataKey, Snapshot

# node_cpu_seconds_total's modes; guest time is already counted in user (proc(5)).
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# psutil reads the host's files under psutil.PROCFS_PATH, a module global: one reader at a
# time, each with its own root (tests and the bench run several roots in one process).
_PSUTIL = threading.Lock()
_MALFORMED = (KeyError, ValueError, IndexError, TypeError, RuntimeError)


@dataclass(frozen=True, slots=True)
class NodeSample:
    """What one tick read of the host as a whole."""

    cpu_seconds: tuple[tuple[str, float], ...]
    cpus: int
    load: tuple[float, float, float]
    memory_total_bytes: int
    memory_available_bytes: int
    swap_total_bytes: int
    swap_free_bytes: int
    boot_time_seconds: float
    uptime_seconds: float


NODE = DataKey("node", NodeSample)


def read_node(procfs: str) -> NodeSample:
    """Read the host's CPU, memory and swap with psutil, and the load from <procfs>/loadavg.

    psutil honours PROCFS_PATH for /proc/stat and /proc/meminfo; its getloadavg() is
    os.getloadavg() (sysinfo(2)), which ignores it, so loadavg is read directly.

    Raises:
        ParseError: a file is not the kernel's format.
        OSError: a file is missing or unreadable.
    """
    with _PSUTIL:
        saved, psutil.PROCFS_PATH = psutil.PROCFS_PATH, procfs
        try:
            with warnings.catch_warnings():
                # psutil warns when meminfo lacks Buffers/Cached/Active... or there is no
                # /proc/vmstat (pswpin/pswpout): fields this collector does not report.
                warnings.simplefilter("ignore", RuntimeWarning)
                cpu = psutil.cpu_times()
                cpus = len(psutil.cpu_times(percpu=True))
                mem = psutil.virtual_memory()
                swap = psutil.swap_memory()
                boot = psutil.boot_time()
        except _MALFORMED as err:
            raise ParseError(procfs, f"psutil: {type(err).__name__}: {err}") from err
        finally:
            psutil.PROCFS_PATH = saved
    loadavg_path = os.path.join(procfs, "loadavg")
    with open(loadavg_path, encoding="ascii", errors="replace") as f:
        load = parse_loadavg(f.read(4096), loadavg_path)
    return NodeSample(
        cpu_seconds=tuple((m, float(getattr(cpu, m, 0.0))) for m in CPU_MODES),
        cpus=cpus,
        load=load,
        memory_total_bytes=int(mem.total),
        memory_available_bytes=int(mem.available),
        swap_total_bytes=int(swap.total),
        swap_free_bytes=int(swap.free),
        boot_time_seconds=boot,
        uptime_seconds=max(0.0, time.time() - boot),
    )


@register_collector("node", produces=NODE)
class NodeCollector(BlockingCollector[NodeSample]):
    """The host as a whole: CPU seconds by mode, load, memory, swap, uptime and boot time.

    psutil's cpu_times(), virtual_memory(), swap_memory() and boot_time() over
    /proc/{stat,meminfo,vmstat} under --path.procfs, and /proc/loadavg (`uptime`, `free -b`,
    `vmstat`), so the dashboard's node row needs nothing but this agent.

        nodeml_node_memory_available_bytes 1.234e+11
    """

    def __init__(self, ctx: CollectContext) -> None:
        super().__init__(ctx)
        self.procfs = ctx.config.procfs

    def update(self, previous: Snapshot | None) -> NodeSample:
        """Read the host's figures once."""
        return read_node(self.procfs)

    def families(self, data: NodeSample, snapshot: Snapshot) -> Iterable[Metric]:
        """Eleven families, as node_exporter names them under nodeml_node_."""
        yield from table_families(NODE_SERIES, [({}, data)])


_N = Series[NodeSample]


def _meminfo(name: str, what: str, value: Callable[[NodeSample], float]) -> Series[NodeSample]:
    return _N(f"nodeml_node_{name}", "gauge", f"{what}, from /proc/meminfo (psutil).", value)


def _load(window: int, i: int) -> Series[NodeSample]:
    help_text = f"{window}-minute load average, from /proc/loadavg."
    return _N(f"nodeml_node_load{window}", "gauge", help_text, lambda d: d.load[i])


# One row: the host, no labels.
NODE_SERIES: tuple[Series[NodeSample], ...] = (
    _N("nodeml_node_cpu_seconds_total", "counter",
       "Seconds all CPUs spent in each mode since boot, from /proc/stat (psutil).",
       labels=("mode",), each=lambda d: (((mode,), s) for mode, s in d.cpu_seconds)),
    _N("nodeml_node_cpus", "gauge", "Logical CPUs listed in /proc/stat (psutil).",
       lambda d: d.cpus),
    *(_load(window, i) for i, window in enumerate((1, 5, 15))),
    _meminfo("memory_total_bytes", "Memory the kernel manages (MemTotal)",
             lambda d: d.memory_total_bytes),
    _meminfo("memory_available_bytes", "Memory available without swapping (MemAvailable)",
             lambda d: d.memory_available_bytes),
    _meminfo("swap_total_bytes", "Swap space (SwapTotal)", lambda d: d.swap_total_bytes),
    _meminfo("swap_free_bytes", "Unused swap space (SwapFree)", lambda d: d.swap_free_bytes),
    _N("nodeml_node_boot_time_seconds", "gauge",
       "Unix time the host booted (btime of /proc/stat, psutil).", lambda d: d.boot_time_seconds),
    _N("nodeml_node_uptime_seconds", "gauge",
       "Seconds since the host booted, at the time of the snapshot.", lambda d: d.uptime_seconds),
)  # fmt: skip
