"""CgroupFS(root): one cgroup's statistics under --path.cgroupfs, v1, v2 or hybrid.

The parse_* helpers are pure. A missing file leaves its field None (its series is
omitted); a missing cgroup directory (the process exited) reads as None.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from node_exporter_ml.host import ParseError
from node_exporter_ml.host.procfs import CgroupLine
from node_exporter_ml.snapshot import CgroupSample, CpuQuota

# cgroup v1 reports "no limit" as the largest page-aligned long (9223372036854771712 on
# 4K-page x86_64); anything this large is no limit.
V1_UNLIMITED = 1 << 62


def parse_flat_keyed(text: str, path: str = "") -> dict[str, int]:
    """Parse a flat-keyed file (`KEY VALUE` lines: cpu.stat, memory.stat, memory.events).

    Raises:
        ParseError: a value is not an integer.
    """
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            values[parts[0]] = int(parts[1])
        except ValueError as err:
            raise ParseError(path, f"{parts[0]}: expected an integer, got {parts[1]!r}") from err
    return values


def parse_int(text: str, path: str = "") -> int:
    """A single-value file holding one integer (cpuacct.usage, memory.current).

    Raises:
        ParseError: the value is not an integer.
    """
    try:
        return int(text.strip())
    except ValueError as err:
        raise ParseError(path, f"expected an integer, got {text.strip()!r}") from err


def parse_limit(text: str, path: str = "") -> int | None:
    """A single-value limit: bytes, or None for `max` (v2) / the v1 "unlimited" value.

    Raises:
        ParseError: the value is neither `max` nor an integer.
    """
    value = text.strip()
    if value == "max":
        return None
    try:
        number = int(value)
    except ValueError as err:
        raise ParseError(path, f"expected an integer or 'max', got {value!r}") from err
    return None if number >= V1_UNLIMITED else number


def parse_cpu_max(text: str, path: str = "cpu.max") -> float | None:
    """The CPU limit in cores from v2 `cpu.max` (`$MAX $PERIOD`); None for `max`.

    Raises:
        ParseError: the file is not `max|QUOTA PERIOD`.
    """
    parts = text.split()
    try:
        if parts[0] == "max":
            return None
        return int(parts[0]) / int(parts[1])
    except (IndexError, ValueError, ZeroDivisionError) as err:
        raise ParseError(path, f"expected 'max|QUOTA PERIOD', got {text.strip()!r}") from err


def parse_cfs_quota(quota: str, period: str, path: str = "cpu.cfs_quota_us") -> float | None:
    """The CPU limit in cores from v1 `cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us`.

    Raises:
        ParseError: either value is not an integer.
    """
    try:
        q, p = int(quota), int(period)
    except ValueError as err:
        got = f"{quota.strip()!r} {period.strip()!r}"
        raise ParseError(path, f"expected integers, got {got}") from err
    return None if q < 0 or p <= 0 else q / p


def parse_pressure(text: str, path: str = "") -> dict[str, float]:
    """PSI totals in seconds: {"some": ..., "full": ...} from `*.pressure` (`total=` usec).

    Raises:
        ParseError: a line has no numeric total.
    """
    totals = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        for f in fields:
            key, _, value = f.partition("=")
            if key == "total":
                try:
                    totals[kind] = int(value) / 1e6
                except ValueError as err:
                    raise ParseError(path, f"{kind}: bad total {value!r}") from err
    return totals


def parse_io_stat(text: str, path: str = "io.stat") -> tuple[int, int]:
    """Bytes read and written, summed over devices, from v2 `io.stat` (nested keyed).

    Raises:
        ParseError: a byte count is not an integer.
    """
    read = written = 0
    for line in text.splitlines():
        for f in line.split()[1:]:
            key, _, value = f.partition("=")
            if key in ("rbytes", "wbytes"):
                try:
                    n = int(value)
                except ValueError as err:
                    raise ParseError(path, f"{key}: expected an integer, got {value!r}") from err
                if key == "rbytes":
                    read += n
                else:
                    written += n
    return read, written


def parse_blkio_bytes(text: str, path: str = "blkio.throttle.io_service_bytes") -> tuple[int, int]:
    """Bytes read and written from v1 `blkio.*io_service_bytes*` (`MAJ:MIN Read N` rows).

    The Sync/Async/Total rows and the final `Total N` repeat the others: not summed.

    Raises:
        ParseError: a count is not an integer.
    """
    read = written = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ("Read", "Write"):
            continue
        try:
            n = int(parts[2])
        except ValueError as err:
            raise ParseError(path, f"expected an integer in {line!r}") from err
        if parts[1] == "Read":
            read += n
        else:
            written += n
    return read, written


@dataclass(frozen=True, slots=True)
class CgroupPaths:
    """Where one process's cgroups are: the v2 path and each v1 controller's path."""

    unified: str | None = None
    controllers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_lines(cls, lines: Sequence[CgroupLine]) -> CgroupPaths:
        """Build from /proc/<pid>/cgroup lines (deleted cgroups are left out)."""
        unified, controllers = None, {}
        for line in lines:
            if line.deleted:
                continue
            if line.hierarchy_id == 0 and not line.controllers:
                unified = line.path
            for c in line.controllers:
                controllers[c] = line.path
        return cls(unified, controllers)


def _relative(path: str) -> tuple[list[str], bool]:
    """Path components, without leading `..` (a private cgroup namespace's view).

    The bool says whether the path was relative to a namespace root we cannot see.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    climbed = False
    while parts and parts[0] == "..":
        parts.pop(0)
        climbed = True
    if ".." in parts:  # never let a path climb out of the root
        raise ValueError(f"cgroup path {path!r} climbs above its root")
    return parts, climbed


class CgroupFS:
    """Reads cgroup statistics below `root` (--path.cgroupfs) on v1, v2 and hybrid hosts."""

    MAX_SEARCH_DIRS = 20_000

    def __init__(self, root: str = "/sys/fs/cgroup") -> None:
        self.root = root
        self.clock_ticks = os.sysconf("SC_CLK_TCK")
        self._v1_dirs: dict[str, str] | None = None
        self._resolved: dict[tuple[str, str], str | None] = {}
        self._layout: tuple[bool, str | None] | None = None

    def _detect(self) -> tuple[bool, str | None]:
        if self._layout is None:
            if os.path.exists(os.path.join(self.root, "cgroup.controllers")):
                self._layout = (True, self.root)
            else:
                hybrid = os.path.join(self.root, "unified")
                found = os.path.exists(os.path.join(hybrid, "cgroup.controllers"))
                self._layout = (False, hybrid if found else None)
        return self._layout

    @property
    def unified_root(self) -> str | None:
        """The v2 hierarchy: the root itself (v2), `unified/` (hybrid), or None (pure v1)."""
        return self._detect()[1]

    @property
    def is_v2(self) -> bool:
        """True on a pure cgroup v2 host (detected once)."""
        return self._detect()[0]

    def v1_dir(self, controller: str) -> str | None:
        """The mount of a v1 controller ("cpu" may live in `cpu,cpuacct`)."""
        if self._v1_dirs is None:
            dirs: dict[str, str] = {}
            try:
                names = sorted(os.listdir(self.root))
            except OSError:
                names = []
            for name in names:
                for c in name.split(","):
                    dirs.setdefault(c, os.path.join(self.root, name))
            self._v1_dirs = dirs
        return self._v1_dirs.get(controller)

    def resolve(self, hierarchy: str, path: str) -> str | None:
        """The directory of `path` in `hierarchy`, or None when it is not there.

        A path seen from a private cgroup namespace starts with `/..`; the rest is found
        by searching the hierarchy (once; the answer is cached).
        """
        key = (hierarchy, path)
        if key in self._resolved:
            found = self._resolved[key]
            if found is None or os.path.isdir(found):
                return found
        try:
            parts, climbed = _relative(path)
        except ValueError:
            return None
        direct = os.path.join(hierarchy, *parts)
        if not climbed:
            return direct if os.path.isdir(direct) else None
        found = self._search(hierarchy, parts) if parts else None
        self._resolved[key] = found
        return found

    def _search(self, hierarchy: str, parts: list[str]) -> str | None:
        queue, seen = deque([hierarchy]), 0
        while queue and seen < self.MAX_SEARCH_DIRS:
            d = queue.popleft()
            seen += 1
            candidate = os.path.join(d, *parts)
            if os.path.isdir(candidate):
                return candidate
            try:
                with os.scandir(d) as entries:
                    queue.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
        return None

    @staticmethod
    def _text(directory: str | None, name: str) -> str | None:
        if directory is None:
            return None
        try:
            fd = os.open(f"{directory}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # absent
            return None
        try:
            chunks = [os.read(fd, 65536)]
            while chunks[-1]:
                chunks.append(os.read(fd, 65536))
        except OSError:  # disabled (PSI off reads EOPNOTSUPP)
            return None
        finally:
            os.close(fd)
        return b"".join(chunks).decode("ascii", "replace")

    def read(self, key: str, paths: CgroupPaths, pids: tuple[int, ...] = ()) -> CgroupSample | None:
        """Statistics of one process's cgroups; None when its cgroup directory is gone.

        Raises:
            ParseError: a statistics file is malformed.
        """
        unified = self.unified_root
        if self.is_v2:
            if paths.unified is None or unified is None:
                return None
            d = self.resolve(unified, paths.unified)
            return None if d is None else self._read_v2(key, d, pids)
        # Hybrid: PSI from the unified hierarchy, unless the process sits at its root there
        # (the root's pressure is the whole host's).
        v2_dir = None
        if unified is not None and paths.unified is not None and paths.unified.strip("/"):
            v2_dir = self.resolve(unified, paths.unified)
        return self._read_v1(key, paths, v2_dir, pids)

    def _pressure(self, d: str | None, values: dict[str, object]) -> None:
        for resource in ("cpu", "memory", "io"):
            text = self._text(d, f"{resource}.pressure")
            if text is None:
                continue
            totals = parse_pressure(text, f"{d}/{resource}.pressure")
            values[f"pressure_{resource}_waiting_seconds_total"] = totals.get("some")
            values[f"pressure_{resource}_stalled_seconds_total"] = totals.get("full")

    def _read_v2(self, key: str, d: str, pids: tuple[int, ...]) -> CgroupSample:
        v: dict[str, object] = {}
        cpu: dict[str, int] = {}
        if (text := self._text(d, "cpu.stat")) is not None:
            cpu = parse_flat_keyed(text, f"{d}/cpu.stat")
            for src, dst in (
                ("usage_usec", "cpu_usage_seconds_total"),
                ("user_usec", "cpu_user_seconds_total"),
                ("system_usec", "cpu_system_seconds_total"),
                ("throttled_usec", "cpu_throttled_seconds_total"),
            ):
                if src in cpu:
                    v[dst] = cpu[src] / 1e6
            v["cpu_periods_total"] = cpu.get("nr_periods")
            v["cpu_throttled_periods_total"] = cpu.get("nr_throttled")
        v["cpu_limit_cores"] = cores = self._v2_cores(d)
        current = None
        if (text := self._text(d, "memory.current")) is not None:
            current = v["memory_current_bytes"] = parse_int(text, f"{d}/memory.current")
        if (text := self._text(d, "memory.max")) is not None:
            v["memory_limit_bytes"] = parse_limit(text, f"{d}/memory.max")
        if (text := self._text(d, "memory.stat")) is not None and current is not None:
            inactive = parse_flat_keyed(text, f"{d}/memory.stat").get("inactive_file")
            if inactive is not None:
                v["memory_working_set_bytes"] = max(0, current - inactive)
        if (text := self._text(d, "memory.events")) is not None:
            v["oom_kills_total"] = parse_flat_keyed(text, f"{d}/memory.events").get("oom_kill")
        if (text := self._text(d, "io.stat")) is not None:
            read, written = parse_io_stat(text, f"{d}/io.stat")
            v["io_read_bytes_total"], v["io_write_bytes_total"] = read, written
        self._pressure(d, v)
        v["cpu_quota"] = self._quota(
            d, self.unified_root, cores, cpu, self._v2_cores, "throttled_usec", 1e-6
        )
        return CgroupSample(path=key, cgroup_version=2, pids=pids, **v)  # type: ignore[arg-type]

    def _v2_cores(self, d: str) -> float | None:
        text = self._text(d, "cpu.max")
        return None if text is None else parse_cpu_max(text, f"{d}/cpu.max")

    def _v1_cores(self, d: str | None) -> float | None:
        quota, period = self._text(d, "cpu.cfs_quota_us"), self._text(d, "cpu.cfs_period_us")
        if quota is None or period is None:
            return None
        return parse_cfs_quota(quota, period, f"{d}/cpu.cfs_quota_us")

    def _quota(
        self,
        d: str | None,
        root: str | None,
        cores: float | None,
        stat: Mapping[str, int],
        cores_of: Callable[[str], float | None],
        throttled_key: str,
        unit: float,
    ) -> CpuQuota | None:
        """The nearest CPU quota from `d` up to (not including) the hierarchy `root`.

        A pod's or a slice's quota limits the containers and services below it, whose own
        cpu.max may say `max` (or be absent, the cpu controller not enabled down there).
        `cores` and `stat` are `d`'s own limit and cpu.stat, already read; an ancestor's
        come from `cores_of` and its cpu.stat. None when `d` is not below `root`;
        CpuQuota(path=None) when nothing on the path has a quota.
        """
        if d is None or root is None:
            return None
        top = os.path.normpath(root)
        here = os.path.normpath(d)
        if os.path.commonpath([top, here]) != top:
            return None
        while here != top:
            if cores is not None:
                throttled = stat.get(throttled_key)
                return CpuQuota(
                    "/" + os.path.relpath(here, top),
                    cores,
                    stat.get("nr_periods"),
                    stat.get("nr_throttled"),
                    None if throttled is None else throttled * unit,
                )
            here = os.path.dirname(here)
            if here != top and (cores := cores_of(here)) is not None:
                stat = parse_flat_keyed(self._text(here, "cpu.stat") or "", f"{here}/cpu.stat")
        return CpuQuota()

    def _v1_path(self, controller: str, paths: CgroupPaths) -> str | None:
        mount, path = self.v1_dir(controller), paths.controllers.get(controller)
        if mount is None or path is None or not path.strip("/"):
            return None  # a controller left at the root: its statistics are the host's
        return self.resolve(mount, path)

    def _read_v1(
        self, key: str, paths: CgroupPaths, v2_dir: str | None, pids: tuple[int, ...]
    ) -> CgroupSample | None:
        cpu, cpuacct = self._v1_path("cpu", paths), self._v1_path("cpuacct", paths)
        memory, blkio = self._v1_path("memory", paths), self._v1_path("blkio", paths)
        if cpu is None and cpuacct is None and memory is None and blkio is None:
            return None
        v: dict[str, object] = {}
        if (text := self._text(cpuacct, "cpuacct.usage")) is not None:
            v["cpu_usage_seconds_total"] = parse_int(text, f"{cpuacct}/cpuacct.usage") / 1e9
        if (text := self._text(cpuacct, "cpuacct.stat")) is not None:
            ticks = parse_flat_keyed(text, f"{cpuacct}/cpuacct.stat")
            if "user" in ticks:
                v["cpu_user_seconds_total"] = ticks["user"] / self.clock_ticks
            if "system" in ticks:
                v["cpu_system_seconds_total"] = ticks["system"] / self.clock_ticks
        cpu_stat: dict[str, int] = {}
        if (text := self._text(cpu, "cpu.stat")) is not None:
            stat = cpu_stat = parse_flat_keyed(text, f"{cpu}/cpu.stat")
            v["cpu_periods_total"] = stat.get("nr_periods")
            v["cpu_throttled_periods_total"] = stat.get("nr_throttled")
            if "throttled_time" in stat:
                v["cpu_throttled_seconds_total"] = stat["throttled_time"] / 1e9
        v["cpu_limit_cores"] = cores = self._v1_cores(cpu)
        current = None
        if (text := self._text(memory, "memory.usage_in_bytes")) is not None:
            current = v["memory_current_bytes"] = parse_int(text, f"{memory}/memory.usage_in_bytes")
        if (text := self._text(memory, "memory.limit_in_bytes")) is not None:
            v["memory_limit_bytes"] = parse_limit(text, f"{memory}/memory.limit_in_bytes")
        if (text := self._text(memory, "memory.stat")) is not None and current is not None:
            stat = parse_flat_keyed(text, f"{memory}/memory.stat")
            inactive = stat.get("total_inactive_file", stat.get("inactive_file"))
            if inactive is not None:
                v["memory_working_set_bytes"] = max(0, current - inactive)
        if (text := self._text(memory, "memory.oom_control")) is not None:
            v["oom_kills_total"] = parse_flat_keyed(text, f"{memory}/memory.oom_control").get(
                "oom_kill"
            )
        for name in (
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
            "blkio.io_service_bytes_recursive",
        ):
            if (text := self._text(blkio, name)) is not None:
                v["io_read_bytes_total"], v["io_write_bytes_total"] = parse_blkio_bytes(
                    text, f"{blkio}/{name}"
                )
                break
        self._pressure(v2_dir, v)
        v["cpu_quota"] = self._quota(
            cpu, self.v1_dir("cpu"), cores, cpu_stat, self._v1_cores, "throttled_time", 1e-9
        )
        return CgroupSample(path=key, cgroup_version=1, pids=pids, **v)  # type: ignore[arg-type]
