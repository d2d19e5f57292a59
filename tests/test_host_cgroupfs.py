"""cgroupfs parsers (tables) and CgroupFS over v1, v2 and hybrid fixture trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_exporter_ml.host import ParseError
from node_exporter_ml.host.cgroupfs import (
    CgroupFS,
    CgroupPaths,
    parse_blkio_bytes,
    parse_cfs_quota,
    parse_cpu_max,
    parse_flat_keyed,
    parse_io_stat,
    parse_limit,
    parse_pressure,
)
from node_exporter_ml.host.procfs import parse_cgroup_file
from tools.host_trees import (
    CgroupStats,
    make_v1_root,
    make_v2_root,
    v1_cgroup_file,
    write_cgroup_v1,
    write_cgroup_v2,
    write_psi,
)


@pytest.mark.parametrize(
    ("text", "cores"),
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("50000 100000", 0.5)],
    ids=["unlimited", "two cores", "half a core"],
)
def test_parse_cpu_max(text: str, cores: float | None) -> None:
    assert parse_cpu_max(text) == cores


@pytest.mark.parametrize(
    "text", ["", "lots 100000", "100000 0"], ids=["empty", "word", "zero period"]
)
def test_parse_cpu_max_rejects(text: str) -> None:
    with pytest.raises(ParseError, match=r"cpu\.max"):
        parse_cpu_max(text)


@pytest.mark.parametrize(
    ("quota", "period", "cores"),
    [("-1", "100000", None), ("150000", "100000", 1.5)],
    ids=["v1 no quota", "v1 one and a half"],
)
def test_parse_cfs_quota(quota: str, period: str, cores: float | None) -> None:
    assert parse_cfs_quota(quota, period) == cores


@pytest.mark.parametrize(
    ("text", "value"),
    [("max\n", None), ("8589934592\n", 8_589_934_592), ("9223372036854771712\n", None)],
    ids=["v2 max", "bytes", "v1 unlimited"],
)
def test_parse_limit(text: str, value: int | None) -> None:
    assert parse_limit(text) == value


def test_parse_flat_keyed_ignores_odd_lines_and_rejects_bad_numbers() -> None:
    assert parse_flat_keyed("usage_usec 10\n\nweird line here\nnr_periods 3\n") == {
        "usage_usec": 10,
        "nr_periods": 3,
    }
    with pytest.raises(ParseError, match="usage_usec"):
        parse_flat_keyed("usage_usec ten\n", "cpu.stat")


def test_parse_pressure() -> None:
    text = (
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n"
    )
    assert parse_pressure(text) == {"some": 2.5, "full": 0.5}
    assert parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n") == {"some": 7e-6}
    with pytest.raises(ParseError):
        parse_pressure("some total=x\n")


def test_parse_io_stat_sums_devices() -> None:
    text = (
        "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n"
        "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n"
    )
    assert parse_io_stat(text) == (1_459_300, 314_773_704)
    assert parse_io_stat("") == (0, 0)


def test_parse_blkio_bytes_skips_total_sync_async() -> None:
    text = "8:0 Read 100\n8:0 Write 200\n8:0 Sync 300\n8:0 Async 0\n8:0 Total 300\nTotal 300\n"
    assert parse_blkio_bytes(text) == (100, 200)


def _expect(sample, s: CgroupStats) -> None:  # type: ignore[no-untyped-def]
    assert sample.cpu_usage_seconds_total == pytest.approx(s.usage_usec / 1e6)
    assert sample.cpu_throttled_seconds_total == pytest.approx(s.throttled_usec / 1e6)
    assert sample.cpu_periods_total == s.nr_periods
    assert sample.cpu_throttled_periods_total == s.nr_throttled
    assert sample.cpu_limit_cores == (None if s.quota_us is None else s.quota_us / s.period_us)
    assert sample.memory_current_bytes == s.memory_current
    assert sample.memory_working_set_bytes == s.memory_current - s.inactive_file
    assert sample.memory_limit_bytes == s.memory_max
    assert sample.oom_kills_total == s.oom_kill
    assert (sample.io_read_bytes_total, sample.io_write_bytes_total) == (
        sum(s.rbytes),
        sum(s.wbytes),
    )


POD = "/kubepods/burstable/pod0e2d0f43-5b7c-4a3e-9f6a-2b1c3d4e5f60/" + "ab" * 32


def test_v2_cgroup(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    stats = CgroupStats()
    write_cgroup_v2(tmp_path / POD.lstrip("/"), stats)
    fs = CgroupFS(str(tmp_path))
    sample = fs.read(POD, CgroupPaths.from_lines(parse_cgroup_file(f"0::{POD}\n")), (415,))
    assert sample is not None
    assert sample.cgroup_version == 2
    assert sample.pids == (415,)
    _expect(sample, stats)
    assert sample.cpu_user_seconds_total == pytest.approx(700.0)
    assert sample.pressure_cpu_waiting_seconds_total == pytest.approx(5.0)
    assert sample.pressure_cpu_stalled_seconds_total == pytest.approx(1.0)
    assert sample.pressure_memory_stalled_seconds_total == pytest.approx(0.125)
    assert sample.pressure_io_waiting_seconds_total == pytest.approx(7.5)


def test_v2_unlimited_and_missing_files(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    stats = CgroupStats(quota_us=None, memory_max=None, psi_files=False)
    d = tmp_path / POD.lstrip("/")
    write_cgroup_v2(d, stats)
    (d / "io.stat").unlink()
    (d / "memory.events").unlink()
    sample = CgroupFS(str(tmp_path)).read(POD, CgroupPaths(unified=POD))
    assert sample is not None
    assert sample.cpu_limit_cores is None
    assert sample.memory_limit_bytes is None
    assert sample.io_read_bytes_total is None
    assert sample.oom_kills_total is None
    assert sample.pressure_cpu_waiting_seconds_total is None
    assert sample.memory_working_set_bytes == stats.memory_current - stats.inactive_file


def test_v2_working_set_clamped_at_zero(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    write_cgroup_v2(tmp_path / "a", CgroupStats(memory_current=100, inactive_file=10))
    (tmp_path / "a" / "memory.current").write_text("5\n")
    sample = CgroupFS(str(tmp_path)).read("/a", CgroupPaths(unified="/a"))
    assert sample is not None
    assert sample.memory_working_set_bytes == 0


def test_v2_malformed_file_raises(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    write_cgroup_v2(tmp_path / "a", CgroupStats())
    (tmp_path / "a" / "cpu.max").write_text("lots\n")
    with pytest.raises(ParseError, match=r"cpu\.max"):
        CgroupFS(str(tmp_path)).read("/a", CgroupPaths(unified="/a"))


def test_gone_cgroup_reads_none(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    assert CgroupFS(str(tmp_path)).read("/gone", CgroupPaths(unified="/gone")) is None
    assert CgroupFS(str(tmp_path)).read("/gone", CgroupPaths()) is None


@pytest.mark.parametrize("hybrid", [False, True], ids=["v1", "hybrid"])
def test_v1_cgroup(tmp_path: Path, hybrid: bool) -> None:
    make_v1_root(tmp_path, hybrid)
    stats = CgroupStats()
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, stats)
    if hybrid:
        write_psi(tmp_path / "unified" / POD.lstrip("/"), stats)
    text = v1_cgroup_file(POD, unified=POD if hybrid else None)
    sample = CgroupFS(str(tmp_path)).read(POD, CgroupPaths.from_lines(parse_cgroup_file(text)))
    assert sample is not None
    assert sample.cgroup_version == 1
    _expect(sample, stats)
    assert sample.cpu_user_seconds_total == pytest.approx(700.0)
    waiting = sample.pressure_cpu_waiting_seconds_total
    assert waiting == (pytest.approx(5.0) if hybrid else None)


def test_hybrid_process_at_the_unified_root_has_no_psi(tmp_path: Path) -> None:
    make_v1_root(tmp_path, hybrid=True)
    write_cgroup_v1(tmp_path, {"cpu": POD, "memory": POD, "blkio": POD}, CgroupStats())
    write_psi(tmp_path / "unified", CgroupStats())  # the host's own pressure
    text = v1_cgroup_file(POD, unified="/")
    sample = CgroupFS(str(tmp_path)).read(POD, CgroupPaths.from_lines(parse_cgroup_file(text)))
    assert sample is not None
    assert sample.memory_current_bytes == CgroupStats().memory_current
    assert sample.pressure_cpu_waiting_seconds_total is None


def test_v1_controller_at_root_is_not_read(tmp_path: Path) -> None:
    make_v1_root(tmp_path, hybrid=False)
    write_cgroup_v1(tmp_path, {"cpu": "/", "memory": POD, "blkio": POD}, CgroupStats())
    text = f"7:memory:{POD}\n8:blkio:{POD}\n4:cpu,cpuacct:/\n"
    sample = CgroupFS(str(tmp_path)).read(POD, CgroupPaths.from_lines(parse_cgroup_file(text)))
    assert sample is not None
    assert sample.cpu_usage_seconds_total is None  # the root's usage is the whole host's
    assert sample.memory_current_bytes == CgroupStats().memory_current


def test_relative_path_resolved_by_search_and_cached(tmp_path: Path) -> None:
    make_v2_root(tmp_path)
    host = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice/ctr-y.scope"
    write_cgroup_v2(tmp_path / host.lstrip("/"), CgroupStats())
    fs = CgroupFS(str(tmp_path))
    rel = "/../../kubepods-besteffort-podx.slice/ctr-y.scope"
    assert fs.resolve(str(tmp_path), rel) == str(tmp_path / host.lstrip("/"))
    assert fs.resolve(str(tmp_path), rel) == str(tmp_path / host.lstrip("/"))  # cached
    assert fs.resolve(str(tmp_path), "/../../nowhere.slice") is None


@pytest.mark.parametrize(
    "path", ["/a/../../etc", "/../a/../../.."], ids=["climb out", "climb after"]
)
def test_paths_never_leave_the_root(tmp_path: Path, path: str) -> None:
    make_v2_root(tmp_path / "cg")
    assert CgroupFS(str(tmp_path / "cg")).resolve(str(tmp_path / "cg"), path) is None
