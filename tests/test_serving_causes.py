"""Synthetic windows for each cause, the documented scales, and the regression gate."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from node_exporter_ml.serving.causes import (
    ASSUMED_LEVELS,
    CAUSES,
    MIN_BASELINE_POINTS,
    SCALES,
    Signals,
    assess,
    regression_gate,
)
from tests.causes_helpers import BASELINE, CALM, SLOW, TICK, WINDOW, history


def top(report) -> str | None:
    return report.top()


INCIDENTS = {
    "noisy_neighbour": replace(
        CALM, latency_seconds=SLOW, requests_per_second=40.0, cotenant_sm=0.7, owner_sm=0.2,
        device_sm_active=0.9,
    ),
    "gpu_saturation": replace(
        CALM, latency_seconds=SLOW, requests_per_second=95.0, owner_sm=0.98, device_sm_active=0.97,
        in_flight=2.0,
    ),
    "cpu_throttling": replace(
        CALM, latency_seconds=SLOW, requests_per_second=50.0, cpu_throttled=0.6
    ),
    "memory_pressure": replace(
        CALM, latency_seconds=SLOW, requests_per_second=50.0, memory_stall=0.25, memory_usage=0.97
    ),
    "power_thermal_throttling": replace(
        CALM, latency_seconds=SLOW, requests_per_second=60.0, power_thermal=1.0, clock_ratio=0.7
    ),
    "gpu_low_power": replace(
        CALM, latency_seconds=SLOW, requests_per_second=20.0, owner_sm=0.06, device_sm_active=0.06,
        idle_clocked=1.0, in_flight=0.6,
    ),
    "load": replace(CALM, latency_seconds=SLOW, requests_per_second=250.0, in_flight=12.0),
    # The model's GPU work per request doubled at the same rate: the model got slower.
    "service_time": replace(
        CALM, latency_seconds=SLOW, owner_sm=0.6, device_sm_active=0.6, in_flight=6.0
    ),
}  # fmt: skip


@pytest.mark.parametrize("cause", CAUSES)
def test_each_cause_wins_its_own_incident(cause):
    report = assess(history(INCIDENTS[cause]), WINDOW, BASELINE)
    assert report.regression_ratio == pytest.approx(3.0)
    assert report.baseline_seconds == pytest.approx(0.010)
    assert top(report) == cause, report.scores
    assert report.scores[cause] >= 0.7
    others = [v for c, v in report.scores.items() if c != cause]
    assert max(others) < report.scores[cause]
    assert all(0.0 <= v <= 1.0 for v in report.scores.values())


@pytest.mark.parametrize("cause", CAUSES)
def test_signal_moving_without_latency_is_no_cause(cause):
    quiet = replace(INCIDENTS[cause], latency_seconds=CALM.latency_seconds)
    report = assess(history(quiet), WINDOW, BASELINE)
    assert report.regression_ratio == pytest.approx(1.0)
    assert all(v == 0.0 for v in report.scores.values()), report.scores


def test_latency_up_at_flat_throughput_and_flat_work_is_queueing_load():
    # The recording's 8 clients on a one-at-a-time server: each request takes the GPU
    # work it took before, the rest of the latency is waiting.
    report = assess(history(replace(CALM, latency_seconds=SLOW, in_flight=6.0)), WINDOW, BASELINE)
    assert top(report) == "load"
    assert report.scores["load"] == pytest.approx(1.0)
    assert report.scores["service_time"] == 0.0


def test_latency_up_at_flat_rate_with_work_unseen_is_service_time():
    # No GPU process data (a CPU model server): nothing says the requests queue.
    calm = replace(CALM, owner_sm=None, cotenant_sm=None, device_sm_active=None)
    incident = replace(calm, latency_seconds=SLOW, in_flight=6.0)
    report = assess(history(incident, calm=calm), WINDOW, BASELINE)
    assert top(report) == "service_time"
    assert report.scores["service_time"] == pytest.approx(1.0)
    assert report.scores["load"] == 0.0


def test_more_requests_is_load_not_service_time():
    report = assess(history(INCIDENTS["load"]), WINDOW, BASELINE)
    assert report.scores["service_time"] == 0.0


def test_idle_clocks_at_a_steady_rate_are_no_low_power_cause():
    # The rate did not fall: a GPU that idles between requests at the usual rate is not news.
    incident = replace(CALM, latency_seconds=SLOW, idle_clocked=1.0)
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["gpu_low_power"] == 0.0


def test_low_rate_with_busy_clocks_is_no_low_power_cause():
    incident = replace(INCIDENTS["gpu_low_power"], idle_clocked=0.0)
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["gpu_low_power"] == 0.0


def test_latency_up_with_throughput_collapsing_and_no_signal_is_unexplained():
    incident = replace(CALM, latency_seconds=SLOW, requests_per_second=30.0)
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.regression_ratio == pytest.approx(3.0)
    assert all(v == 0.0 for v in report.scores.values()), report.scores


def test_power_event_without_clock_drop_explains_nothing():
    incident = replace(INCIDENTS["power_thermal_throttling"], clock_ratio=1.0)
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["power_thermal_throttling"] == 0.0


def test_power_event_with_clocks_unknown_counts_half():
    incident = replace(INCIDENTS["power_thermal_throttling"], clock_ratio=None)
    report = assess(history(incident, calm=replace(CALM, clock_ratio=None)), WINDOW, BASELINE)
    assert report.scores["power_thermal_throttling"] == pytest.approx(0.5)


def test_oom_kill_in_window_is_memory_pressure():
    incident = replace(CALM, latency_seconds=SLOW, requests_per_second=60.0, oom_kills=1.0)
    report = assess(history(incident), WINDOW, BASELINE)
    assert top(report) == "memory_pressure"
    assert report.scores["memory_pressure"] == 1.0


def test_saturation_by_a_neighbour_is_not_this_workloads_saturation():
    report = assess(history(INCIDENTS["noisy_neighbour"]), WINDOW, BASELINE)
    # SM activity rose to 90 %, but the owner holds only 2/9 of it.
    assert report.scores["gpu_saturation"] < 0.3 * report.scores["noisy_neighbour"]


def test_unknown_signals_score_zero():
    bare = [Signals(t=i * TICK, latency_seconds=0.01) for i in range(60)]
    bare += [Signals(t=(60 + i) * TICK, latency_seconds=0.03) for i in range(12)]
    report = assess(bare, WINDOW, BASELINE)
    assert report.regression_ratio == pytest.approx(3.0)
    assert all(v == 0.0 for v in report.scores.values())


def test_no_baseline_until_enough_history():
    ticks = [replace(CALM, t=i * TICK) for i in range(12)]  # one window's worth only
    assert assess(ticks, WINDOW, BASELINE).regression_ratio is None
    ticks = [replace(CALM, t=i * TICK) for i in range(12 + MIN_BASELINE_POINTS)]
    report = assess(ticks, WINDOW, BASELINE)
    assert report.regression_ratio == pytest.approx(1.0)
    assert report.top() is None


def test_baseline_excludes_the_current_window_and_old_history():
    # Old slow history beyond the baseline horizon does not count; the current
    # window's own latency does not count either.
    old = [replace(CALM, t=i * TICK, latency_seconds=1.0) for i in range(10)]
    calm = [replace(CALM, t=1000.0 + i * TICK) for i in range(40)]
    now = [replace(CALM, t=1200.0 + i * TICK, latency_seconds=0.05) for i in range(12)]
    report = assess(old + calm + now, WINDOW, BASELINE)
    assert report.baseline_seconds == pytest.approx(0.010)
    assert report.regression_ratio == pytest.approx(5.0)


def test_empty_history_and_missing_latency():
    assert assess([], WINDOW, BASELINE).regression_ratio is None
    ticks = [*history(CALM), replace(CALM, t=10000.0, latency_seconds=None)]
    assert assess(ticks, WINDOW, BASELINE).regression_ratio is None


@pytest.mark.parametrize(
    ("ratio", "gate"), [(0.5, 0.0), (1.0, 0.0), (1.2, 0.0), (1.6, 0.5), (2.0, 1.0), (9.0, 1.0)]
)
def test_regression_gate(ratio, gate):
    assert regression_gate(ratio) == pytest.approx(gate)


# --- the documented scales, pinned -----------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "serving.md"
# docs/serving.md's table of scales: | `signal` | scale | assumed level (or -) |
SCALE_ROW = re.compile(r"^\s*\| `(\w+)` \| ([0-9.]+) \| ([0-9.]+|-) \|$", re.MULTILINE)


def test_the_documented_scales_are_the_codes():
    rows = SCALE_ROW.findall(DOCS.read_text(encoding="utf-8"))
    assert {name: float(scale) for name, scale, _ in rows} == dict(SCALES)
    assumed = {name: float(level) for name, _, level in rows if level != "-"}
    assert assumed == dict(ASSUMED_LEVELS)


# (cause, the signal's field, its calm value, the rise that reads 1 as documented, extras)
SCALE_CASES = [
    ("noisy_neighbour", "cotenant_sm", 0.0, 0.3, {}),
    ("cpu_throttling", "cpu_throttled", 0.0, 0.25, {}),
    ("memory_pressure", "memory_stall", 0.0, 0.1, {}),
    # The saturation level is 0 at 60 % SM activity, 1 at 95 %.
    ("gpu_saturation", "device_sm_active", 0.6, 0.35, {"cotenant_sm": 0.0}),
    # The working-set level is 0 at 85 % of the limit, 1 at 98 %.
    ("memory_pressure", "memory_usage", 0.85, 0.13, {}),
]


@pytest.mark.parametrize(("cause", "field", "calm", "full", "extra"), SCALE_CASES)
@pytest.mark.parametrize("share", [0.0, 0.5, 1.0, 2.0])
def test_a_rise_of_the_scale_reads_one(cause, field, calm, full, extra, share):
    base = replace(CALM, requests_per_second=50.0, **{field: calm}, **extra)
    incident = replace(base, latency_seconds=SLOW, **{field: calm + share * full})
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    assert report.scores[cause] == pytest.approx(min(1.0, share))


# With no baseline: (cause, field, level now, documented score). Throttled in half the
# periods, co-tenants on half the SMs, memory PSI at 15 % read 1; SM activity counts
# only above ~78 % (saturation level 0.5) and reads at most 0.5.
ASSUMED_CASES = [
    ("cpu_throttling", "cpu_throttled", 0.25, 0.0),
    ("cpu_throttling", "cpu_throttled", 0.375, 0.5),
    ("cpu_throttling", "cpu_throttled", 0.5, 1.0),
    ("cpu_throttling", "cpu_throttled", 1.0, 1.0),
    ("noisy_neighbour", "cotenant_sm", 0.2, 0.0),
    ("noisy_neighbour", "cotenant_sm", 0.35, 0.5),
    ("noisy_neighbour", "cotenant_sm", 0.5, 1.0),
    ("memory_pressure", "memory_stall", 0.05, 0.0),
    ("memory_pressure", "memory_stall", 0.1, 0.5),
    ("memory_pressure", "memory_stall", 0.15, 1.0),
    ("gpu_saturation", "device_sm_active", 0.775, 0.0),
    ("gpu_saturation", "device_sm_active", 0.95, 0.5),
    ("gpu_saturation", "device_sm_active", 1.0, 0.5),
]


@pytest.mark.parametrize(("cause", "field", "level", "expected"), ASSUMED_CASES)
def test_unknown_baseline_scores_the_level_above_the_assumed_one(cause, field, level, expected):
    extra = {"cotenant_sm": 0.0, "owner_sm": 1.0} if field == "device_sm_active" else {}
    base = replace(CALM, requests_per_second=50.0, **{field: None}, **extra)
    incident = replace(base, latency_seconds=SLOW, **{field: level})
    report = assess(history(incident, calm=base), WINDOW, BASELINE)
    assert report.scores[cause] == pytest.approx(expected)


@pytest.mark.parametrize(("drop", "expected"), [(0.0, 0.0), (0.075, 0.5), (0.15, 1.0), (0.3, 1.0)])
def test_power_thermal_scales_with_the_clock_drop(drop, expected):
    assert SCALES["power_thermal"] == 1.0
    assert SCALES["clock_drop"] == 0.15
    incident = replace(
        CALM, latency_seconds=SLOW, requests_per_second=50.0, power_thermal=1.0,
        clock_ratio=1.0 - drop,
    )  # fmt: skip
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["power_thermal_throttling"] == pytest.approx(expected)


@pytest.mark.parametrize(("rate", "expected"), [(100.0, 0.0), (150.0, 0.5), (200.0, 1.0)])
def test_load_reads_one_when_the_rate_doubles(rate, expected):
    assert SCALES["requests"] == 1.0
    # The work per request doubled with it: no queueing beyond the service time.
    incident = replace(
        CALM, latency_seconds=SLOW, requests_per_second=rate, owner_sm=0.6 * rate / 100
    )
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["load"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate", "idle", "expected"),
    [(85.0, 1.0, 0.0), (67.5, 1.0, 0.5), (50.0, 1.0, 1.0), (50.0, 0.25, 0.5), (10.0, 0.5, 1.0)],
)
def test_low_power_scales_with_the_rate_fall_and_the_idle_share(rate, idle, expected):
    assert SCALES["rate_fall"] == 0.35
    assert SCALES["idle_clocked"] == 0.5
    incident = replace(
        CALM, latency_seconds=SLOW, requests_per_second=rate, idle_clocked=idle,
        owner_sm=0.3 * rate / 100,
    )  # fmt: skip
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["gpu_low_power"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("work", "service", "load"),
    [(1.0, 0.0, 1.0), (1.5, 0.5, 0.5), (2.0, 1.0, 0.0), (3.0, 1.0, 0.0)],
)
def test_work_per_request_splits_service_time_from_queueing(work, service, load):
    # Latency 3x at the same rate: work per request up by half the latency's rise reads 1.
    assert SCALES["work_explains"] == 0.5
    incident = replace(CALM, latency_seconds=SLOW, owner_sm=0.3 * work, device_sm_active=0.5)
    report = assess(history(incident), WINDOW, BASELINE)
    assert report.scores["service_time"] == pytest.approx(service)
    assert report.scores["load"] == pytest.approx(load)


@pytest.mark.parametrize(("rate", "flat"), [(50.0, 0.0), (60.0, 0.0), (72.5, 0.5), (85.0, 1.0)])
def test_flat_throughput_runs_from_60_to_85_percent(rate, flat):
    calm = replace(CALM, owner_sm=None, cotenant_sm=None, device_sm_active=None)
    incident = replace(calm, latency_seconds=SLOW, requests_per_second=rate)
    report = assess(history(incident, calm=calm), WINDOW, BASELINE)
    assert report.scores["service_time"] == pytest.approx(flat)
