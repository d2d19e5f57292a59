"""Causes that must fire without a clean baseline: cgroup trees changing under a served model.

Each case is a cgroup v2 tree in the kernel's file formats, changed tick by tick the way
the kernel and systemd change it, read by the real CgroupFS and scored by the real
LatencyCauses step: a quota applied at run time to a cgroup without bandwidth control, a
process moved into a capped cgroup, an in-place resize (`cpu.max` from `max` to a
quota), and a quota on the parent only. Latency steps up 8x at a flat request rate when
the cap bites, as `systemctl set-property model.service CPUQuota=15%` did on a real host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from node_exporter_ml.host.cgroupfs import CgroupFS, CgroupPaths
from node_exporter_ml.serving.causes import CauseReport
from node_exporter_ml.serving.data import ServingCauses, ServingData
from node_exporter_ml.serving.enrich import LatencyCauses
from node_exporter_ml.snapshot import (
    CgroupData,
    CollectorResult,
    ProcessData,
    ProcessSample,
    Snapshot,
)
from tests.helpers import make_config
from tests.serving_fakes import one_model

TICK = 5.0
CALM_TICKS = 40
INCIDENT_TICKS = 16
PID = 10


@dataclass
class Cpu:
    """One cgroup's CPU files at one tick (`quota_us` None: `max`; `bandwidth` False: the cpu
    controller's bandwidth files are absent, as in a cgroup nobody capped)."""

    usage_usec: int = 0
    nr_periods: int = 0
    nr_throttled: int = 0
    throttled_usec: int = 0
    quota_us: int | None = None
    bandwidth: bool = True


def write(root: Path, path: str, cpu: Cpu) -> None:
    d = root / path.lstrip("/")
    d.mkdir(parents=True, exist_ok=True)
    stat = f"usage_usec {cpu.usage_usec}\nuser_usec {cpu.usage_usec}\nsystem_usec 0\n"
    if cpu.bandwidth:
        stat += (
            f"nr_periods {cpu.nr_periods}\nnr_throttled {cpu.nr_throttled}\n"
            f"throttled_usec {cpu.throttled_usec}\nnr_bursts 0\nburst_usec 0\n"
        )
        quota = "max" if cpu.quota_us is None else str(cpu.quota_us)
        (d / "cpu.max").write_text(f"{quota} 100000\n")
    else:
        (d / "cpu.max").unlink(missing_ok=True)
    (d / "cpu.stat").write_text(stat)


def capped(i: int, start: int, share: float = 0.95) -> Cpu:
    """A cgroup capped at 15 % of a core from tick `start`: every period (10 a second)
    counts, `share` of them throttled, throttled_usec growing ~1 s per second."""
    n = max(0, i - start) * int(TICK * 10)
    return Cpu(
        usage_usec=i * 750_000,
        nr_periods=n,
        nr_throttled=int(n * share),
        throttled_usec=int(n * share * 100_000),
        quota_us=15_000,
    )


def served(incident: bool) -> ServingData:
    return one_model(10.0, 0.080 if incident else 0.010, "kserve", socket_pid=PID)


def run(
    tmp_path: Path, tree: Callable[[Path, int], str], bites: int = CALM_TICKS
) -> list[CauseReport]:
    """Every tick: change the tree, read the owner's cgroup, score. Latency steps at `bites`."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    fs = CgroupFS(str(tmp_path))
    causes = LatencyCauses(make_config(serving_window=60.0, serving_baseline=900.0))
    reports = []
    for i in range(CALM_TICKS + INCIDENT_TICKS):
        path = tree(tmp_path, i)
        sample = fs.read(path, CgroupPaths(unified=path), (PID,))
        assert sample is not None
        proc = ProcessSample(pid=PID, comm="python", cgroup_path=path)
        snap = Snapshot(
            taken_at=i * TICK,
            results={
                "process": CollectorResult("process", True, 0.0, ProcessData({PID: proc})),
                "cgroup": CollectorResult("cgroup", True, 0.0, CgroupData({path: sample})),
                "serving": CollectorResult("serving", True, 0.0, served(i >= bites)),
            },
        )
        derived = causes(snap).derived["serving"]
        assert isinstance(derived, ServingCauses)
        reports.append(derived.reports[("model", "m", None)])
    return reports


SERVICE = "/system.slice/model.service"


def quota_at_run_time(root: Path, i: int) -> str:
    # systemctl set-property model.service CPUQuota=15%: before it the service's cgroup has
    # no bandwidth control at all (no cpu.max, no nr_periods), nor has its slice.
    write(root, "/system.slice", Cpu(bandwidth=False))
    if i < CALM_TICKS:
        write(root, SERVICE, Cpu(usage_usec=i * 5_000_000, bandwidth=False))
    else:
        write(root, SERVICE, capped(i, CALM_TICKS))
    return SERVICE


def moved_to_a_capped_cgroup(root: Path, i: int) -> str:
    # The process is moved (cgroup.procs) from an unlimited service into a capped one
    # whose counters have been running for a long time.
    write(root, "/system.slice", Cpu(bandwidth=False))
    write(root, "/system.slice/free.service", Cpu(usage_usec=i * 5_000_000, bandwidth=False))
    old = Cpu(usage_usec=10**9, nr_periods=10**6, nr_throttled=10**5, throttled_usec=10**10)
    busy = capped(i, CALM_TICKS)
    write(
        root,
        "/system.slice/capped.service",
        Cpu(
            usage_usec=old.usage_usec + busy.usage_usec,
            nr_periods=old.nr_periods + i * 50,
            nr_throttled=old.nr_throttled + busy.nr_throttled,
            throttled_usec=old.throttled_usec + busy.throttled_usec,
            quota_us=15_000,
        ),
    )
    return "/system.slice/free.service" if i < CALM_TICKS else "/system.slice/capped.service"


POD = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
CONTAINER = f"{POD}/cri-containerd-abc.scope"


def resized_in_place(root: Path, i: int) -> str:
    # An in-place pod resize: the container's cpu.max goes from `max` to a quota; while
    # it was `max` its period counters stood still.
    write(root, "/kubepods.slice", Cpu())
    write(root, POD, Cpu())
    if i < CALM_TICKS:
        write(root, CONTAINER, Cpu(usage_usec=i * 5_000_000, nr_periods=4_000, nr_throttled=7))
    else:
        c = capped(i, CALM_TICKS, share=0.9)
        write(root, CONTAINER, Cpu(c.usage_usec, 4_000 + c.nr_periods, 7 + c.nr_throttled,
                                   c.throttled_usec, quota_us=20_000))  # fmt: skip
    return CONTAINER


def quota_on_the_parent_only(root: Path, i: int) -> str:
    # A pod-level quota, the container's own cpu.max `max`: only the pod's cpu.stat counts
    # throttled periods. The pod runs unthrottled, then its other container eats the quota.
    write(root, "/kubepods.slice", Cpu())
    periods = i * 50
    throttled = max(0, i - CALM_TICKS) * 45
    write(root, POD, Cpu(i * 2_000_000, periods, throttled, throttled * 100_000, quota_us=50_000))
    write(root, CONTAINER, Cpu(usage_usec=i * 1_000_000))
    return CONTAINER


CASES = {
    "quota applied at run time to a cgroup without bandwidth control": quota_at_run_time,
    "process moved to a capped cgroup": moved_to_a_capped_cgroup,
    "in-place resize from max to a quota": resized_in_place,
    "quota on the parent only": quota_on_the_parent_only,
}


@pytest.mark.parametrize("tree", CASES.values(), ids=CASES.keys())
def test_cpu_throttling_scores_without_a_throttled_baseline(tmp_path, tree):
    reports = run(tmp_path, tree)
    calm = reports[20:CALM_TICKS]
    assert all(r.regression_ratio == pytest.approx(1.0) for r in calm)
    assert all(max(r.scores.values()) == 0.0 for r in calm), [r.scores for r in calm]
    # The signal is the window's mean: a few ticks after the cap it reads fully.
    incident = reports[CALM_TICKS + 6 :]
    for r in incident:
        assert r.regression_ratio is not None
        assert r.regression_ratio >= 2
        assert r.top() == "cpu_throttling", r.scores
        assert r.scores["cpu_throttling"] >= 0.9, r.scores
        assert r.scores["load"] == 0.0
        assert r.scores["service_time"] < 0.1


@pytest.mark.parametrize("tree", CASES.values(), ids=CASES.keys())
def test_a_cap_that_does_not_slow_the_model_is_no_cause(tmp_path, tree):
    reports = run(tmp_path, tree, bites=CALM_TICKS + INCIDENT_TICKS)
    assert all(max(r.scores.values()) == 0.0 for r in reports if r.regression_ratio is not None)


def test_no_quota_anywhere_reads_not_throttled(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    write(tmp_path, "/system.slice", Cpu(bandwidth=False))
    write(tmp_path, SERVICE, Cpu(usage_usec=5, bandwidth=False))
    sample = CgroupFS(str(tmp_path)).read(SERVICE, CgroupPaths(unified=SERVICE))
    assert sample is not None
    assert sample.cpu_quota is not None
    assert sample.cpu_quota.path is None


def test_the_nearest_quota_on_the_path_applies(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    write(tmp_path, "/kubepods.slice", Cpu(quota_us=800_000))
    write(tmp_path, POD, Cpu(nr_periods=70, nr_throttled=3, throttled_usec=9, quota_us=50_000))
    write(tmp_path, CONTAINER, Cpu(nr_periods=0))
    sample = CgroupFS(str(tmp_path)).read(CONTAINER, CgroupPaths(unified=CONTAINER))
    assert sample is not None
    assert sample.cpu_limit_cores is None  # the container's own series stay its own
    q = sample.cpu_quota
    assert q is not None
    assert (q.path, q.limit_cores, q.periods_total, q.throttled_periods_total) == (POD, 0.5, 70, 3)
    assert q.throttled_seconds_total == pytest.approx(9e-6)
