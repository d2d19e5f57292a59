"""Sliding windows from counter deltas: PromQL interpolation, resets and restarts."""

from __future__ import annotations

import math

import pytest

from node_exporter_ml.serving.profiles import Histogram, ModelReading
from node_exporter_ml.serving.window import ModelWindow, histogram_quantile, summarize

INF = math.inf


@pytest.mark.parametrize(
    ("q", "bounds", "counts", "expected"),
    [
        # Values worked by hand from PromQL's bucketQuantile.
        (0.5, (0.1, 0.2, 0.4, INF), (10, 20, 40, 40), 0.2),
        (0.25, (0.1, 0.2, 0.4, INF), (10, 20, 40, 40), 0.1),
        (0.75, (0.1, 0.2, 0.4, INF), (10, 20, 40, 40), 0.3),
        (0.9, (1.0, 2.0, INF), (50, 80, 100), 2.0),  # rank in +Inf: upper bound below it
        (0.5, (1.0, 2.0, INF), (0, 0, 0), math.nan),  # no observations
        (0.5, (INF,), (5,), math.nan),  # one bucket only
        (0.5, (1.0, 2.0), (5, 5), math.nan),  # no +Inf bucket
        (1.5, (1.0, INF), (5, 5), INF),
        (-0.1, (1.0, INF), (5, 5), -INF),
        (0.5, (-1.0, 1.0, INF), (6, 8, 8), -1.0),  # first bucket with a bound <= 0
        (0.5, (0.1, 0.2, 0.4, INF), (10, 9, 40, 40), 0.2 + 0.2 / 3),  # non-monotonic: max so far
    ],
)
def test_histogram_quantile_as_promql(q, bounds, counts, expected):
    got = histogram_quantile(q, bounds, counts)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


def reading(
    count: float, total: float, buckets: tuple[float, ...] | None = None, **kw
) -> ModelReading:
    hist = None
    if buckets is not None:
        hist = Histogram((0.1, 1.0, INF), buckets)
    return ModelReading(count=count, sum_seconds=total, histogram=hist, **kw)


def test_window_slides_over_deltas():
    w = ModelWindow(window=10.0)
    w.observe(0.0, reading(100, 10.0, (50, 90, 100)))
    w.observe(5.0, reading(110, 11.0, (60, 100, 110)))  # 10 requests, 0.1 s each
    w.observe(10.0, reading(130, 15.0, (60, 110, 130)))  # 20 requests, 0.2 s each
    s = w.stats()
    assert s is not None
    assert s.seconds == 10.0
    assert s.requests_per_second == pytest.approx(3.0)
    assert s.mean_seconds == pytest.approx(5.0 / 30)
    w.observe(15.0, reading(130, 15.0, (60, 110, 130)))  # idle 5 s: the first delta left
    s = w.stats()
    assert s is not None
    assert s.seconds == 10.0
    assert s.requests == 20
    assert s.mean_seconds == pytest.approx(0.2)
    w.observe(25.0, reading(130, 15.0, (60, 110, 130)))
    s = w.stats()
    assert s is not None
    assert s.requests == 0
    assert s.mean_seconds is None
    assert s.quantiles == ()


def test_counter_reset_counts_the_new_value_as_the_increase():
    w = ModelWindow(window=60.0)
    w.observe(0.0, reading(1000, 100.0, (400, 900, 1000), requests=1000, errors=5))
    w.observe(5.0, reading(20, 2.0, (10, 18, 20), requests=21, errors=1))  # restarted
    s = w.stats()
    assert s is not None
    assert s.resets == 1
    assert s.requests == 20
    assert s.mean_seconds == pytest.approx(0.1)
    assert s.error_ratio == pytest.approx(1 / 21)
    assert dict(s.quantiles)[0.5] == pytest.approx(0.1)


def test_restart_flag_resets_even_when_counters_grew():
    w = ModelWindow(window=60.0)
    w.observe(0.0, reading(10, 1.0))
    w.observe(5.0, reading(30, 3.0), restarted=True)  # new process already served 30
    s = w.stats()
    assert s is not None
    assert s.requests == 30


def test_bucket_layout_change_keeps_only_matching_deltas():
    w = ModelWindow(window=60.0)
    w.observe(0.0, reading(10, 1.0, (5, 9, 10)))
    w.observe(5.0, reading(20, 2.0, (10, 18, 20)))
    new_layout = Histogram((0.5, INF), (25, 30))
    w.observe(10.0, ModelReading(count=30, sum_seconds=3.0, histogram=new_layout))
    s = w.stats()
    assert s is not None
    assert s.requests == 20  # both deltas count for rate and mean
    assert s.quantiles == ()  # no bucket delta across the change
    w.observe(
        15.0, ModelReading(count=40, sum_seconds=4.0, histogram=Histogram((0.5, INF), (35, 40)))
    )
    s = w.stats()
    assert s is not None
    # Only the new layout's delta: 10 requests, all at or below 0.5 s.
    assert dict(s.quantiles)[0.5] == pytest.approx(0.25)


def test_counter_only_frameworks_have_mean_but_no_quantiles():
    w = ModelWindow(window=60.0)
    w.observe(0.0, reading(100, 5.0, requests=100, errors=0, in_flight=3))
    w.observe(10.0, reading(200, 7.0, requests=202, errors=2, in_flight=5))
    s = w.stats()
    assert s is not None
    assert s.mean_seconds == pytest.approx(0.02)
    assert s.quantiles == ()
    assert s.error_ratio == pytest.approx(2 / 102)
    assert s.in_flight == 5


def test_clock_going_backwards_adds_no_delta():
    w = ModelWindow(window=60.0)
    w.observe(10.0, reading(1, 1.0))
    w.observe(5.0, reading(2, 2.0))
    assert w.stats() is None


def test_summarize_nothing():
    assert summarize([]) is None
