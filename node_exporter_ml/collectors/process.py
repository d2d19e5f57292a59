"""The process collector: CPU, memory, threads, fds and cgroup identity of inference processes."""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from node_exporter_ml.collectors.base import BlockingCollector, CollectContext
from node_exporter_ml.config import Config
from node_exporter_ml.exposition import add_sample
from node_exporter_ml.host import ParseError
from node_exporter_ml.host.cgroup_path import CgroupIdentity, identify
from node_exporter_ml.host.procfs import ProcFS
from node_exporter_ml.host.slurm import ENVIRON_LIMIT, SlurmEnviron, parse_slurm_environ
from node_exporter_ml.host.sockets import find_listening_pids
from node_exporter_ml.kube import kube_data
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.options import ConfigError, Section, YamlReader, yaml_key
from node_exporter_ml.registry import register_collector
from node_exporter_ml.serving.options import SERVING_OPTIONS, ServingTarget
from node_exporter_ml.snapshot import NvmlData, ProcessData, ProcessSample, Snapshot

log = logging.getLogger(__name__)

VANISHED = (FileNotFoundError, ProcessLookupError)
SOCKET_OWNER_TTL = 60.0


@dataclass(frozen=True, slots=True)
class ProcessMatch:
    """A rule that marks processes as inference processes by comm and/or cmdline regex."""

    comm: re.Pattern[str] | None = None
    cmdline: re.Pattern[str] | None = None


def _read_matches(r: YamlReader, raw: object, key: str) -> tuple[ProcessMatch, ...]:
    matches = []
    for i, raw_match in enumerate(r.items(raw, key)):
        where = f"{key}[{i}]"
        m = r.mapping(raw_match, where, ("comm", "cmdline"))
        if not m:
            raise ConfigError(f"{r.source}: {where}: expected comm and/or cmdline")
        matches.append(
            ProcessMatch(
                comm=r.optional(m, where, "comm", r.regex, None),
                cmdline=r.optional(m, where, "cmdline", r.regex, None),
            )
        )
    return tuple(matches)


@dataclass(frozen=True, slots=True)
class ProcessOptions:
    """The process collector's keys in the config file's `processes:` section."""

    match: tuple[ProcessMatch, ...] = yaml_key("match", (), _read_matches)


PROCESS_OPTIONS: Section[ProcessOptions] = Section("process", ProcessOptions, file_key="processes")


def gpu_pids(snapshot: Snapshot | None) -> dict[int, list[str]]:
    """Pids holding a GPU in `snapshot`'s NVML data, with the UUIDs they hold."""
    nvml = snapshot.data("nvml", NvmlData) if snapshot is not None else None
    held: dict[int, list[str]] = defaultdict(list)
    for device in nvml.devices if nvml is not None else ():
        for proc in device.processes:
            if device.uuid not in held[proc.pid]:
                held[proc.pid].append(device.uuid)
    return dict(held)


def inference_pids(snapshot: Snapshot | None) -> list[int]:
    """GPU holders and the process collector's inference processes in `snapshot`, ascending."""
    pids = set(gpu_pids(snapshot))
    processes = snapshot.data("process", ProcessData) if snapshot is not None else None
    if processes is not None:
        pids.update(processes.processes)
    return sorted(pids)


@dataclass(slots=True)
class _Known:
    """What we remember of one (pid, starttime): cheap facts for selection rules."""

    starttime: int
    comm: str
    cmdline: tuple[str, ...] | None = None
    identity: CgroupIdentity | None = None
    slurm: SlurmEnviron | None = None  # the environment at exec does not change


@dataclass(frozen=True, slots=True)
class _Owners:
    """Serving-target owners that are not pids: pods (by UID) and containers (by id)."""

    pod_uids: frozenset[str] = frozenset()
    container_ids: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.pod_uids or self.container_ids)


@register_collector("process", default_enabled=True, options=PROCESS_OPTIONS)
class ProcessCollector(BlockingCollector):
    """Inference processes: GPU holders, serving-target owners and `processes.match` rules.

    Reads /proc/<pid>/{stat,status,cmdline,cgroup,fd} under --path.procfs for those pids
    only (`ps -o pid,comm,time,rss,nlwp -p <pids>`); the rest of /proc is listed, and its
    stat read, only when match rules or pod/container-owned targets need it.

        nodeml_process_cpu_seconds_total{pid="415",comm="python3",mode="user"} 812.4
    """

    def __init__(self, ctx: CollectContext) -> None:
        super().__init__(ctx)
        self.fs = ProcFS(ctx.config.procfs)
        self._known: dict[int, _Known] = {}
        self._owner_cache: dict[str, tuple[int | None, float]] = {}
        self._once = OnceLogger(log)

    def reload(self, ctx: CollectContext) -> None:
        """Take a new config (targets and match rules); cached socket owners are dropped."""
        super().reload(ctx)
        self._owner_cache.clear()

    # --- which processes --------------------------------------------------------------

    def _socket_owners(self, targets: Iterable[ServingTarget]) -> list[int]:
        """The pids listening on `targets`' ports, from a cache refreshed every minute."""
        now = time.monotonic()
        owners: list[int | None] = []
        todo: list[ServingTarget] = []
        for target in targets:
            cached = self._owner_cache.get(target.url)
            if cached is not None and now - cached[1] < SOCKET_OWNER_TTL:
                pid = cached[0]
                if pid is None or pid in self._known or self._alive(pid):
                    owners.append(pid)
                    continue
            todo.append(target)
        if todo:
            found = find_listening_pids(self.fs.root, [t.endpoint for t in todo])
            for target, pid in zip(todo, found, strict=True):
                self._owner_cache[target.url] = (pid, now)
            owners += found
        return [pid for pid in owners if pid is not None]

    def _alive(self, pid: int) -> bool:
        try:
            self.fs.read_stat(pid)
        except (OSError, ParseError):
            return False
        return True

    def _owners(self, config: Config, previous: Snapshot | None) -> _Owners:
        kube = kube_data(previous)
        targets = config.section(SERVING_OPTIONS).targets
        containers = {t.container_id for t in targets if t.container_id}
        pods: set[str] = set()
        if kube is not None:
            names = [t.pod for t in targets if not t.container_id and t.pod]
            names += [t.pod for t in kube.targets if t.pod]
            for pod in filter(None, map(kube.by_name.get, names)):
                pods.update(x for x in (pod.uid, pod.config_hash) if x)
        return _Owners(frozenset(pods), frozenset(containers))

    def _identity(self, pid: int) -> CgroupIdentity:
        return identify(self.fs.read_cgroup(pid))[1]

    def _scan(self, config: Config, owners: _Owners, reasons: dict[int, set[str]]) -> None:
        """List every pid; match rules and pod/container owners against cached facts."""
        rules = config.section(PROCESS_OPTIONS).match
        want_cmdline = any(r.cmdline is not None for r in rules)
        known: dict[int, _Known] = {}
        for pid in self.fs.pids():
            try:
                comm, starttime = self.fs.read_start(pid)
                entry = self._known.get(pid)
                if entry is None or entry.starttime != starttime:
                    entry = _Known(starttime, comm)
                if want_cmdline and entry.cmdline is None:
                    entry.cmdline = self.fs.read_cmdline(pid)
                if owners and entry.identity is None:
                    entry.identity = self._identity(pid)
            except VANISHED:
                continue
            except (PermissionError, ParseError) as err:
                self._once.log(logging.DEBUG, f"scan:{type(err).__name__}", "process: %s", err)
                continue
            known[pid] = entry
            ident = entry.identity
            if ident is not None and (
                ident.pod_uid in owners.pod_uids or ident.container_id in owners.container_ids
            ):
                reasons[pid].add("serving")
            cmdline = " ".join(entry.cmdline or ())
            for rule in rules:
                if (rule.comm is None or rule.comm.search(entry.comm)) and (
                    rule.cmdline is None or rule.cmdline.search(cmdline)
                ):
                    reasons[pid].add("match")
                    break
        self._known = known

    def select(self, previous: Snapshot | None) -> dict[int, set[str]]:
        """The inference pids and why each counts ("gpu", "serving", "match")."""
        config = self.ctx.config
        reasons: dict[int, set[str]] = defaultdict(set)
        for pid in gpu_pids(previous):
            reasons[pid].add("gpu")
        unowned = []
        for target in config.section(SERVING_OPTIONS).targets:
            if target.pid is not None:
                reasons[target.pid].add("serving")
            elif target.container_id is None and target.pod is None:
                unowned.append(target)
        for pid in self._socket_owners(unowned):
            reasons[pid].add("serving")
        owners = self._owners(config, previous)
        if config.section(PROCESS_OPTIONS).match or owners:
            self._scan(config, owners, reasons)
        else:
            self._known = {p: k for p, k in self._known.items() if p in reasons}
        return reasons

    # --- reading one process ----------------------------------------------------------

    def read_process(self, pid: int, reasons: Iterable[str]) -> ProcessSample:
        """Read one process in depth (raises FileNotFoundError when it vanished)."""
        fs = self.fs
        stat = fs.read_stat(pid)
        status = fs.read_status(pid)
        entry = self._known.get(pid)
        if entry is None or entry.starttime != stat.starttime_ticks:
            entry = self._known[pid] = _Known(stat.starttime_ticks, stat.comm)
        if entry.cmdline is None:
            entry.cmdline = fs.read_cmdline(pid)
        path, ident = identify(fs.read_cgroup(pid))
        entry.identity = ident
        if entry.slurm is None:
            entry.slurm = self._slurm_environ(pid)
        env = entry.slurm
        try:
            open_fds: int | None = fs.count_open_fds(pid)
        except PermissionError:
            open_fds = None
            self._once.log(
                logging.WARNING,
                "fd-permission",
                "process: cannot read %s; open fds need CAP_SYS_PTRACE or the "
                "same user (series omitted)",
                fs.path(pid, "fd"),
            )
        try:
            start: float | None = fs.boot_time() + stat.starttime_ticks / fs.clock_ticks
        except (OSError, ParseError):
            start = None
        return ProcessSample(
            pid=pid,
            comm=stat.comm,
            cmdline=entry.cmdline,
            cpu_user_seconds_total=stat.utime_ticks / fs.clock_ticks,
            cpu_system_seconds_total=stat.stime_ticks / fs.clock_ticks,
            resident_memory_bytes=status.rss_bytes
            if status.rss_bytes is not None
            else stat.rss_pages * fs.page_size,
            cgroup_path=path,
            container_id=ident.container_id,
            pod_uid=ident.pod_uid,
            unit=ident.unit,
            ppid=stat.ppid,
            start_time_seconds=start,
            threads=status.threads if status.threads is not None else stat.num_threads,
            open_fds=open_fds,
            voluntary_context_switches_total=status.voluntary_ctxt_switches,
            involuntary_context_switches_total=status.nonvoluntary_ctxt_switches,
            runtime=ident.runtime,
            qos=ident.qos,
            reasons=frozenset(reasons),
            # The cgroup path names every process of a job alike; the environment, readable
            # or not per process, only fills in what the path does not say.
            slurm_job=ident.slurm_job or env.job_id,
            slurm_step=ident.slurm_step or (env.step if not ident.slurm_job else None),
            slurm_job_name=env.job_name,
            slurm_user=env.user,
        )

    def _slurm_environ(self, pid: int) -> SlurmEnviron:
        """The Slurm variables of a process's environment; empty when it is not readable."""
        try:
            return parse_slurm_environ(self.fs.read_environ(pid, ENVIRON_LIMIT))
        except PermissionError:
            self._once.log(
                logging.WARNING,
                "environ-permission",
                "process: cannot read %s; Slurm job names and users need CAP_SYS_PTRACE or "
                "the same user (cgroup paths still give job and step)",
                self.fs.path(pid, "environ"),
            )
        except OSError as err:
            if isinstance(err, VANISHED):
                raise
            self._once.log(logging.DEBUG, "environ", "process: environ of %d: %s", pid, err)
        return SlurmEnviron()

    def update(self, previous: Snapshot | None) -> ProcessData:
        """Select the inference processes and read each; vanished pids are skipped."""
        selected = self.select(previous)
        processes = {}
        for pid, why in sorted(selected.items()):
            try:
                processes[pid] = self.read_process(pid, why)
            except VANISHED:
                continue
            except PermissionError as err:
                self._once.log(logging.WARNING, "permission", "process: %s (skipped)", err)
        missing = sorted(p for p, why in selected.items() if "gpu" in why and p not in processes)
        if missing:
            self._once.log(
                logging.WARNING,
                "gpu-pids-missing",
                "process: GPU processes %s are not in %s; NVML reports host pids, "
                "so the agent needs the host's /proc (hostPID)",
                missing,
                self.fs.root,
            )
        return ProcessData(processes=processes)

    # --- metrics ------------------------------------------------------------------------

    def families(self, data: object, snapshot: Snapshot) -> Iterable[Metric]:
        """Per-process families, each series with pid, comm and the workload's labels."""
        if not isinstance(data, ProcessData):
            return
        cpu = CounterMetricFamily(
            "nodeml_process_cpu_seconds_total",
            "CPU time of an inference process by mode (user, system), from /proc/<pid>/stat.",
        )
        rss = GaugeMetricFamily(
            "nodeml_process_resident_memory_bytes",
            "Resident memory of an inference process, VmRSS from /proc/<pid>/status.",
        )
        threads = GaugeMetricFamily(
            "nodeml_process_threads", "Threads of an inference process, from /proc/<pid>/status."
        )
        fds = GaugeMetricFamily(
            "nodeml_process_open_fds",
            "Open file descriptors of an inference process, entries of /proc/<pid>/fd.",
        )
        switches = CounterMetricFamily(
            "nodeml_process_context_switches_total",
            "Context switches of an inference process by kind (voluntary, involuntary), "
            "from /proc/<pid>/status.",
        )
        start = GaugeMetricFamily(
            "nodeml_process_start_time_seconds",
            "Start time of an inference process since the epoch, from /proc/<pid>/stat "
            "starttime and /proc/stat btime.",
        )
        info = GaugeMetricFamily(
            "nodeml_workload_info",
            "Joins an inference process to its workload (namespace/pod/container, a Slurm job "
            "with its slurm_job_name and user, or unit) and the GPU it holds (uuid, empty when "
            "none); from NVML, /proc/<pid>/cgroup and environ, and the Kubernetes API.",
        )
        held = gpu_pids(snapshot)
        for pid, p in sorted(data.processes.items()):
            labels = process_labels(p, snapshot.workload_labels(pid))
            add_sample(cpu, {**labels, "mode": "user"}, p.cpu_user_seconds_total)
            add_sample(cpu, {**labels, "mode": "system"}, p.cpu_system_seconds_total)
            if p.resident_memory_bytes is not None:
                add_sample(rss, labels, p.resident_memory_bytes)
            if p.threads is not None:
                add_sample(threads, labels, p.threads)
            if p.open_fds is not None:
                add_sample(fds, labels, p.open_fds)
            if p.voluntary_context_switches_total is not None:
                add_sample(
                    switches, {**labels, "kind": "voluntary"}, p.voluntary_context_switches_total
                )
            if p.involuntary_context_switches_total is not None:
                add_sample(
                    switches,
                    {**labels, "kind": "involuntary"},
                    p.involuntary_context_switches_total,
                )
            if p.start_time_seconds is not None:
                add_sample(start, labels, p.start_time_seconds)
            base = {"namespace": "", "pod": "", "container": "", **labels}
            if "slurm_job" in labels:  # job name and user here only, not on every series
                base |= {"slurm_job_name": p.slurm_job_name or "", "user": p.slurm_user or ""}
            for uuid in held.get(pid) or [""]:
                add_sample(info, {**base, "uuid": uuid}, 1)
        yield from (cpu, rss, threads, fds, switches, start, info)


def process_labels(p: ProcessSample, workload: Mapping[str, str]) -> dict[str, str]:
    """Pid and comm, then the workload's labels (namespace/pod/container, or unit)."""
    return {"pid": str(p.pid), "comm": p.comm, **workload}
