"""gpu_low_power end to end: NVML snapshots of an owner GPU parking between requests.

The real LatencyCauses step joins a served model to its GPU through the GPU's process list
and reads the GPU's clock events and performance state, tick by tick: the request rate
falls from 10/s to 2/s, latency triples, and the GPU sits in P8 with clock event
`gpu_idle` at 345 MHz of 1980 MHz between the few requests.
"""

from __future__ import annotations

import pytest

from node_exporter_ml.serving.causes import CauseReport
from node_exporter_ml.serving.data import ServingCauses
from node_exporter_ml.serving.enrich import LatencyCauses
from node_exporter_ml.serving.join import is_idle_clocked
from node_exporter_ml.snapshot import (
    CollectorResult,
    GpuProcessSample,
    GpuSample,
    NvmlData,
    Snapshot,
)
from tests.helpers import make_config
from tests.serving_fakes import one_model

TICK = 5.0
CALM_TICKS = 40
INCIDENT_TICKS = 14
PID = 10
EVENTS = frozenset({"gpu_idle", "sw_power_cap", "hw_slowdown", "sw_thermal_slowdown"})


def gpu(*, parked: bool, pstate: int | None, events: bool = True) -> GpuSample:
    return GpuSample(
        index=0,
        uuid="GPU-0",
        sm_clock_hertz=345e6 if parked else 1980e6,
        max_sm_clock_hertz=1980e6,
        performance_state=pstate,
        clock_events=frozenset({"gpu_idle"}) if parked and events else frozenset(),
        clock_events_supported=EVENTS if events else frozenset(),
        processes=(GpuProcessSample(pid=PID, sm_ratio=0.02 if parked else 0.1),),
    )


def run(incident_gpu: GpuSample, rate: float = 2.0) -> list[CauseReport]:
    causes = LatencyCauses(make_config(serving_window=60.0, serving_baseline=900.0))
    reports = []
    for i in range(CALM_TICKS + INCIDENT_TICKS):
        calm = i < CALM_TICKS
        device = gpu(parked=False, pstate=0) if calm else incident_gpu
        data = one_model(10.0 if calm else rate, 0.05 if calm else 0.15, "vllm", pid=PID)
        snap = Snapshot(
            taken_at=i * TICK,
            results={
                "nvml": CollectorResult("nvml", True, 0.0, NvmlData(devices=(device,))),
                "serving": CollectorResult("serving", True, 0.0, data),
            },
        )
        derived = causes(snap).derived["serving"]
        assert isinstance(derived, ServingCauses)
        reports.append(derived.reports[("model", "m", None)])
    return reports


@pytest.mark.parametrize(
    "parked",
    [
        gpu(parked=True, pstate=8),  # NVML reports both
        gpu(parked=True, pstate=None),  # the clock event alone
        gpu(parked=True, pstate=8, events=False),  # the performance state alone
    ],
    ids=["pstate and event", "gpu_idle event", "P8"],
)
def test_latency_up_as_the_rate_falls_on_a_parked_gpu_is_low_power(parked):
    reports = run(parked)
    assert reports[CALM_TICKS - 1].regression_ratio == pytest.approx(1.0)
    assert reports[CALM_TICKS - 1].top() is None
    last = reports[-1]
    assert last.regression_ratio == pytest.approx(3.0)
    assert last.top() == "gpu_low_power", last.scores
    assert last.scores["gpu_low_power"] == pytest.approx(1.0)
    assert last.scores["load"] == 0.0
    assert last.scores["power_thermal_throttling"] == 0.0  # idle clocks are no throttling


def test_the_same_fall_with_the_gpu_awake_is_no_low_power():
    reports = run(gpu(parked=False, pstate=0))
    assert reports[-1].regression_ratio == pytest.approx(3.0)
    assert reports[-1].scores["gpu_low_power"] == 0.0


def test_a_parked_gpu_at_the_usual_rate_is_no_low_power():
    reports = run(gpu(parked=True, pstate=8), rate=10.0)
    assert reports[-1].scores["gpu_low_power"] == 0.0


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (gpu(parked=True, pstate=None), True),
        (gpu(parked=False, pstate=8), True),
        (gpu(parked=False, pstate=12), True),
        (gpu(parked=False, pstate=2), False),
        (gpu(parked=False, pstate=None), False),  # events reported, none active
        (gpu(parked=False, pstate=None, events=False), None),  # nothing reported
    ],
)
def test_idle_clocked_from_the_clock_event_or_the_performance_state(sample, expected):
    assert is_idle_clocked(sample) is expected
