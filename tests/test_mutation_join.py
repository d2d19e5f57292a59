"""Boundaries of serving/join.py that mutation testing found untested (issue 19).

`gpu_shares` over several GPUs: the owner's and co-tenants' SM shares are summed per GPU and
the busiest GPU taken; device activity falls back to the processes' shares (capped at 1),
then to NVML utilisation; power/thermal clock events are 1 when any GPU has one; the clock
ratio is the lowest of the GPUs'. Values below are worked by hand from those rules.
"""

from __future__ import annotations

import pytest

from node_exporter_ml.serving.join import gpu_shares, is_power_thermal
from node_exporter_ml.snapshot import GpuProcessSample, GpuSample


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
