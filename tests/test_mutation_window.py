"""Boundaries of serving/window.py that mutation testing found untested (issue 19).

`histogram_quantile` is checked twice on one table: against values worked by hand from
PromQL's rule, and against a real Prometheus evaluating `histogram_quantile` on the same
buckets (so the hand values are PromQL's, not ours). The rule, from Prometheus'
promql/quantile.go `bucketQuantile`: q < 0 is -Inf, q > 1 is +Inf, NaN q is NaN; the
bucket is the FIRST whose cumulative count is >= rank = q * total (sort.Search); a rank in
the +Inf bucket answers the highest finite bound; a first bucket with a bound <= 0 answers
that bound; otherwise interpolate linearly from the bucket's lower bound (0 for the first).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_exporter_ml.serving.profiles import Histogram, ModelReading
from node_exporter_ml.serving.window import Delta, ModelWindow, delta, histogram_quantile, summarize
from tools.promserver import PrometheusServer

INF = math.inf
NAN = math.nan

# (id, q, bounds, cumulative counts, expected worked by hand)
QUANTILE_CASES = [
    # rank 10 equals bucket 0's count: bucket 0 is the first with count >= rank, so
    # 0 + 0.1 * 10/10 = 0.1 (a strict > would pick bucket 2 and answer 0.2)
    ("tie at an empty next bucket", 0.5, (0.1, 0.2, 0.4, INF), (10, 10, 20, 20), 0.1),
    # rank 7 equals bucket 1's count and bucket 2 is empty: 1 + 1 * (7-5)/2 = 2
    ("tie at bucket 1", 0.5, (1.0, 2.0, 4.0, INF), (5, 7, 7, 14), 2.0),
    # q = 0: rank 0 is in bucket 0 (3 >= 0), 0 + 1 * 0/3 = 0, not -Inf
    ("q zero", 0.0, (1.0, 2.0, INF), (3, 5, 5), 0.0),
    # q = 1: rank 5 first reached in bucket 1, 1 + 1 * (5-3)/2 = 2, not +Inf
    ("q one", 1.0, (1.0, 2.0, INF), (3, 5, 5), 2.0),
    ("q below zero", -0.5, (1.0, 2.0, INF), (3, 5, 5), -INF),
    ("q above one", 1.01, (1.0, 2.0, INF), (3, 5, 5), INF),
    ("q NaN", NAN, (1.0, 2.0, INF), (3, 5, 5), NAN),
    # a single observation: rank 0.5 in bucket 0, 0 + 1 * 0.5/1 = 0.5
    ("one observation", 0.5, (1.0, 2.0, INF), (1, 1, 1), 0.5),
    # fewer than one observation (a rate): rank 0.1 in bucket 0, 0.1/0.2 of the way to 1
    ("fractional counts", 0.5, (1.0, 2.0, INF), (0.2, 0.4, 0.4), 1.0),
    # bucket 1 starts at bucket 0's bound: rank 3.5, 1 + 1 * (3.5-3)/1 = 1.5
    ("second bucket interpolates from the first bound", 0.875, (1.0, 2.0, INF), (3, 4, 4), 1.5),
    # rank 14.4 of 16 is past bucket 1 (8): in +Inf, answer the highest finite bound
    ("rank in +Inf", 0.9, (1.0, 2.0, INF), (4, 8, 16), 2.0),
    # a first bound of exactly 0 answers 0 (bucket 0 holds rank 2)
    ("first bound zero", 0.5, (0.0, 1.0, INF), (2, 4, 4), 0.0),
    # q = 0 with a first bound of 0 and nothing in it: still that bound (checked before 0/0)
    ("q zero, first bound zero and empty", 0.0, (0.0, 1.0, INF), (0, 4, 4), 0.0),
    # a negative first bound answers that bound
    ("first bound negative", 0.25, (-1.0, 1.0, INF), (1, 4, 4), -1.0),
    # q = 0 with an empty first bucket: 0 + 1 * 0/0 is NaN in PromQL
    ("q zero, empty first bucket", 0.0, (1.0, 2.0, INF), (0, 5, 5), NAN),
    ("no observations", 0.5, (1.0, 2.0, INF), (0, 0, 0), NAN),
    # no observations is NaN before the bound <= 0 rule could answer -1
    ("no observations, first bound negative", 0.5, (-1.0, 1.0, INF), (0, 0, 0), NAN),
    # counts that dip (buckets scraped at different moments) are raised to the max so far:
    # (4, 3, 8) -> (4, 4, 8); rank 4 is in bucket 0: 0 + 1 * 4/4 = 1
    ("non-monotonic counts", 0.5, (1.0, 2.0, INF), (4, 3, 8), 1.0),
]
IDS = [case[0] for case in QUANTILE_CASES]


def _same(got: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(got)
    return got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("name", "q", "bounds", "counts", "expected"), QUANTILE_CASES, ids=IDS)
def test_histogram_quantile_by_hand(name, q, bounds, counts, expected):
    assert _same(histogram_quantile(q, bounds, counts), expected), name


def _promql(q: float, bounds: tuple[float, ...], counts: tuple[float, ...]) -> str:
    """histogram_quantile over literal buckets: one vector(count) per bucket, labelled le."""
    series = [
        f'label_replace(vector({c!r}), "le", "{"+Inf" if math.isinf(b) else repr(b)}", "", "")'
        for b, c in zip(bounds, counts, strict=True)
    ]
    return f"histogram_quantile({'NaN' if math.isnan(q) else repr(q)}, {' or '.join(series)})"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(Path(tmp_path_factory.mktemp("prom")), []).start()
    yield server
    server.stop()


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "q", "bounds", "counts", "expected"), QUANTILE_CASES, ids=IDS)
def test_histogram_quantile_as_prometheus(prometheus, name, q, bounds, counts, expected):
    result = prometheus.query(_promql(q, bounds, counts))
    assert len(result) == 1, result
    answer = float(result[0]["value"][1])  # "NaN", "+Inf", "-Inf" parse as floats
    assert _same(answer, expected), f"{name}: Prometheus says {answer}"
    assert _same(histogram_quantile(q, bounds, counts), answer)


# --- delta(): the increase between two scrapes, and what counts as a restart -------------

BOUNDS = (0.1, 1.0, INF)


def test_delta_of_growing_counters_is_their_difference():
    old = ModelReading(100, 10.0, Histogram(BOUNDS, (50, 90, 100)), 100, 2, 4)
    new = ModelReading(130, 15.0, Histogram(BOUNDS, (60, 110, 130)), 130, 3, 6)
    d = delta(old, new, t=10.0, seconds=5.0)  # restarted left at its default
    assert (d.t, d.seconds) == (10.0, 5.0)
    assert (d.count, d.sum_seconds, d.requests, d.errors) == (30, 5.0, 30, 1)
    assert (d.bounds, d.buckets) == (BOUNDS, (10, 20, 30))
    assert d.in_flight == 6  # a gauge: the new value, not a difference
    assert d.reset is False


def test_delta_idle_scrape_is_zero_not_a_reset():
    same = ModelReading(100, 10.0, Histogram(BOUNDS, (50, 90, 100)), 100, 2)
    d = delta(same, same, t=5.0, seconds=5.0)
    assert d.reset is False
    assert (d.count, d.requests, d.errors, d.buckets) == (0, 0, 0, (0, 0, 0))


@pytest.mark.parametrize(
    ("old", "new", "expected_count", "expected_requests", "expected_errors"),
    [
        # Triton-style count and sum only: the count fell from 1000 to 20, the new process
        # served 20 (PromQL increase() takes the value after a reset as the increase)
        (ModelReading(1000, 100.0), ModelReading(20, 2.0), 20, None, None),
        # requests alone fell (no latency counters): 30 since the restart
        (ModelReading(requests=500), ModelReading(requests=30), 0.0, 30, None),
        # errors alone fell while requests grew: the restart still resets every counter
        (
            ModelReading(requests=500, errors=5),
            ModelReading(requests=530, errors=1),
            0.0,
            530,
            1,
        ),
    ],
    ids=["count fell", "requests fell", "errors fell"],
)
def test_delta_counter_that_fell_is_a_restart(
    old, new, expected_count, expected_requests, expected_errors
):
    d = delta(old, new, t=5.0, seconds=5.0)
    assert d.reset is True
    assert (d.count, d.requests, d.errors) == (expected_count, expected_requests, expected_errors)


def test_delta_bucket_that_fell_is_a_restart_even_when_the_count_grew():
    # the new process served 120 requests (more than the old 100) with a different shape:
    # bucket 0 fell from 50 to 40, which only a restart explains; the new counts are the
    # increase, bucket by bucket
    old = ModelReading(100, 10.0, Histogram(BOUNDS, (50, 90, 100)))
    new = ModelReading(120, 13.0, Histogram(BOUNDS, (40, 100, 120)))
    d = delta(old, new, t=5.0, seconds=5.0)
    assert d.reset is True
    assert (d.count, d.sum_seconds) == (120, 13.0)
    assert (d.bounds, d.buckets) == (BOUNDS, (40, 100, 120))


def test_delta_histogram_cases():
    hist = Histogram(BOUNDS, (5, 9, 10))
    other_layout = Histogram((0.5, INF), (8, 10))
    # no histogram on either side: no buckets at all (None, not an empty layout)
    plain = delta(ModelReading(1, 0.1), ModelReading(2, 0.2), t=1.0, seconds=1.0)
    assert (plain.bounds, plain.buckets) == (None, None)
    # the first scrape with a histogram: its counts are the increase
    first = delta(ModelReading(10, 1.0), ModelReading(10, 1.0, hist), t=1.0, seconds=1.0)
    assert (first.bounds, first.buckets) == (BOUNDS, (5, 9, 10))
    # the layout changed without a restart: no bucket delta can be taken
    moved = delta(
        ModelReading(10, 1.0, hist), ModelReading(10, 1.0, other_layout), t=1.0, seconds=1.0
    )
    assert (moved.bounds, moved.buckets, moved.reset) == (None, None, False)
    # the layout changed with a restart: the new histogram is the increase
    restarted = delta(
        ModelReading(10, 1.0, hist),
        ModelReading(10, 1.0, other_layout),
        t=1.0,
        seconds=1.0,
        restarted=True,
    )
    assert (restarted.bounds, restarted.buckets) == ((0.5, INF), (8, 10))


def test_second_scrape_at_the_same_instant_adds_no_delta():
    w = ModelWindow(window=60.0)
    w.observe(5.0, ModelReading(10, 1.0))
    w.observe(5.0, ModelReading(12, 1.2))  # no time passed: no rate can be taken
    assert w.stats() is None
    w.observe(6.0, ModelReading(15, 1.5))  # measured from the latest reading (12 at t=5)
    s = w.stats()
    assert s is not None
    assert (s.seconds, s.requests) == (1.0, 3)


# --- summarize(): window figures from the deltas -----------------------------------------


def _window(*deltas: Delta):  # type: ignore[no-untyped-def]
    stats = summarize(list(deltas))
    assert stats is not None
    return stats


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        # no requests counter: the histogram count holds the successes, errors come on top:
        # 10 / (90 + 10)
        ((Delta(1.0, 1.0, count=40, errors=4), Delta(2.0, 1.0, count=50, errors=6)), 0.1),
        # a requests counter is the denominator when there is one: 5 / 100, not 5 / (60 + 5)
        ((Delta(1.0, 1.0, count=60, requests=100, errors=5),), 0.05),
        # errors read a moment after requests can exceed them: capped at 1
        ((Delta(1.0, 1.0, count=4, requests=4, errors=5),), 1.0),
        # one request, one error
        ((Delta(1.0, 1.0, count=0, requests=1, errors=1),), 1.0),
        # nothing served and nothing failed: no ratio, not 0/0
        ((Delta(1.0, 1.0, count=0, requests=0, errors=0),), None),
        # no errors counter at all: no ratio
        ((Delta(1.0, 1.0, count=10, requests=10),), None),
    ],
    ids=[
        "errors over count plus errors",
        "errors over requests",
        "capped at one",
        "one of one",
        "idle",
        "no errors counter",
    ],
)
def test_summarize_error_ratio(deltas, expected):
    ratio = _window(*deltas).error_ratio
    if expected is None:
        assert ratio is None
    else:
        assert ratio == pytest.approx(expected)


def test_summarize_rates_means_and_gauges():
    s = _window(Delta(1.0, 1.0, count=1, sum_seconds=0.25, in_flight=2.0))
    assert s.requests_per_second == 1.0  # one request in exactly one second
    assert s.mean_seconds == 0.25  # the mean of a single request is that request
    s = _window(
        Delta(1.0, 0.5, count=2, sum_seconds=0.5, in_flight=2.0),
        Delta(2.0, 0.5, count=2, sum_seconds=0.5, in_flight=4.0),
        Delta(3.0, 1.0, count=0, in_flight=None),
    )
    assert (s.seconds, s.requests, s.requests_per_second) == (2.0, 4, 2.0)
    assert s.in_flight == 3.0  # the mean of the gauges that were read (2 and 4)
    # a window of no time (only reachable by calling summarize directly): no rate, not 1/0
    s = _window(Delta(1.0, 0.0, count=5))
    assert s.requests_per_second == 0.0
    assert s.in_flight is None
