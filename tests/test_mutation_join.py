"""Boundaries of serving/join.py that mutation testing found untested (issue 19).

`gpu_shares` over several GPUs: the owner's and co-tenants' SM shares are summed per GPU and
the busiest GPU taken; device activity falls back to the processes' shares (capped at 1),
then to NVML utilisation; power/thermal clock events are 1 when any GPU has one; the clock
ratio is the lowest of the GPUs'; idle-clocked is 1 when any of them sits in gpu_idle or P8 or
lower power. Also owner_pids' container-id prefixes and root cgroup, and owner_cgroups with a
collector missing. Values below are worked by hand from those rules (docs/serving.md).
"""

from __future__ import annotations

import pytest

from node_exporter_ml.serving.data import TargetStatus
from node_exporter_ml.serving.join import (
    gpu_shares,
    is_idle_clocked,
    is_power_thermal,
    owner_cgroups,
    owner_pids,
)
from node_exporter_ml.snapshot import (
    CgroupData,
    CgroupSample,
    CollectorResult,
    GpuProcessSample,
    GpuSample,
    ProcessData,
    ProcessSample,
    Snapshot,
)


def _gpu(index: int, *procs: tuple[int, float | None], **kw: object) -> GpuSample:
    processes = tuple(GpuProcessSample(pid=pid, sm_ratio=sm) for pid, sm in procs)
    return GpuSample(index=index, uuid=f"GPU-{index}", processes=processes, **kw)  # type: ignore[arg-type]


def test_device_activity_from_process_shares_capped_at_one():
    # no GPM reading: the processes' shares summed, 0.7 + 0.6 = 1.3 capped at 1.0 (not the
    # 0.2 NVML utilisation, which is only the last resort)
    shares = gpu_shares([1], [_gpu(0, (1, 0.7), (2, 0.6), utilization_ratio=0.2)])
    assert shares.device_sm_active == 1.0
    # no shares at all: NVML utilisation
    shares = gpu_shares([1], [_gpu(0, (1, None), utilization_ratio=0.2)])
    assert shares.device_sm_active == 0.2
    # a GPM reading wins over both
    shares = gpu_shares([1], [_gpu(0, (1, 0.7), sm_active_ratio=0.5, utilization_ratio=0.2)])
    assert shares.device_sm_active == 0.5


def test_busiest_gpu_and_lowest_clock_across_gpus():
    gpus = [
        _gpu(0, (1, 0.2), (2, 0.1), sm_clock_hertz=1.8e9, max_sm_clock_hertz=2.0e9),
        _gpu(1, (1, 0.5), (3, 0.05), sm_clock_hertz=1.0e9, max_sm_clock_hertz=2.0e9),
        _gpu(2, (1, 0.3), sm_clock_hertz=1.5e9, max_sm_clock_hertz=None),  # no max: no ratio
    ]
    shares = gpu_shares([1], gpus)
    assert shares.owner_sm == 0.5  # GPU 1's share, the largest of 0.2, 0.5, 0.3
    assert shares.cotenant_sm == 0.1  # GPU 0's co-tenant, the larger of 0.1 and 0.05
    assert shares.cotenant_pids == (2, 3)
    assert shares.device_sm_active == pytest.approx(0.55)  # GPU 1: 0.5 + 0.05
    assert shares.clock_ratio == 0.5  # min(0.9, 0.5); GPU 2 has no max clock


def test_shares_left_unknown_when_only_cotenants_without_readings():
    # GPU 0: co-tenant 2 with no SM reading and no owner share: nothing known there;
    # GPU 1: only the owner, idle: owner 0, co-tenants 0
    shares = gpu_shares([1], [_gpu(0, (2, None))])
    assert (shares.owner_sm, shares.cotenant_sm) == (None, None)
    shares = gpu_shares([1], [_gpu(0, (2, None)), _gpu(1, (1, 0.0))])
    assert (shares.owner_sm, shares.cotenant_sm) == (0.0, 0.0)


def test_power_thermal_events_flagged_on_any_gpu():
    gpus = [
        _gpu(0, (1, 0.2), clock_events=frozenset({"applications_clocks_setting"})),
        _gpu(1, (1, 0.2), clock_events=frozenset({"HW_Thermal_Slowdown"})),
    ]
    assert gpu_shares([1], gpus).power_thermal == 1.0
    assert gpu_shares([1], gpus[:1]).power_thermal == 0.0
    assert gpu_shares([1], []).power_thermal is None
    assert gpu_shares([1], []).device_sm_active is None  # no GPU: unknown, not 0


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("sw_power_cap", True),
        ("hw_power_brake_slowdown", True),
        ("sw_thermal_slowdown", True),
        ("hw_slowdown", True),
        ("gpu_idle", False),
        ("applications_clocks_setting", False),
        ("sync_boost", False),
    ],
)
def test_is_power_thermal(reason, expected):
    # NVML clock event reasons (nvmlClocksEventReasons): power caps, thermal and hardware
    # slowdowns cap clocks; idle, application clocks and sync boost do not
    assert is_power_thermal(reason) is expected


# -- owner_pids: container ids, the root cgroup; owner_cgroups when a collector is missing --

FULL_ID = "abc123def456" + "0" * 52  # a 64-hex container id


def _target(**kw: object) -> TargetStatus:
    return TargetStatus(
        name="m", url="http://127.0.0.1:8000/metrics", source="config", up=True, **kw
    )  # type: ignore[arg-type]


def _snapshot(
    procs: dict[int, ProcessSample] | None, groups: dict[str, CgroupSample] | None
) -> Snapshot:
    results = {}
    if procs is not None:
        results["process"] = CollectorResult("process", True, 0.0, ProcessData(procs))
    if groups is not None:
        results["cgroup"] = CollectorResult("cgroup", True, 0.0, CgroupData(groups))
    return Snapshot(taken_at=0.0, results=results)


@pytest.mark.parametrize(
    ("proc_id", "target_id", "owned"),
    [
        ("containerd://abc123def456", FULL_ID, True),  # the process's id is the shorter prefix
        (f"containerd://{FULL_ID}", "abc123", True),  # the target's id is the shorter prefix
        ("containerd://abc123def456", "fff999", False),  # another container
        ("containerd://abc123def456", "containerd://", False),  # a prefix with no id: nothing
        ("docker://", "abc123", False),  # a process with no id is in no named container
    ],
)
def test_container_id_prefix_either_way(proc_id: str, target_id: str, owned: bool) -> None:
    snap = _snapshot({5: ProcessSample(pid=5, comm="srv", container_id=proc_id)}, None)
    assert owner_pids(_target(container_id=target_id), snap) == ((5,) if owned else ())


@pytest.mark.parametrize("path", ["/", "", None])
def test_socket_owner_in_root_or_no_cgroup_has_no_siblings(path: str | None) -> None:
    # processes on a bare host all sit in "/" (or have no cgroup read): they are not the
    # server's helpers, only the socket holder owns the target
    procs = {
        7: ProcessSample(pid=7, comm="srv", cgroup_path=path),
        3: ProcessSample(pid=3, comm="other", cgroup_path=path),
    }
    assert owner_pids(_target(socket_pid=7), _snapshot(procs, None)) == (7,)


def test_owner_cgroups_needs_both_collectors_and_a_known_cgroup() -> None:
    procs = {
        1: ProcessSample(pid=1, comm="a", cgroup_path="/a.scope"),
        2: ProcessSample(
            pid=2, comm="b", cgroup_path="/gone.scope"
        ),  # not read by the cgroup collector
        3: ProcessSample(pid=3, comm="c"),  # no cgroup path
    }
    groups = {"/a.scope": CgroupSample(path="/a.scope")}
    assert owner_cgroups((1,), _snapshot(procs, None)) == ()
    assert owner_cgroups((1,), _snapshot(None, groups)) == ()
    # pid 4 is unknown to the process collector; 2's and 3's cgroups are not known: only 1's
    got = owner_cgroups((4, 2, 3, 1), _snapshot(procs, groups))
    assert [c.path for c in got] == ["/a.scope"]


# -- is_idle_clocked and the idle-clocked share: clock event gpu_idle, or P8 or lower power --


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"clock_events": frozenset({"gpu_idle"})}, True),
        ({"clock_events": frozenset({"gpu_idle"}), "performance_state": 0}, True),  # the event wins
        ({"performance_state": 8}, True),  # P8 itself is idle
        ({"performance_state": 12}, True),  # lower power than P8
        ({"performance_state": 7}, False),
        ({"performance_state": 0}, False),
        # no performance state: the clock events decide when the GPU reports them
        ({"clock_events_supported": frozenset({"gpu_idle", "sw_power_cap"})}, False),
        (
            {
                "clock_events": frozenset({"sw_power_cap"}),
                "clock_events_supported": frozenset({"gpu_idle", "sw_power_cap"}),
            },
            False,
        ),
        ({}, None),  # neither reported: unknown
    ],
)
def test_is_idle_clocked(kw: dict[str, object], expected: bool | None) -> None:
    assert is_idle_clocked(_gpu(0, **kw)) is expected


def test_idle_clocked_is_one_when_any_owner_gpu_is_parked() -> None:
    busy = _gpu(0, (1, 0.5), performance_state=0)
    parked = _gpu(1, (1, 0.0), performance_state=8)
    idle_event = _gpu(2, (1, 0.0), clock_events=frozenset({"gpu_idle"}))
    unknown = _gpu(3, (1, 0.0))
    assert gpu_shares([1], [busy]).idle_clocked == 0.0
    assert gpu_shares([1], [busy, parked]).idle_clocked == 1.0
    assert gpu_shares([1], [parked, busy]).idle_clocked == 1.0
    assert gpu_shares([1], [idle_event]).idle_clocked == 1.0
    assert gpu_shares([1], [unknown, busy]).idle_clocked == 0.0  # the known GPU decides
    assert gpu_shares([1], [unknown]).idle_clocked is None
    assert gpu_shares([1], []).idle_clocked is None


# -- gpu_shares: partial readings on one GPU, the lowest clock wherever it comes --


def test_shares_known_when_any_process_on_the_gpu_has_a_reading() -> None:
    # NVML samples every process on a GPU together: one reading means the GPU is sampled,
    # and a process without one ran no SM work there (0)
    shares = gpu_shares([1], [_gpu(0, (1, None), (2, 0.4))])
    assert (shares.owner_sm, shares.cotenant_sm) == (0.0, 0.4)
    shares = gpu_shares([1], [_gpu(0, (1, 0.3), (2, None))])
    assert (shares.owner_sm, shares.cotenant_sm) == (0.3, 0.0)
    # only the owner there, no reading: owner 0, no co-tenants
    shares = gpu_shares([1], [_gpu(0, (1, None))])
    assert (shares.owner_sm, shares.cotenant_sm) == (0.0, 0.0)


def test_lowest_clock_ratio_when_it_comes_first() -> None:
    gpus = [
        _gpu(0, (1, 0.2), sm_clock_hertz=1.0e9, max_sm_clock_hertz=2.0e9),
        _gpu(1, (1, 0.2), sm_clock_hertz=1.8e9, max_sm_clock_hertz=2.0e9),
    ]
    assert gpu_shares([1], gpus).clock_ratio == 0.5  # min(0.5, 0.9)
