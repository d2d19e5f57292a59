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

from pathlib import Path

from node_exporter_ml.host.cgroupfs import CgroupFS, CgroupPaths
from node_exporter_ml.host.procfs import parse_cgroup_file
from tests.host_trees import CgroupStats, make_v1_root, v1_cgroup_file, write_cgroup_v1

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
