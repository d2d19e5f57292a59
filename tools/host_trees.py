"""Build procfs and cgroupfs fixture trees from tables, in the kernel's own file formats.

The file texts follow what the kernel writes (proc(5), cgroup-v2.rst, cgroup-v1/*.rst;
formats checked against a 6.x host), so the readers see what they would on a node.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BTIME = 1_767_000_000
# meminfo, vmstat, loadavg: copied from a real host, kept with the suite's fixtures
NODE_FILES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "proc" / "node"
UID = "0e2d0f43-5b7c-4a3e-9f6a-2b1c3d4e5f60"
UID_ = UID.replace("-", "_")
STATIC_UID = "6d3b5f1e8a9c4b2d7e0f1a2b3c4d5e6f"
CID = "3c1f0a9e" * 8
KIND_CID = "ab12cd34" * 8
DOCKER_CID = "0123456789abcdef" * 4  # a container outside Kubernetes
HOST_NETNS = "net:[4026531840]"


@dataclass
class FakeProc:
    """One process as /proc shows it."""

    pid: int
    comm: str = "python3"
    cmdline: tuple[str, ...] = ("python3", "-m", "server")
    cgroup: str = "0::/\n"
    ppid: int = 1
    utime: int = 12_345  # clock ticks
    stime: int = 678
    threads: int = 17
    starttime: int = 4_200
    rss_kb: int = 204_800
    voluntary: int = 1_500
    involuntary: int = 42
    fds: int = 5
    sockets: tuple[int, ...] = ()
    netns: str = HOST_NETNS  # processes in it see /proc/net as their own net/
    environ: bytes = b"PATH=/usr/bin\0HOME=/root\0"


def stat_line(p: FakeProc) -> str:
    """/proc/<pid>/stat of `p`, field by field as proc(5) lists them."""
    fields = [
        "S",
        p.ppid,
        p.pid,
        p.pid,
        0,
        -1,
        4194560,
        51234,
        0,
        12,
        0,
        p.utime,
        p.stime,
        0,
        0,
        20,
        0,
        p.threads,
        0,
        p.starttime,
        8_589_934_592,
        p.rss_kb // 4,
        "18446744073709551615",
        94_000_000,
        94_100_000,
        140_720_000_000,
        0,
        0,
        0,
        16384,
        0,
        0,
        0,
        17,
        3,
        0,
        0,
        0,
        0,
        0,
        94_200_000,
        94_300_000,
        95_000_000,
        140_720_000_100,
        140_720_000_200,
        140_720_000_200,
        140_720_000_300,
        0,
    ]
    return f"{p.pid} ({p.comm}) " + " ".join(map(str, fields)) + "\n"


def status_text(p: FakeProc) -> str:
    """/proc/<pid>/status of `p`."""
    return (
        f"Name:\t{p.comm}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{p.pid}\nNgid:\t0\n"
        f"Pid:\t{p.pid}\nPPid:\t{p.ppid}\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
        f"FDSize:\t64\nGroups:\t0\nVmPeak:\t 9000000 kB\nVmSize:\t 8388608 kB\n"
        f"VmLck:\t       0 kB\nVmHWM:\t  {p.rss_kb} kB\nVmRSS:\t  {p.rss_kb} kB\n"
        f"RssAnon:\t  {p.rss_kb - 1000} kB\nRssFile:\t    1000 kB\nRssShmem:\t       0 kB\n"
        f"Threads:\t{p.threads}\nSigQ:\t0/63448\nCpus_allowed_list:\t0-15\n"
        f"voluntary_ctxt_switches:\t{p.voluntary}\n"
        f"nonvoluntary_ctxt_switches:\t{p.involuntary}\n"
    )


def write_proc(
    root: Path,
    procs: Iterable[FakeProc],
    tcp: Sequence[tuple[str, int, int]] = (),
) -> Path:
    """Write /proc: each pid's files, /proc/stat and /proc/net/tcp{,6} (the host namespace's).

    `tcp` rows are (state hex, port, inode) for listening/other sockets on 0.0.0.0.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text(
        "cpu  1 2 3 4 5 6 7 0 0 0\ncpu0 1 2 3 4 5 6 7 0 0 0\nintr 0\nctxt 123\n"
        f"btime {BTIME}\nprocesses 9999\nprocs_running 1\n"
    )
    for name in ("meminfo", "vmstat", "loadavg"):  # a real host's, for the node collector
        shutil.copyfile(NODE_FILES / name, root / name)
    (root / "net").mkdir(exist_ok=True)
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
        "   uid  timeout inode\n"
    )
    rows = [
        f"   {i}: 00000000:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000"
        f" 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
        for i, (state, port, inode) in enumerate(tcp)
    ]
    (root / "net" / "tcp").write_text(header + "".join(rows))
    (root / "net" / "tcp6").write_text(header)
    for p in procs:
        d = root / str(p.pid)
        (d / "fd").mkdir(parents=True, exist_ok=True)
        (d / "ns").mkdir(exist_ok=True)
        (d / "stat").write_text(stat_line(p))
        (d / "status").write_text(status_text(p))
        (d / "comm").write_text(p.comm + "\n")
        (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in p.cmdline))
        (d / "environ").write_bytes(p.environ)
        (d / "cgroup").write_text(p.cgroup)
        for fd in range(p.fds):
            os.symlink("/dev/null", d / "fd" / str(fd))
        for i, inode in enumerate(p.sockets):
            os.symlink(f"socket:[{inode}]", d / "fd" / str(p.fds + i))
        os.symlink(p.netns, d / "ns" / "net")
        if p.netns == HOST_NETNS:
            os.symlink("../net", d / "net")
    return root


@dataclass
class CgroupStats:
    """One cgroup's statistics, written in the v2 or v1 format."""

    usage_usec: int = 812_400_000
    user_usec: int = 700_000_000
    system_usec: int = 112_400_000
    nr_periods: int = 9_000
    nr_throttled: int = 1_234
    throttled_usec: int = 3_100_000
    quota_us: int | None = 200_000  # None: no limit
    period_us: int = 100_000
    memory_current: int = 4_294_967_296
    inactive_file: int = 1_073_741_824
    memory_max: int | None = 8_589_934_592
    oom_kill: int = 2
    rbytes: tuple[int, ...] = (1_459_200, 40_960)
    wbytes: tuple[int, ...] = (314_773_504, 0)
    psi: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {
            "cpu": (5_000_000, 1_000_000),
            "memory": (250_000, 125_000),
            "io": (7_500_000, 2_500_000),
        }
    )
    psi_files: bool = True


def _memory_stat_v2(s: CgroupStats) -> str:
    return (
        f"anon {s.memory_current - 2 * s.inactive_file}\nfile {2 * s.inactive_file}\n"
        "kernel 8859648\nkernel_stack 1015808\npagetables 3244032\nsec_pagetables 0\n"
        "percpu 1040\nsock 0\nvmalloc 8192\nshmem 0\nzswap 0\nzswapped 0\n"
        f"file_mapped 104857600\nfile_dirty 4096\nfile_writeback 0\nswapcached 0\n"
        "anon_thp 0\nfile_thp 0\nshmem_thp 0\n"
        f"inactive_anon {s.memory_current - 2 * s.inactive_file}\nactive_anon 0\n"
        f"inactive_file {s.inactive_file}\nactive_file {s.inactive_file}\nunevictable 0\n"
        "slab_reclaimable 2316112\nslab_unreclaimable 1436856\nslab 3752968\n"
        "workingset_refault_anon 0\nworkingset_refault_file 12\npgscan 0\npgsteal 0\n"
        "pgfault 1243553\npgmajfault 106\n"
    )


def write_cgroup_v2(d: Path, s: CgroupStats) -> None:
    """A v2 cgroup directory's files."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup.procs").write_text("")
    (d / "cpu.stat").write_text(
        f"usage_usec {s.usage_usec}\nuser_usec {s.user_usec}\nsystem_usec {s.system_usec}\n"
        f"nice_usec 0\ncore_sched.force_idle_usec 0\nnr_periods {s.nr_periods}\n"
        f"nr_throttled {s.nr_throttled}\nthrottled_usec {s.throttled_usec}\n"
        "nr_bursts 0\nburst_usec 0\n"
    )
    quota = "max" if s.quota_us is None else str(s.quota_us)
    (d / "cpu.max").write_text(f"{quota} {s.period_us}\n")
    (d / "memory.current").write_text(f"{s.memory_current}\n")
    (d / "memory.max").write_text("max\n" if s.memory_max is None else f"{s.memory_max}\n")
    (d / "memory.stat").write_text(_memory_stat_v2(s))
    (d / "memory.events").write_text(
        f"low 0\nhigh 0\nmax 17\noom {s.oom_kill + 1}\noom_kill {s.oom_kill}\noom_group_kill 0\n"
    )
    (d / "io.stat").write_text(
        "".join(
            f"{8 + i}:{16 * i} rbytes={r} wbytes={w} rios=192 wios=353 dbytes=0 dios=0\n"
            for i, (r, w) in enumerate(zip(s.rbytes, s.wbytes, strict=True))
        )
    )
    if s.psi_files:
        write_psi(d, s)


def write_psi(d: Path, s: CgroupStats) -> None:
    """The cgroup's .pressure files (PSI) for each resource of `s.psi`."""
    d.mkdir(parents=True, exist_ok=True)
    for res, (some, full) in s.psi.items():
        (d / f"{res}.pressure").write_text(
            f"some avg10=0.00 avg60=0.12 avg300=0.05 total={some}\n"
            f"full avg10=0.00 avg60=0.02 avg300=0.01 total={full}\n"
        )


def write_cgroup_v1(root: Path, paths: dict[str, str], s: CgroupStats) -> None:
    """v1 controller files for one process, each at its controller's path."""
    cpu = root / "cpu,cpuacct" / paths["cpu"].lstrip("/")
    cpu.mkdir(parents=True, exist_ok=True)
    (cpu / "cpuacct.usage").write_text(f"{s.usage_usec * 1000}\n")
    (cpu / "cpuacct.stat").write_text(
        f"user {s.user_usec // 10_000}\nsystem {s.system_usec // 10_000}\n"
    )
    (cpu / "cpu.stat").write_text(
        f"nr_periods {s.nr_periods}\nnr_throttled {s.nr_throttled}\n"
        f"throttled_time {s.throttled_usec * 1000}\nnr_bursts 0\nburst_time 0\n"
    )
    (cpu / "cpu.cfs_quota_us").write_text(f"{-1 if s.quota_us is None else s.quota_us}\n")
    (cpu / "cpu.cfs_period_us").write_text(f"{s.period_us}\n")
    mem = root / "memory" / paths["memory"].lstrip("/")
    mem.mkdir(parents=True, exist_ok=True)
    (mem / "memory.usage_in_bytes").write_text(f"{s.memory_current}\n")
    limit = 9223372036854771712 if s.memory_max is None else s.memory_max
    (mem / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (mem / "memory.stat").write_text(
        f"cache {2 * s.inactive_file}\nrss {s.memory_current - 2 * s.inactive_file}\n"
        f"inactive_file {s.inactive_file}\nactive_file {s.inactive_file}\n"
        f"hierarchical_memory_limit {limit}\n"
        f"total_cache {2 * s.inactive_file}\ntotal_rss {s.memory_current - 2 * s.inactive_file}\n"
        f"total_inactive_file {s.inactive_file}\ntotal_active_file {s.inactive_file}\n"
    )
    (mem / "memory.oom_control").write_text(
        f"oom_kill_disable 0\nunder_oom 0\noom_kill {s.oom_kill}\n"
    )
    blkio = root / "blkio" / paths["blkio"].lstrip("/")
    blkio.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (r, w) in enumerate(zip(s.rbytes, s.wbytes, strict=True)):
        dev = f"{8 + i}:{16 * i}"
        rows += [
            f"{dev} Read {r}",
            f"{dev} Write {w}",
            f"{dev} Sync {r + w}",
            f"{dev} Async 0",
            f"{dev} Discard 0",
            f"{dev} Total {r + w}",
        ]
    rows.append(f"Total {sum(s.rbytes) + sum(s.wbytes)}")
    (blkio / "blkio.throttle.io_service_bytes_recursive").write_text("\n".join(rows) + "\n")


def make_v1_root(root: Path, hybrid: bool) -> None:
    """v1 mounts: cpu,cpuacct (with cpu and cpuacct links), memory, blkio, systemd."""
    for name in ("cpu,cpuacct", "memory", "blkio", "pids", "systemd"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for link in ("cpu", "cpuacct"):
        if not (root / link).exists():
            os.symlink("cpu,cpuacct", root / link)
    if hybrid:
        (root / "unified").mkdir(exist_ok=True)
        (root / "unified" / "cgroup.controllers").write_text("\n")


def make_v2_root(root: Path) -> None:
    """A cgroup v2 root: the hierarchy's cgroup.controllers file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")


def v1_cgroup_file(path: str, systemd_path: str | None = None, unified: str | None = None) -> str:
    """/proc/<pid>/cgroup of a v1 (or, with `unified`, hybrid) host, kernel order."""
    lines = [
        f"12:pids:{path}",
        "11:hugetlb:/",
        "10:devices:" + path,
        "9:perf_event:/",
        f"8:blkio:{path}",
        f"7:memory:{path}",
        "6:freezer:" + path,
        "5:net_cls,net_prio:/",
        f"4:cpu,cpuacct:{path}",
        "3:cpuset:/",
        "2:rdma:/",
        f"1:name=systemd:{systemd_path or path}",
    ]
    if unified is not None:
        lines.append(f"0::{unified}")
    return "\n".join(lines) + "\n"


def sample_values(
    families: Iterable[object],
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Families -> {(sample name, labels): value}, failing on a duplicate series."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in families:
        for s in family.samples:  # type: ignore[attr-defined]
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def value(
    values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    """The value of the one series of `name` whose labels include `labels` (None if none)."""
    found = [v for (n, ls), v in values.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
    return found[0] if found else None


def build_cgroup_tree(
    root: Path, layout: str, cgroup_text: str, host_path: str | None, stats: CgroupStats
) -> None:
    """The host cgroupfs holding the cgroups a /proc/<pid>/cgroup text names."""
    from node_exporter_ml.host.cgroupfs import CgroupPaths
    from node_exporter_ml.host.procfs import parse_cgroup_file

    paths = CgroupPaths.from_lines(parse_cgroup_file(cgroup_text))
    if layout == "v2":
        make_v2_root(root)
        write_cgroup_v2(root / (host_path or paths.unified or "/").lstrip("/"), stats)
        return
    make_v1_root(root, hybrid=layout == "hybrid")
    c = paths.controllers
    write_cgroup_v1(root, {"cpu": c["cpu"], "memory": c["memory"], "blkio": c["blkio"]}, stats)
    if layout == "hybrid" and paths.unified and paths.unified != "/":
        write_psi(root / "unified" / paths.unified.lstrip("/"), stats)
