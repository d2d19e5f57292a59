"""Boundaries of host/cgroupfs.py that mutation testing found untested (issue 19).

cgroup v1 memory.stat (kernel Documentation/admin-guide/cgroup-v1/memory.rst, 5.2): each
counter is the cgroup's OWN, and `total_<counter>` is "the hierarchical version of
<counter>, which in addition to the cgroup's own value includes the sum of all hierarchical
children's values". memory.usage_in_bytes of a hierarchical cgroup is charged by its
children too. So the working set of a cgroup with children (a pod-level cgroup, whose pages
are charged in its container cgroups) is usage - total_inactive_file, as cAdvisor computes
it; its own inactive_file is about 0.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from node_exporter_ml.host import ParseError
from node_exporter_ml.host.cgroupfs import (
    CgroupFS,
    CgroupPaths,
    _relative,
    parse_blkio_bytes,
    parse_cfs_quota,
    parse_cpu_max,
    parse_flat_keyed,
    parse_int,
    parse_io_stat,
    parse_limit,
    parse_pressure,
)
from node_exporter_ml.host.procfs import parse_cgroup_file
from node_exporter_ml.snapshot import CpuQuota
from tools.host_trees import (
    CgroupStats,
    make_v1_root,
    make_v2_root,
    v1_cgroup_file,
    write_cgroup_v1,
    write_cgroup_v2,
    write_psi,
)

GIB = 1 << 30
POD = "/kubepods/burstable/pod0e2d0f43-5b7c-4a3e-9f6a-2b1c3d4e5f60"


def _read_pod_v1(root: Path, memory_stat: str, usage: int) -> object:
    make_v1_root(root, hybrid=False)
    write_cgroup_v1(root, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    (root / "memory" / POD.lstrip("/") / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (root / "memory" / POD.lstrip("/") / "memory.stat").write_text(memory_stat)
    paths = CgroupPaths.from_lines(parse_cgroup_file(v1_cgroup_file(POD)))
    sample = CgroupFS(str(root)).read(POD, paths)
    assert sample is not None
    return sample


def test_v1_pod_cgroup_working_set_uses_the_hierarchical_inactive_file(tmp_path: Path) -> None:
    # A pod cgroup holding two containers: 3 GiB charged in all, 1 GiB of it inactive page
    # cache in the children, none in the pod cgroup itself (the kernel's own order of lines).
    stat = (
        "cache 0\nrss 0\nmapped_file 0\ninactive_anon 0\nactive_anon 0\n"
        "inactive_file 0\nactive_file 0\nunevictable 0\n"
        f"hierarchical_memory_limit {8 * GIB}\n"
        f"total_cache {2 * GIB}\ntotal_rss {GIB}\ntotal_inactive_anon 0\n"
        f"total_active_anon {GIB}\ntotal_inactive_file {GIB}\ntotal_active_file {GIB}\n"
    )
    sample = _read_pod_v1(tmp_path, stat, usage=3 * GIB)
    # 3 GiB - 1 GiB of the children's inactive file pages = 2 GiB (not 3 - 0)
    assert sample.memory_working_set_bytes == 2 * GIB  # type: ignore[attr-defined]


def test_v1_memory_stat_without_hierarchical_lines_uses_its_own(tmp_path: Path) -> None:
    # a memory.stat with no total_* lines (not what a kernel writes, but what a hand-made
    # tree may hold): the cgroup's own inactive_file is the best there is
    sample = _read_pod_v1(tmp_path, f"cache {GIB}\ninactive_file {GIB // 4}\n", usage=GIB)
    assert sample.memory_working_set_bytes == GIB - GIB // 4  # type: ignore[attr-defined]


def test_v1_working_set_clamped_at_zero(tmp_path: Path) -> None:
    # usage read a moment before memory.stat: inactive can exceed it; clamped at 0 as cAdvisor
    sample = _read_pod_v1(tmp_path, "total_inactive_file 5000\n", usage=4096)
    assert sample.memory_working_set_bytes == 0  # type: ignore[attr-defined]


# --- v2: every field, and the file a malformed value is reported in -------------------------


def test_v2_cpu_seconds_are_microseconds_exactly(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    write_cgroup_v2(tmp_path / "a", CgroupStats())
    sample = CgroupFS(str(tmp_path)).read("/a", CgroupPaths(unified="/a"))
    assert sample is not None
    # cpu.stat is in microseconds (cgroup-v2.rst): 812400000 usec = 812.4 s, and so on
    assert sample.cpu_usage_seconds_total == 812.4
    assert sample.cpu_user_seconds_total == 700.0
    assert sample.cpu_system_seconds_total == 112.4
    assert sample.cpu_throttled_seconds_total == 3.1


def test_v2_working_set_needs_memory_current(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    write_cgroup_v2(tmp_path / "a", CgroupStats())
    (tmp_path / "a" / "memory.current").unlink()
    sample = CgroupFS(str(tmp_path)).read("/a", CgroupPaths(unified="/a"))
    assert sample is not None
    assert sample.memory_current_bytes is None
    assert sample.memory_working_set_bytes is None  # memory.stat alone gives no working set


V2_FILES = [
    "cpu.stat",
    "cpu.max",
    "memory.current",
    "memory.max",
    "memory.stat",
    "memory.events",
    "io.stat",
    "cpu.pressure",
    "memory.pressure",
    "io.pressure",
]
# each file's own format with a value that is not a number
GARBAGE = {
    "cpu.stat": "usage_usec lots\n",
    "cpu.max": "lots 100000\n",
    "memory.current": "lots\n",
    "memory.max": "lots\n",
    "memory.stat": "inactive_file lots\n",
    "memory.events": "oom_kill lots\n",
    "io.stat": "8:0 rbytes=lots wbytes=0\n",
    "cpu.pressure": "some avg10=0.00 total=lots\n",
    "memory.pressure": "some avg10=0.00 total=lots\n",
    "io.pressure": "some avg10=0.00 total=lots\n",
}


@pytest.mark.parametrize("name", V2_FILES)
def test_v2_malformed_file_is_named_in_the_error(tmp_path: Path, name: str) -> None:
    make_v2_root(tmp_path)
    write_cgroup_v2(tmp_path / "a", CgroupStats())
    (tmp_path / "a" / name).write_text(GARBAGE[name])
    with pytest.raises(ParseError) as caught:
        CgroupFS(str(tmp_path)).read("/a", CgroupPaths(unified="/a"))
    assert caught.value.path == f"{tmp_path}/a/{name}"
    assert "lots" in caught.value.detail


V1_FILES = {
    "cpuacct.usage": ("cpu,cpuacct", "lots\n"),
    "cpuacct.stat": ("cpu,cpuacct", "user lots\n"),
    "cpu.stat": ("cpu", "nr_periods lots\n"),  # `cpu` is a link to cpu,cpuacct
    "cpu.cfs_quota_us": ("cpu", "lots\n"),
    "memory.usage_in_bytes": ("memory", "lots\n"),
    "memory.limit_in_bytes": ("memory", "lots\n"),
    "memory.stat": ("memory", "total_inactive_file lots\n"),
    "memory.oom_control": ("memory", "oom_kill lots\n"),
    "blkio.throttle.io_service_bytes_recursive": ("blkio", "8:0 Read lots\n"),
}


@pytest.mark.parametrize("name", list(V1_FILES))
def test_v1_malformed_file_is_named_in_the_error(tmp_path: Path, name: str) -> None:
    make_v1_root(tmp_path, hybrid=False)
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    mount, text = V1_FILES[name]
    (tmp_path / mount / POD.lstrip("/") / name).write_text(text)
    paths = CgroupPaths.from_lines(parse_cgroup_file(v1_cgroup_file(POD)))
    with pytest.raises(ParseError) as caught:
        CgroupFS(str(tmp_path)).read(POD, paths)
    assert caught.value.path == f"{tmp_path}/{mount}{POD}/{name}"
    assert "lots" in caught.value.detail


def test_hybrid_pressure_file_is_named_in_the_error(tmp_path: Path) -> None:
    make_v1_root(tmp_path, hybrid=True)
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    write_psi(tmp_path / "unified" / POD.lstrip("/"), CgroupStats())
    (tmp_path / "unified" / POD.lstrip("/") / "io.pressure").write_text("some total=lots\n")
    text = v1_cgroup_file(POD, unified=POD)
    with pytest.raises(ParseError) as caught:
        CgroupFS(str(tmp_path)).read(POD, CgroupPaths.from_lines(parse_cgroup_file(text)))
    assert caught.value.path == f"{tmp_path}/unified{POD}/io.pressure"


# --- the search for a cgroup seen from a private namespace ----------------------------------


def _chain(root: Path) -> None:
    """root/a/b/c, with the wanted directory `x` only under root/a/b (the third visited)."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "x").mkdir()


@pytest.mark.parametrize(("limit", "found"), [(3, True), (2, False)], ids=["at", "below"])
def test_search_visits_at_most_max_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int, found: bool
) -> None:
    # breadth first: root (1), a (2), a/b (3) holds x: found with a budget of 3, not of 2
    _chain(tmp_path)
    monkeypatch.setattr(CgroupFS, "MAX_SEARCH_DIRS", limit)
    got = CgroupFS(str(tmp_path)).resolve(str(tmp_path), "/../x")
    assert got == (str(tmp_path / "a" / "b" / "x") if found else None)


def test_search_does_not_follow_symlinks(tmp_path: Path) -> None:
    (tmp_path / "cg").mkdir()
    (tmp_path / "elsewhere" / "x").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", tmp_path / "cg" / "link")
    assert CgroupFS(str(tmp_path / "cg")).resolve(str(tmp_path / "cg"), "/../x") is None


def test_search_goes_on_past_an_unreadable_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # root/dead vanishes between being queued and being listed; root/a/b/x is still found
    _chain(tmp_path)
    (tmp_path / "dead").mkdir()
    real_scandir = os.scandir

    def scandir(path: str):  # type: ignore[no-untyped-def]
        if path == str(tmp_path / "dead"):
            raise FileNotFoundError(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    got = CgroupFS(str(tmp_path)).resolve(str(tmp_path), "/../x")
    assert got == str(tmp_path / "a" / "b" / "x")


# --- the parsers alone: the file a caller did not name, and what the detail says ------------


@pytest.mark.parametrize(
    ("parse", "default_path", "detail"),
    [
        (
            lambda: parse_flat_keyed("nr_periods x1\n"),
            "",
            "nr_periods: expected an integer, got 'x1'",
        ),
        (lambda: parse_int(" x1 \n"), "", "expected an integer, got 'x1'"),
        (lambda: parse_limit("x1\n"), "", "expected an integer or 'max', got 'x1'"),
        (
            lambda: parse_cpu_max("x1 100000\n"),
            "cpu.max",
            "expected 'max|QUOTA PERIOD', got 'x1 100000'",
        ),
        (
            lambda: parse_cfs_quota("x1\n", "100000\n"),
            "cpu.cfs_quota_us",
            "expected integers, got 'x1' '100000'",
        ),
        (lambda: parse_pressure("some avg10=0.00 total=x1\n"), "", "some: bad total 'x1'"),
        (
            lambda: parse_io_stat("8:0 rbytes=x1\n"),
            "io.stat",
            "rbytes: expected an integer, got 'x1'",
        ),
        (
            lambda: parse_blkio_bytes("8:0 Read x1\n"),
            "blkio.throttle.io_service_bytes",
            "expected an integer in '8:0 Read x1'",
        ),
    ],
    ids=["flat keyed", "int", "limit", "cpu.max", "cfs quota", "pressure", "io.stat", "blkio"],
)
def test_parse_error_names_file_and_value(parse, default_path: str, detail: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError) as caught:
        parse()
    assert (caught.value.path, caught.value.detail) == (default_path, detail)


def test_io_stat_keys_split_at_the_first_equals() -> None:
    # nested keyed: KEY=VALUE fields; a value holding "=" is not a byte count, so the key
    # before the first "=" decides (rbytes=1=2 is a malformed rbytes, not a key "rbytes=1")
    with pytest.raises(ParseError):
        parse_io_stat("8:0 rbytes=1=2 wbytes=0\n")


# --- second pass (issue 19): v1 units exactly, the sample's identity, blkio's fallbacks ------


def _read_v1(root: Path, pids: tuple[int, ...] = (415, 416)) -> object:
    make_v1_root(root, hybrid=False)
    write_cgroup_v1(root, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    paths = CgroupPaths.from_lines(parse_cgroup_file(v1_cgroup_file(POD)))
    return CgroupFS(str(root)).read(POD, paths, pids)


def test_v1_cpu_seconds_are_the_kernels_units_exactly(tmp_path: Path) -> None:
    sample = _read_v1(tmp_path)
    # cpuacct.usage and cpu.stat's throttled_time are nanoseconds; cpuacct.stat is in
    # USER_HZ ticks, 100 a second on Linux (cgroup-v1/cpuacct.rst, proc(5))
    assert sample.cpu_usage_seconds_total == 812.4  # type: ignore[attr-defined]
    assert sample.cpu_user_seconds_total == 700.0  # type: ignore[attr-defined]
    assert sample.cpu_system_seconds_total == 112.4  # type: ignore[attr-defined]
    assert sample.cpu_throttled_seconds_total == 3.1  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", [1, 2])
def test_the_sample_carries_its_key_and_pids(tmp_path: Path, version: int) -> None:
    if version == 1:
        sample = _read_v1(tmp_path, (415, 416))
    else:
        make_v2_root(tmp_path)
        write_cgroup_v2(tmp_path / "a", CgroupStats())
        sample = CgroupFS(str(tmp_path)).read("/a", CgroupPaths(unified="/a"), (415, 416))
    assert sample is not None
    assert sample.cgroup_version == version  # type: ignore[attr-defined]
    assert sample.path == (POD if version == 1 else "/a")  # type: ignore[attr-defined]
    assert sample.pids == (415, 416)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name", ["blkio.throttle.io_service_bytes", "blkio.io_service_bytes_recursive"]
)
def test_v1_blkio_falls_back_to_the_other_files(tmp_path: Path, name: str) -> None:
    # Kernels and cgroup drivers differ in which io_service_bytes files they offer: the
    # bytes are read from the first one present.
    make_v1_root(tmp_path, hybrid=False)
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    blkio = tmp_path / "blkio" / POD.lstrip("/")
    (blkio / "blkio.throttle.io_service_bytes_recursive").rename(blkio / name)
    paths = CgroupPaths.from_lines(parse_cgroup_file(v1_cgroup_file(POD)))
    sample = CgroupFS(str(tmp_path)).read(POD, paths)
    assert sample is not None
    assert sample.io_read_bytes_total == 1_459_200 + 40_960
    assert sample.io_write_bytes_total == 314_773_504


def test_v1_cpuacct_stat_without_system_ticks(tmp_path: Path) -> None:
    make_v1_root(tmp_path, hybrid=False)
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    (tmp_path / "cpu,cpuacct" / POD.lstrip("/") / "cpuacct.stat").write_text("user 5\n")
    paths = CgroupPaths.from_lines(parse_cgroup_file(v1_cgroup_file(POD)))
    sample = CgroupFS(str(tmp_path)).read(POD, paths)
    assert sample is not None
    assert sample.cpu_user_seconds_total == 0.05
    assert sample.cpu_system_seconds_total is None


def test_default_root_is_the_hosts_cgroup_mount() -> None:
    assert CgroupFS().root == "/sys/fs/cgroup"


def test_pure_v1_host_has_no_unified_hierarchy(tmp_path: Path) -> None:
    make_v1_root(tmp_path, hybrid=False)
    fs = CgroupFS(str(tmp_path))
    assert fs.unified_root is None
    assert fs.is_v2 is False
    make_v1_root(tmp_path / "h", hybrid=True)
    assert CgroupFS(str(tmp_path / "h")).unified_root == str(tmp_path / "h" / "unified")


def test_a_climbing_path_not_found_stays_not_found(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    fs = CgroupFS(str(tmp_path))
    # seen from a private cgroup namespace: searched for, not found, and the answer cached
    assert fs.resolve(str(tmp_path), "/../../gone.scope") is None
    assert fs.resolve(str(tmp_path), "/../../gone.scope") is None
    # a path that climbs and names nothing below is no cgroup, not the hierarchy's root
    assert fs.resolve(str(tmp_path), "/..") is None


# --- third pass (issue 19): the CPU quota over a cgroup, its own or its nearest ancestor's ---
#
# cgroup v2 cpu.max is "$MAX $PERIOD" ("max 100000": no limit); v1 cpu.cfs_quota_us is -1 for
# none, with cpu.cfs_period_us (cgroups-and-pods.md). A container's own cpu.max often says
# max while its pod's says 50000 100000: the pod's quota is what throttles it. In every tree
# below one cgroup on the path is limited, or the nearest limit is also the tightest.

CONTAINER = POD + "/cri-containerd-4f1c.scope"
# the pod's cpu.stat: 300 periods, 95 throttled, 9.5 s throttled
POD_STATS = CgroupStats(quota_us=50_000, nr_periods=300, nr_throttled=95, throttled_usec=9_500_000)
FREE = CgroupStats(quota_us=None, nr_periods=7, nr_throttled=0, throttled_usec=0)


def _q(q: CpuQuota | None) -> CpuQuota | None:
    """`q` with its throttled seconds rounded to the nanosecond (3100000 * 1e-6 is not 3.1)."""
    if q is None or q.throttled_seconds_total is None:
        return q
    return replace(q, throttled_seconds_total=round(q.throttled_seconds_total, 9))


def _v2_tree(root: Path) -> None:
    """kubepods (no limit) / pod (0.5 core) / container (no limit of its own)."""
    make_v2_root(root)
    write_cgroup_v2(root / "kubepods", FREE)
    write_cgroup_v2(root / "kubepods" / "burstable", FREE)
    write_cgroup_v2(root / POD.lstrip("/"), POD_STATS)
    write_cgroup_v2(root / CONTAINER.lstrip("/"), FREE)


def _read_v2_at(root: Path, path: str) -> object:
    sample = CgroupFS(str(root)).read(path, CgroupPaths(unified=path))
    assert sample is not None
    return sample


def test_v2_own_quota_with_its_own_counters(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    write_cgroup_v2(tmp_path / "a", CgroupStats())  # cpu.max "200000 100000"
    q = _read_v2_at(tmp_path, "/a").cpu_quota  # type: ignore[attr-defined]
    # 200000/100000 = 2 cores; 9000 periods, 1234 throttled, 3100000 usec = 3.1 s
    assert _q(q) == CpuQuota("/a", 2.0, 9_000, 1_234, 3.1)


def test_v2_pod_quota_limits_its_container(tmp_path: Path) -> None:
    _v2_tree(tmp_path)
    sample = _read_v2_at(tmp_path, CONTAINER)
    assert sample.cpu_limit_cores is None  # type: ignore[attr-defined]
    # the pod's 50000/100000 = 0.5 core and the pod's own cpu.stat, not the container's
    assert _q(sample.cpu_quota) == CpuQuota(POD, 0.5, 300, 95, 9.5)  # type: ignore[attr-defined]
    assert sample.cpu_periods_total == 7  # type: ignore[attr-defined]


def test_v2_no_quota_on_the_path(tmp_path: Path) -> None:
    _v2_tree(tmp_path)
    (tmp_path / POD.lstrip("/") / "cpu.max").write_text("max 100000\n")
    assert _read_v2_at(tmp_path, CONTAINER).cpu_quota == CpuQuota()  # type: ignore[attr-defined]


def test_v2_limited_ancestor_without_cpu_stat(tmp_path: Path) -> None:
    _v2_tree(tmp_path)
    (tmp_path / POD.lstrip("/") / "cpu.stat").unlink()
    q = _read_v2_at(tmp_path, CONTAINER).cpu_quota  # type: ignore[attr-defined]
    assert _q(q) == CpuQuota(POD, 0.5, None, None, None)


def test_v2_quota_without_cpu_stat(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    write_cgroup_v2(tmp_path / "a", CgroupStats(quota_us=150_000))
    (tmp_path / "a" / "cpu.stat").unlink()
    q = _read_v2_at(tmp_path, "/a").cpu_quota  # type: ignore[attr-defined]
    assert _q(q) == CpuQuota("/a", 1.5, None, None, None)


def test_v2_malformed_ancestor_cpu_stat_is_named(tmp_path: Path) -> None:
    _v2_tree(tmp_path)
    (tmp_path / POD.lstrip("/") / "cpu.stat").write_text("nr_periods lots\n")
    with pytest.raises(ParseError) as caught:
        CgroupFS(str(tmp_path)).read(CONTAINER, CgroupPaths(unified=CONTAINER))
    assert caught.value.path == f"{tmp_path}{POD}/cpu.stat"


def _v1_tree(root: Path, pod: CgroupStats = POD_STATS) -> CgroupPaths:
    make_v1_root(root, hybrid=False)
    for path, stats in (("/kubepods", FREE), (POD, pod), (CONTAINER, FREE)):
        write_cgroup_v1(root, {"cpu": path, "memory": path, "blkio": path}, stats)
    return CgroupPaths.from_lines(parse_cgroup_file(v1_cgroup_file(CONTAINER)))


def test_v1_own_quota_with_its_own_counters(tmp_path: Path) -> None:
    q = _read_v1(tmp_path).cpu_quota  # type: ignore[attr-defined]
    # cfs 200000/100000 = 2 cores; throttled_time 3100000000 ns = 3.1 s
    assert _q(q) == CpuQuota(POD, 2.0, 9_000, 1_234, 3.1)


def test_v1_pod_quota_limits_its_container(tmp_path: Path) -> None:
    paths = _v1_tree(tmp_path)
    sample = CgroupFS(str(tmp_path)).read(CONTAINER, paths)
    assert sample is not None
    assert sample.cpu_limit_cores is None  # the container's cfs_quota_us is -1
    assert _q(sample.cpu_quota) == CpuQuota(POD, 0.5, 300, 95, 9.5)


def test_v1_no_quota_on_the_path(tmp_path: Path) -> None:
    paths = _v1_tree(tmp_path, FREE)
    sample = CgroupFS(str(tmp_path)).read(CONTAINER, paths)
    assert sample is not None
    assert _q(sample.cpu_quota) == CpuQuota()


def test_v1_quota_without_cpu_stat(tmp_path: Path) -> None:
    make_v1_root(tmp_path, hybrid=False)
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    (tmp_path / "cpu,cpuacct" / POD.lstrip("/") / "cpu.stat").unlink()
    paths = CgroupPaths.from_lines(parse_cgroup_file(v1_cgroup_file(POD)))
    sample = CgroupFS(str(tmp_path)).read(POD, paths)
    assert sample is not None
    assert _q(sample.cpu_quota) == CpuQuota(POD, 2.0, None, None, None)


@pytest.mark.parametrize("gone", ["cpu.cfs_quota_us", "cpu.cfs_period_us"])
def test_v1_cores_need_both_cfs_files(tmp_path: Path, gone: str) -> None:
    make_v1_root(tmp_path, hybrid=False)
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    (tmp_path / "cpu,cpuacct" / POD.lstrip("/") / gone).unlink()
    paths = CgroupPaths.from_lines(parse_cgroup_file(v1_cgroup_file(POD)))
    sample = CgroupFS(str(tmp_path)).read(POD, paths)
    assert sample is not None
    assert sample.cpu_limit_cores is None
    assert _q(sample.cpu_quota) == CpuQuota()  # no limit readable on the path


@pytest.mark.parametrize(
    ("quota", "period", "cores"),
    [
        ("-1", "100000", None),
        ("50000", "100000", 0.5),
        ("250000", "100000", 2.5),
        ("50000", "0", None),
    ],
    ids=["none", "half", "two and a half", "zero period"],
)
def test_parse_cfs_quota_boundaries(quota: str, period: str, cores: float | None) -> None:
    assert parse_cfs_quota(quota, period) == cores


def test_v1_unlimited_starts_at_two_to_the_62() -> None:
    # V1_UNLIMITED (1 << 62) itself is already "no limit"; one byte less is a limit
    assert parse_limit(f"{1 << 62}\n") is None
    assert parse_limit(f"{(1 << 62) - 1}\n") == (1 << 62) - 1


# --- third pass: v1 controllers one at a time, a missing usage file, PSI, the layout --------


@pytest.mark.parametrize("controller", ["cpu", "cpuacct", "memory", "blkio"])
def test_v1_one_controller_below_the_root_is_enough(tmp_path: Path, controller: str) -> None:
    # every other controller left at the root (or not in /proc/<pid>/cgroup): still a sample
    make_v1_root(tmp_path, hybrid=False)
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    others = {c: "/" for c in ("cpu", "cpuacct", "memory") if c != controller}
    sample = CgroupFS(str(tmp_path)).read(POD, CgroupPaths(controllers={controller: POD, **others}))
    assert sample is not None


def test_v1_working_set_needs_usage_in_bytes(tmp_path: Path) -> None:
    make_v1_root(tmp_path, hybrid=False)
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    (tmp_path / "memory" / POD.lstrip("/") / "memory.usage_in_bytes").unlink()
    paths = CgroupPaths.from_lines(parse_cgroup_file(v1_cgroup_file(POD)))
    sample = CgroupFS(str(tmp_path)).read(POD, paths)
    assert sample is not None
    assert sample.memory_current_bytes is None
    assert sample.memory_working_set_bytes is None


def test_v2_memory_pressure_read_without_cpu_pressure(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    write_cgroup_v2(tmp_path / "a", CgroupStats())
    (tmp_path / "a" / "cpu.pressure").unlink()
    sample = _read_v2_at(tmp_path, "/a")
    assert sample.pressure_cpu_waiting_seconds_total is None  # type: ignore[attr-defined]
    # memory.pressure total=250000 usec = 0.25 s, io total=7500000 usec = 7.5 s
    assert sample.pressure_memory_waiting_seconds_total == 0.25  # type: ignore[attr-defined]
    assert sample.pressure_io_waiting_seconds_total == 7.5  # type: ignore[attr-defined]


def test_pressure_total_splits_at_the_first_equals() -> None:
    with pytest.raises(ParseError):
        parse_pressure("some avg10=0.00 total=1=2\n")


def test_an_empty_unified_directory_is_no_hybrid_hierarchy(tmp_path: Path) -> None:
    # /sys/fs/cgroup/unified present but nothing mounted on it: no cgroup.controllers there
    make_v1_root(tmp_path, hybrid=False)
    (tmp_path / "unified").mkdir()
    assert CgroupFS(str(tmp_path)).unified_root is None


def test_v1_dir_of_a_root_that_cannot_be_listed(tmp_path: Path) -> None:
    assert CgroupFS(str(tmp_path / "absent")).v1_dir("cpu") is None


def test_a_non_ascii_byte_is_replaced_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"nr_periods 5\n\xff 1\n")
    assert CgroupFS._text(str(tmp_path), "f") == "nr_periods 5\n\ufffd 1\n"


def test_a_path_that_does_not_climb_is_not_searched_for(tmp_path: Path) -> None:
    # "/x" names root/x only; an x deeper down is another cgroup
    _chain(tmp_path)
    fs = CgroupFS(str(tmp_path))
    assert fs.resolve(str(tmp_path), "/x") is None
    assert fs.resolve(str(tmp_path), "/a/../a/b/x") is None  # ".." inside a path: refused
    assert fs.resolve(str(tmp_path), "/a/./b/x") == str(tmp_path / "a" / "b" / "x")


def test_a_climbing_path_is_refused_with_its_reason() -> None:
    with pytest.raises(ValueError, match="climbs above its root"):
        _relative("/a/../../b")


def test_a_deleted_cgroup_line_is_skipped_not_the_end() -> None:
    # the first line's cgroup was removed; the lines after it still count
    text = "12:pids:/gone (deleted)\n" + v1_cgroup_file(POD, unified=POD).split("\n", 1)[1]
    paths = CgroupPaths.from_lines(parse_cgroup_file(text))
    assert paths.unified == POD
    assert paths.controllers["memory"] == POD
    assert "pids" not in paths.controllers
