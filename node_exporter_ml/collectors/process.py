"""The process collector: CPU, memory, threads, fds and cgroup identity of inference processes."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import Metric

from node_exporter_ml.collectors.base import BlockingCollector, CollectContext
from node_exporter_ml.correlation import attribute_workloads
from node_exporter_ml.host import VANISHED, ParseError
from node_exporter_ml.host.cgroup_path import CgroupIdentity, identify
from node_exporter_ml.host.procfs import ProcFS
from node_exporter_ml.host.slurm import ENVIRON_LIMIT, SlurmEnviron, parse_slurm_environ
from node_exporter_ml.kube.pods import KUBE, kube_data
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.options import ConfigError, Section, YamlReader, yaml_key
from node_exporter_ml.pids import gpu_pids
from node_exporter_ml.registry import register_collector, register_enricher
from node_exporter_ml.series import Series, table_families
from node_exporter_ml.serving.options import SERVING_OPTIONS, ServingTarget
from node_exporter_ml.settings import Config
from node_exporter_ml.snapshot import CGROUP, NVML, PROCESS, ProcessData, ProcessSample, Snapshot

log = logging.getLogger(__name__)


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


@register_collector(
    "process",
    produces=PROCESS,
    reads={
        NVML: "GPU holders as inference processes",
        KUBE: "the processes of pod-declared serving targets",
    },
    options=PROCESS_OPTIONS,
)
class ProcessCollector(BlockingCollector[ProcessData]):
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
        self._once = OnceLogger(log)

    # --- which processes --------------------------------------------------------------

    def _socket_owners(self, targets: Iterable[ServingTarget]) -> list[int]:
        """The pids listening on `targets`' ports (the context's shared SocketOwners)."""
        found = self.ctx.sockets.lookup(self.name, [t.endpoint for t in targets])
        return [pid for pid in found if pid is not None]

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

    def families(self, data: ProcessData, snapshot: Snapshot) -> Iterable[Metric]:
        """Per-process families, each series with pid, comm and the workload's labels."""
        held = gpu_pids(snapshot)
        rows: list[tuple[dict[str, str], ProcessSample]] = []
        joins: list[tuple[dict[str, str], list[str]]] = []
        for pid, p in sorted(data.processes.items()):
            labels = process_labels(p, snapshot.workload_labels(pid))
            rows.append((labels, p))
            base = {"namespace": "", "pod": "", "container": "", **labels}
            if "slurm_job" in labels:  # job name and user here only, not on every series
                base |= {"slurm_job_name": p.slurm_job_name or "", "user": p.slurm_user or ""}
            joins.append((base, held.get(pid) or [""]))
        yield from table_families(PROCESS_SERIES, rows)
        yield from table_families(WORKLOAD_INFO, joins)


_P = Series[ProcessSample]

# Rows: one inference process, labelled with pid, comm and its workload.
PROCESS_SERIES: tuple[Series[ProcessSample], ...] = (
    _P("nodeml_process_cpu_seconds_total", "counter",
       "CPU time of an inference process by mode (user, system), from /proc/<pid>/stat.",
       labels=("mode",),
       each=lambda p: ((("user",), p.cpu_user_seconds_total),
                       (("system",), p.cpu_system_seconds_total))),
    _P("nodeml_process_resident_memory_bytes", "gauge",
       "Resident memory of an inference process, VmRSS from /proc/<pid>/status.",
       lambda p: p.resident_memory_bytes),
    _P("nodeml_process_threads", "gauge",
       "Threads of an inference process, from /proc/<pid>/status.", lambda p: p.threads),
    _P("nodeml_process_open_fds", "gauge",
       "Open file descriptors of an inference process, entries of /proc/<pid>/fd.",
       lambda p: p.open_fds),
    _P("nodeml_process_context_switches_total", "counter",
       "Context switches of an inference process by kind (voluntary, involuntary), "
       "from /proc/<pid>/status.",
       labels=("kind",),
       each=lambda p: ((("voluntary",), p.voluntary_context_switches_total),
                       (("involuntary",), p.involuntary_context_switches_total))),
    _P("nodeml_process_start_time_seconds", "gauge",
       "Start time of an inference process since the epoch, from /proc/<pid>/stat "
       "starttime and /proc/stat btime.", lambda p: p.start_time_seconds),
)  # fmt: skip

# Rows: one inference process, labelled with its whole workload identity, and the UUIDs of
# the GPUs it holds ("" for none): a series per GPU.
WORKLOAD_INFO = (
    Series[list[str]](
        "nodeml_workload_info", "gauge",
        "Joins an inference process to its workload (namespace/pod/container, a Slurm job "
        "with its slurm_job_name and user, or unit) and the GPU it holds (uuid, empty when "
        "none); from NVML, /proc/<pid>/cgroup and environ, and the Kubernetes API.",
        labels=("uuid",),
        each=lambda uuids: [((uuid,), 1.0) for uuid in uuids],
    ),
)  # fmt: skip


# Workload labels, the first correlation step: for the pids of this collector and of the
# cgroup collector (which reads GPU holders' cgroups even without this one).
register_enricher(
    "workloads",
    lambda _config: attribute_workloads,
    owners=("process", "cgroup"),
    reads={
        PROCESS: "workload labels",
        CGROUP: "workload labels of new GPU processes",
        KUBE: "pod names in workload labels",
    },
)


def process_labels(p: ProcessSample, workload: Mapping[str, str]) -> dict[str, str]:
    """Pid and comm, then the workload's labels (namespace/pod/container, or unit)."""
    return {"pid": str(p.pid), "comm": p.comm, **workload}
