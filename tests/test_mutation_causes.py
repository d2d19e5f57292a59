"""Boundaries of serving/causes.py that mutation testing found untested (issue 19).

Each documented scale of the cause rules (docs/serving.md's "how causes are scored", the
module docstring) as a table: the signal's rise, the score it must give. The scales the
issue names are here: the flat-throughput scale of `load` (0 below 60 % of the baseline
rate, 1 from 85 %) and the in-flight scale (a rise of the baseline's own in-flight count,
at least one request, reads 1). Then the edges of the baseline: which ticks are current,
which are baseline, the median, unknown and zero values.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from node_exporter_ml.serving.causes import (
    CAUSES,
    FLAT_RATE,
    CauseReport,
    Signals,
    assess,
    clip01,
    memory_level,
    movements,
    rise,
    saturation_level,
)
from tests.causes_helpers import BASELINE, CALM, SLOW, TICK, WINDOW, history

# Latency 3x; the rate falls to 60 % (flat = 0, so only queueing can score `load`) with the
# GPU work per request unchanged (nothing the model does explains the latency): the `load`
# score is then the in-flight rise on its scale.
QUEUED = replace(CALM, latency_seconds=SLOW, requests_per_second=60.0, owner_sm=0.18)


@pytest.mark.parametrize(
    ("calm_flight", "now_flight", "expected"),
    [
        (4.0, 4.0, 0.0),
        (4.0, 6.0, 0.5),  # the scale is the baseline's 4 in flight: +2 reads 0.5
        (4.0, 8.0, 1.0),
        (4.0, 12.0, 1.0),
        (0.5, 1.0, 0.5),  # under one in flight the scale is one request
        (0.5, 1.5, 1.0),
        (0.0, 0.25, 0.25),
        (2.0, 1.0, 0.0),  # fewer in flight: no queueing
    ],
)
def test_in_flight_rise_reads_one_at_the_baselines_own_count(
    calm_flight: float, now_flight: float, expected: float
) -> None:
    calm = replace(CALM, in_flight=calm_flight)
    report = assess(history(replace(QUEUED, in_flight=now_flight), calm=calm), WINDOW, BASELINE)
    assert report.scores["load"] == pytest.approx(expected)
    assert report.scores["service_time"] == 0.0


@pytest.mark.parametrize(
    ("rate", "flat"),
    [(40.0, 0.0), (60.0, 0.0), (66.25, 0.25), (72.5, 0.5), (85.0, 1.0), (95.0, 1.0)],
)
def test_flat_throughput_scale_of_load(rate: float, flat: float) -> None:
    # Queueing at flat throughput: work per request unchanged, in flight unchanged, so the
    # `load` score is the flatness of the rate alone (0 at 60 % of the baseline, 1 at 85 %).
    assert FLAT_RATE == (0.6, 0.85)
    incident = replace(CALM, latency_seconds=SLOW, requests_per_second=rate, owner_sm=0.003 * rate)
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["load"] == pytest.approx(flat)
    assert report.scores["service_time"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("latency", "gate"),
    [(0.010, 0.0), (0.012, 0.0), (0.014, 0.25), (0.016, 0.5), (0.020, 1.0), (0.050, 1.0)],
)
def test_each_score_is_the_gate_times_the_movement(latency: float, gate: float) -> None:
    # Co-tenants took 15 % more of the SMs: half a movement on the 0.3 scale.
    incident = replace(CALM, latency_seconds=latency, requests_per_second=50.0, cotenant_sm=0.15)
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.regression_ratio == pytest.approx(latency / 0.010)
    assert report.scores["noisy_neighbour"] == pytest.approx(0.5 * gate)


@pytest.mark.parametrize(
    ("field", "cause", "level", "expected"),
    [
        # assumed level 0: any event, any idle-clocked share, is a rise
        ("power_thermal", "power_thermal_throttling", 0.5, 0.25),  # clocks unknown: half
        ("power_thermal", "power_thermal_throttling", 1.0, 0.5),
        ("memory_usage", "memory_pressure", 0.915, 0.5),  # level 0.5 above an assumed 0
    ],
)
def test_unknown_baseline_of_level_signals(
    field: str, cause: str, level: float, expected: float
) -> None:
    base = replace(CALM, requests_per_second=50.0, clock_ratio=None, **{field: None})
    incident = replace(base, latency_seconds=SLOW, **{field: level})
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    assert report.scores[cause] == pytest.approx(expected)


@pytest.mark.parametrize(("idle", "expected"), [(0.0, 0.0), (0.25, 0.5), (0.5, 1.0)])
def test_idle_clocked_with_no_baseline_is_scored_from_zero(idle: float, expected: float) -> None:
    # The rate fell to half (a full fall); idle clocks unknown before, seen now.
    base = replace(CALM, idle_clocked=None)
    incident = replace(
        base, latency_seconds=SLOW, requests_per_second=50.0, owner_sm=0.15, idle_clocked=idle
    )
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    assert report.scores["gpu_low_power"] == pytest.approx(expected)


def test_saturation_counts_the_owners_share_of_the_activity() -> None:
    # SM activity at 95 % (level 1), the owner holds 3/4 of it: saturation 0.75.
    incident = replace(
        CALM, latency_seconds=SLOW, requests_per_second=50.0, device_sm_active=0.95,
        owner_sm=0.6, cotenant_sm=0.2,
    )  # fmt: skip
    base = replace(CALM, cotenant_sm=0.2)
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    assert report.scores["gpu_saturation"] == pytest.approx(0.75)
    # nobody on the GPU at all: no share to weigh by, the level counts whole
    idle = replace(incident, owner_sm=0.0, cotenant_sm=0.0)
    report = assess(history(idle, calm=replace(CALM, owner_sm=0.0)), WINDOW, BASELINE)
    assert report.scores["gpu_saturation"] == pytest.approx(1.0)


def test_power_event_with_zero_baseline_clock_counts_half() -> None:
    # A clock ratio of 0 in the baseline is no clock to compare with.
    base = replace(CALM, clock_ratio=0.0)
    incident = replace(base, latency_seconds=SLOW, requests_per_second=50.0, power_thermal=1.0)
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    assert report.scores["power_thermal_throttling"] == pytest.approx(0.5)


def test_oom_kills_count_only_when_there_were_some() -> None:
    incident = replace(CALM, latency_seconds=SLOW, requests_per_second=50.0, oom_kills=0.0)
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["memory_pressure"] == 0.0
    report = assess(history(replace(incident, oom_kills=0.5)), WINDOW, BASELINE)
    assert report.scores["memory_pressure"] == 1.0


def test_zero_request_rate_in_the_baseline_gives_no_rate_ratio() -> None:
    base = replace(CALM, requests_per_second=0.0, owner_sm=0.3)
    incident = replace(base, latency_seconds=SLOW, requests_per_second=50.0, in_flight=4.0)
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    # no rate ratio: no rate rise, no flatness, no fall; only the in-flight rise remains,
    # and with no work per request to compare, it is not set against the service time
    assert report.scores["gpu_low_power"] == 0.0
    assert report.scores["service_time"] == 0.0
    assert report.scores["load"] == 0.0


def test_the_baseline_is_the_median_and_the_current_value_the_mean() -> None:
    # Baseline co-tenant share: mostly 0 with a few spikes to 1 (median 0, mean 0.2);
    # current: half the window at 0.3, half at 0 (mean 0.15, median either).
    calm = [replace(CALM, t=i * TICK, cotenant_sm=1.0 if i % 5 == 0 else 0.0) for i in range(60)]
    now = [
        replace(
            CALM, t=(60 + i) * TICK, latency_seconds=SLOW, requests_per_second=50.0,
            cotenant_sm=0.3 if i % 2 else 0.0,
        )
        for i in range(12)
    ]  # fmt: skip
    report = assess(calm + now, WINDOW, BASELINE)
    assert report.scores["noisy_neighbour"] == pytest.approx(0.5)
    # latency likewise: the baseline is the median of the older ticks
    spiky = [replace(s, latency_seconds=1.0 if i % 5 == 0 else 0.010) for i, s in enumerate(calm)]
    report = assess(spiky + now, WINDOW, BASELINE)
    assert report.baseline_seconds == pytest.approx(0.010)
    assert report.current_seconds == pytest.approx(SLOW)


def test_nan_signals_are_unknown_not_values() -> None:
    nan = math.nan
    calm = [replace(CALM, t=i * TICK, cotenant_sm=nan if i % 2 else 0.0) for i in range(60)]
    now = [
        replace(
            CALM, t=(60 + i) * TICK, latency_seconds=SLOW, requests_per_second=50.0,
            cotenant_sm=nan if i % 2 else 0.3,
        )
        for i in range(12)
    ]  # fmt: skip
    report = assess(calm + now, WINDOW, BASELINE)
    assert report.scores["noisy_neighbour"] == pytest.approx(1.0)


def test_the_window_edge_tick_is_baseline_and_the_horizon_tick_counts() -> None:
    # now = 100 s: the window is (40, 100], the baseline [now - 900, 40].
    ticks = [Signals(t=100.0 - 900.0, latency_seconds=0.010)]  # exactly at the horizon
    ticks += [Signals(t=30.0, latency_seconds=0.010)]
    ticks += [Signals(t=40.0, latency_seconds=0.010)]  # exactly at the window's edge
    ticks += [Signals(t=100.0, latency_seconds=0.030)]
    report = assess(ticks, 60.0, 900.0)
    # three baseline ticks (the horizon and the edge included): a ratio
    assert report.regression_ratio == pytest.approx(3.0)
    # one tick older than the horizon does not count: two baseline ticks, no ratio
    older = [replace(ticks[0], t=100.0 - 900.5), *ticks[1:]]
    assert assess(older, 60.0, 900.0).regression_ratio is None


def test_the_window_edge_tick_is_not_current() -> None:
    # The tick at exactly now - window has a signal the current window must not average in.
    calm = [replace(CALM, t=i * TICK) for i in range(20)]  # t = 0 ... 95
    edge = replace(CALM, t=100.0, cotenant_sm=0.3)  # now - window with now = 160
    now = [
        replace(CALM, t=100.0 + (i + 1) * TICK, latency_seconds=SLOW, requests_per_second=50.0)
        for i in range(12)
    ]
    report = assess([*calm, edge, *now], WINDOW, BASELINE)
    assert report.scores["noisy_neighbour"] == 0.0


def test_zero_baseline_latency_gives_no_ratio() -> None:
    ticks = [Signals(t=i * TICK, latency_seconds=0.0) for i in range(20)]
    ticks.append(Signals(t=200.0, latency_seconds=0.5))
    report = assess(ticks, WINDOW, BASELINE)
    assert report == CauseReport(None, 0.0, 0.5)
    assert report.top() is None


def test_top_is_none_when_nothing_scored() -> None:
    assert CauseReport(1.0, 0.01, 0.01, dict.fromkeys(CAUSES, 0.0)).top() is None
    scores = {**dict.fromkeys(CAUSES, 0.0), "load": 0.25, "cpu_throttling": 0.5}
    assert CauseReport(3.0, 0.01, 0.03, scores).top() == "cpu_throttling"


@pytest.mark.parametrize(
    ("x", "expected"),
    [(math.nan, 0.0), (-0.5, 0.0), (0.0, 0.0), (0.3, 0.3), (1.0, 1.0), (7.0, 1.0)],
)
def test_clip01(x: float, expected: float) -> None:
    assert clip01(x) == expected


@pytest.mark.parametrize(
    ("current", "baseline", "scale", "expected"),
    [
        (0.5, 0.2, 0.3, 1.0),
        (0.35, 0.2, 0.3, 0.5),
        (0.1, 0.2, 0.3, 0.0),
        (None, 0.2, 0.3, 0.0),
        (0.5, None, 0.3, 0.0),
        (0.5, 0.2, 0.0, 0.0),  # no scale: no movement (not a division by zero)
        (0.5, 0.2, -1.0, 0.0),
    ],
)
def test_rise(current: float | None, baseline: float | None, scale: float, expected: float) -> None:
    assert rise(current, baseline, scale) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("sm", "level"), [(None, None), (0.5, 0.0), (0.6, 0.0), (0.775, 0.5), (0.95, 1.0), (1.0, 1.0)]
)
def test_saturation_level(sm: float | None, level: float | None) -> None:
    assert saturation_level(sm) == (None if level is None else pytest.approx(level))


@pytest.mark.parametrize(
    ("usage", "level"),
    [(None, None), (0.5, 0.0), (0.85, 0.0), (0.915, 0.5), (0.98, 1.0), (1.2, 1.0)],
)
def test_memory_level(usage: float | None, level: float | None) -> None:
    assert memory_level(usage) == (None if level is None else pytest.approx(level))


def test_movements_without_a_latency_ratio_call_flat_regressions_service_time() -> None:
    past = [replace(CALM, t=i * TICK) for i in range(10)]
    current = [replace(CALM, t=(10 + i) * TICK, owner_sm=0.3) for i in range(3)]
    moved = movements(current, past)
    assert moved["service_time"] == 1.0
    assert moved["load"] == 0.0
    # a latency ratio at or under 1 splits nothing either
    assert movements(current, past, 1.0)["service_time"] == 1.0


def test_saturation_with_co_tenants_unknown_counts_whole() -> None:
    # The owner's SM share is known, the co-tenants' is not: no share to weigh by.
    base = replace(CALM, cotenant_sm=None)
    incident = replace(
        base, latency_seconds=SLOW, requests_per_second=50.0, device_sm_active=0.95, owner_sm=0.6
    )
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    assert report.scores["gpu_saturation"] == pytest.approx(1.0)


@pytest.mark.parametrize(("now", "expected"), [(0.8, 0.0), (0.74, 0.5), (0.68, 1.0)])
def test_clock_drop_is_relative_to_the_baseline_clock(now: float, expected: float) -> None:
    # Baseline clocks at 80 % of max: a drop to 68 % is 15 % of the baseline's clock.
    base = replace(CALM, clock_ratio=0.8)
    incident = replace(
        base, latency_seconds=SLOW, requests_per_second=50.0, power_thermal=1.0, clock_ratio=now
    )
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    assert report.scores["power_thermal_throttling"] == pytest.approx(expected)


def test_idle_clocks_with_the_request_rate_unknown_are_no_low_power_cause() -> None:
    base = replace(CALM, requests_per_second=None)
    incident = replace(base, latency_seconds=SLOW, idle_clocked=1.0)
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    assert report.scores["gpu_low_power"] == 0.0


# A flat-rate regression with the model's work unseen is service time, unless a resource
# moved: each resource's full movement leaves nothing to the service time.
RESOURCE_MOVES = {
    "noisy_neighbour": {"cotenant_sm": 0.3},
    "gpu_saturation": {"device_sm_active": 0.95},
    "cpu_throttling": {"cpu_throttled": 0.25},
    "memory_pressure": {"memory_stall": 0.1},
    "power_thermal_throttling": {"power_thermal": 1.0, "clock_ratio": 0.85},
}


@pytest.mark.parametrize("cause", list(RESOURCE_MOVES))
def test_a_resource_that_moved_leaves_no_service_time(cause: str) -> None:
    calm = replace(CALM, owner_sm=None, cotenant_sm=0.0, device_sm_active=0.3)
    incident = replace(calm, latency_seconds=SLOW, **RESOURCE_MOVES[cause])
    report = assess(history(incident, calm=calm), WINDOW, BASELINE)
    assert report.scores[cause] == pytest.approx(1.0)
    assert report.scores["service_time"] == pytest.approx(0.0, abs=1e-9)
    assert report.scores["load"] == pytest.approx(0.0, abs=1e-9)


def test_low_power_takes_its_share_from_the_service_time() -> None:
    # Rate at 75 %: flat 0.6 (from 60 % to 85 %), fell (85 - 75) / 35 = 2/7, the GPU
    # idle-clocked all window (a full idle movement): low power 2/7, and the service time
    # is the flat-rate regression the low power does not explain, (1 - 2/7) x 0.6.
    calm = replace(CALM, owner_sm=None, cotenant_sm=None, device_sm_active=None)
    incident = replace(calm, latency_seconds=SLOW, requests_per_second=75.0, idle_clocked=1.0)
    report = assess(history(incident, calm=calm), WINDOW, BASELINE)
    assert report.scores["gpu_low_power"] == pytest.approx(2 / 7)
    assert report.scores["service_time"] == pytest.approx((1 - 2 / 7) * 0.6)


def test_flat_work_splits_a_small_regression_too() -> None:
    # Latency 1.6x (gate 0.5) at the same rate and the same work per request: queueing.
    incident = replace(CALM, latency_seconds=0.016)
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["load"] == pytest.approx(0.5)
    assert report.scores["service_time"] == 0.0


def test_without_a_baseline_the_report_still_has_the_current_latency() -> None:
    ticks = [replace(CALM, t=i * TICK) for i in range(5)]
    ticks.append(replace(CALM, t=25.0, latency_seconds=0.02))
    assert assess(ticks, WINDOW, BASELINE) == CauseReport(None, None, 0.02)
