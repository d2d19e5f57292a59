"""Per-target serving state between scrapes: restarts, outages, models coming and going."""

from __future__ import annotations

import pytest

from node_exporter_ml.serving.profiles import ModelReading, Reading
from node_exporter_ml.serving.targets import Targets, TargetState

LLAMA = ("llama", None)
MISTRAL = ("mistral", "v2")


def scrape(count: float, total: float, start: float | None = 1.0, models=(LLAMA,)) -> Reading:
    reading = ModelReading(count=count, sum_seconds=total)
    return Reading("vllm", dict.fromkeys(models, reading), start_time=start)


def test_the_first_scrape_gives_no_window_the_second_does() -> None:
    state = TargetState()
    assert state.observe(scrape(100, 10.0), 0.0, 60.0) == ()
    (stats,) = state.observe(scrape(110, 12.0), 5.0, 60.0)
    assert (stats.model, stats.version) == LLAMA
    assert stats.window.requests == 10
    assert stats.window.mean_seconds == pytest.approx(0.2)


def test_a_new_start_time_is_a_restart() -> None:
    state = TargetState()
    state.observe(scrape(100, 10.0, start=1.0), 0.0, 60.0)
    # counters grew past their old values, but the server restarted: all of it is new
    (stats,) = state.observe(scrape(150, 15.0, start=2.0), 5.0, 60.0)
    assert stats.window.requests == 150
    assert stats.window.resets == 1


def test_an_outage_longer_than_the_window_starts_afresh() -> None:
    state = TargetState()
    state.observe(scrape(100, 10.0), 0.0, 60.0)
    assert state.observe(scrape(200, 20.0), 61.0, 60.0) == ()  # no delta across the outage
    (stats,) = state.observe(scrape(210, 21.0), 66.0, 60.0)
    assert stats.window.requests == 10


def test_a_failed_scrape_slides_the_window_on() -> None:
    state = TargetState()
    state.observe(scrape(100, 10.0), 0.0, 10.0)
    state.observe(scrape(110, 11.0), 5.0, 10.0)
    state.fail(14.0)
    assert len(state.windows[LLAMA].deltas) == 1
    state.fail(15.0)
    assert len(state.windows[LLAMA].deltas) == 0


def test_models_the_server_stops_showing_are_forgotten() -> None:
    state = TargetState()
    state.observe(scrape(100, 10.0, models=(LLAMA, MISTRAL)), 0.0, 60.0)
    stats = state.observe(scrape(110, 11.0, models=(MISTRAL,)), 5.0, 60.0)
    assert [(s.model, s.version) for s in stats] == [MISTRAL]
    assert list(state.windows) == [MISTRAL]


def test_a_new_window_length_starts_the_window_again() -> None:
    state = TargetState()
    state.observe(scrape(100, 10.0), 0.0, 60.0)
    assert state.observe(scrape(110, 11.0), 5.0, 30.0) == ()
    assert state.windows[LLAMA].window == 30.0


def test_targets_count_errors_and_forget_gone_targets() -> None:
    targets = Targets()
    vllm = targets.get("vllm")
    assert targets.get("vllm") is vllm
    targets.get("triton")
    targets.count_error("vllm", "timeout")
    targets.count_error("vllm", "timeout")
    targets.count_error("triton", "refused")
    assert targets.errors == {("vllm", "timeout"): 2, ("triton", "refused"): 1}
    targets.keep({"vllm"})
    assert list(targets.states) == ["vllm"]
    assert targets.errors == {("vllm", "timeout"): 2}
