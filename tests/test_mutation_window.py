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

from node_exporter_ml.serving.window import histogram_quantile

from .promserver import PrometheusServer

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
    # a negative first bound answers that bound
    ("first bound negative", 0.25, (-1.0, 1.0, INF), (1, 4, 4), -1.0),
    # q = 0 with an empty first bucket: 0 + 1 * 0/0 is NaN in PromQL
    ("q zero, empty first bucket", 0.0, (1.0, 2.0, INF), (0, 5, 5), NAN),
    ("no observations", 0.5, (1.0, 2.0, INF), (0, 0, 0), NAN),
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
