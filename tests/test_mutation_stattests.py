"""Evidently's test-choice and verdict boundaries, both sides, against Evidently 0.7.23 (issue 19).

Mutation testing showed the choice at Evidently's edges could flip unnoticed (`> 20` ->
`>= 20` distinct values passed the whole suite). tests/fixtures/drift/boundaries.py builds
cases that sit on each edge, one column on each side, and stores what Evidently itself
answered on them (boundaries.json); here the engine must give the same test, threshold,
verdict and score on every column, and the same dataset verdict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from node_exporter_ml.drift import Table, evaluate
from node_exporter_ml.drift.engine.stattests import (
    STATTESTS,
    Array,
    Sample,
    _sorted_labels,
    chisquare,
    cramer_von_mises,
    epps_singleton,
    hellinger,
    psi,
    tvd,
    z,
)
from tests.drift_helpers import fixture_module

FIXTURES = Path(__file__).parent / "fixtures" / "drift"
STORED = json.loads((FIXTURES / "boundaries.json").read_text())


def _cases() -> ModuleType:
    return fixture_module("drift_boundary_cases", FIXTURES / "boundaries.py")


def test_stored_answers_are_evidentlys() -> None:
    assert STORED["generated_with"]["evidently"] == "0.7.23"
    assert sorted(STORED["cases"]) == sorted(_cases().CASES)


@pytest.mark.parametrize("name", sorted(STORED["cases"]))
def test_boundary_matches_evidently(name: str) -> None:
    entry = STORED["cases"][name]
    built: dict[str, Any] = _cases().build(name)
    assert _cases().fingerprint(built) == entry["fingerprint"], "case data changed: regenerate"
    want = entry["evidently"]
    report = evaluate(
        Table.from_columns(built["reference"]),
        Table.from_columns(built["current"]),
        **entry["options"],
        data_quality=False,
    )
    assert sorted(report["columns"]) == sorted(want["columns"])
    for col, expected in want["columns"].items():
        got = report["columns"][col]
        kind = "num" if col in want["column_types"]["num"] else "cat"
        assert got["column_type"] == kind, col
        assert got["stattest"] == expected["stattest"], col
        assert got["threshold"] == expected["threshold"], col
        assert got["drift_detected"] == expected["drift_detected"], col
        assert got["score"] == pytest.approx(expected["score"], rel=1e-6, abs=1e-12), col
    dataset = report["dataset"]
    assert dataset["number_of_drifted_columns"] == want["dataset"]["number_of_drifted_columns"]
    assert dataset["share_of_drifted_columns"] == pytest.approx(
        want["dataset"]["share_of_drifted_columns"]
    )
    assert dataset["dataset_drift"] == want["dataset"]["dataset_drift"]


@pytest.mark.parametrize(
    ("reference", "current"),
    [
        (np.array([2**63, 2**63 + 1, 2**63 + 1], np.uint64), np.array([2**63], np.uint64)),
        (np.array([2**53, 2**53 + 1, 2**53 + 1], np.int64), np.array([2**53], np.int64)),
        (np.array([2**53, 2**53 + 1, 2**53 + 1], np.int64), np.array([True])),
    ],
    ids=["uint64 above 2**63", "int64 above 2**53", "int64 with bools"],
)
def test_labels_of_large_integers_stay_distinct(reference, current):
    # float64 holds integers exactly only up to 2**53: counting these as floats would merge
    # the two neighbours into one label; as integers there are two (three with the bool)
    labels, ref_counts, cur_counts = Sample(reference, current).labels()
    expected = sorted({*reference.tolist(), *current.tolist()})
    assert [int(v) for v in labels] == [int(v) for v in expected]
    assert sum(ref_counts) == 3
    assert sum(cur_counts) == 1
    assert ref_counts.tolist()[-2:] == [1, 2]


# --- boundaries the mutation run found (issue 19): each against scipy or a hand-computed oracle --


def test_registry_compute_passes_the_sample_through() -> None:
    from scipy import stats

    ref, cur = np.array([0.1, 0.4, 0.9, 1.3, 2.0]), np.array([0.5, 1.1, 1.7, 2.4, 3.0, 3.3])
    got = STATTESTS["ks"].compute(Sample(ref, cur), "num")
    assert got == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=1e-12)


def test_n_unique_is_exact_or_above_the_cap_and_leaves_labels_uncounted() -> None:
    # 2 distinct reference values, 3 current ones, 5 together
    sample = Sample(np.array([1.0, 2.0, 2.0]), np.array([3.0, 4.0, 5.0]))
    for cap in range(7):
        count = sample.n_unique(cap)
        assert count > cap if cap < 5 else count == 5, cap
    # a numeric sample counts on the sorted values, not by building the label table
    assert sample._labels is None


def test_labels_of_a_numeric_side_and_a_text_side_are_counted_as_values() -> None:
    labels, ref_counts, cur_counts = Sample(
        np.array([1, 2, 2]), np.array(["a", "b"], dtype=object)
    ).labels()
    assert list(labels) == [1, 2, "a", "b"]
    assert Sample(np.array([1, 2, 2]), np.array(["a", "b"], dtype=object)).n_unique(3) == 4
    assert ref_counts.tolist() == [1, 2, 0, 0]
    assert cur_counts.tolist() == [0, 0, 1, 1]


def test_labels_of_uint64_with_bools_stay_integers() -> None:
    reference = np.array([2**63, 2**63 + 1, 2**63 + 1], np.uint64)
    labels, ref_counts, cur_counts = Sample(reference, np.array([True])).labels()
    assert [int(v) for v in labels] == [1, 2**63, 2**63 + 1]
    assert ref_counts.tolist() == [0, 1, 2]
    assert cur_counts.tolist() == [1, 0, 0]


def test_sorted_labels_of_mixed_types_order_by_type_then_text() -> None:
    assert _sorted_labels([1.5, 1, 2.5]) == [1, 1.5, 2.5]  # comparable: plain order
    # not comparable: Evidently fails; here type name first ("int" < "str"), then text
    assert _sorted_labels([2, "-x", 1]) == [1, 2, "-x"]


def _z_oracle(ref: list[Any], cur: list[Any], smallest: Any) -> float:
    """Pooled two-proportion Z-test (Evidently's z_stat_test), by hand."""
    from scipy import stats

    n1, n2 = len(ref), len(cur)
    p1 = sum(v != smallest for v in ref) / n1
    p2 = sum(v != smallest for v in cur) / n2
    p = (p1 * n1 + p2 * n2) / (n1 + n2)
    stat = (p1 - p2) / (p * (1 - p) * (1 / n1 + 1 / n2)) ** 0.5
    return float(2 * (1 - stats.norm.cdf(abs(stat))))


def test_z_tests_the_smallest_of_three_text_labels_seen_out_of_order() -> None:
    ref = ["c"] * 5 + ["a"] * 2 + ["b"] * 5
    cur = ["c"] * 3 + ["a"] * 6 + ["b"] * 2
    sample = Sample(np.array(ref, dtype=object), np.array(cur, dtype=object))
    assert z(sample) == pytest.approx(_z_oracle(ref, cur, "a"), rel=1e-9)
    assert z(sample) != pytest.approx(_z_oracle(ref, cur, "b"), rel=1e-3)


def test_chisquare_with_two_labels_is_scipys() -> None:
    from scipy import stats

    ref = np.array(["a"] * 6 + ["b"] * 4, dtype=object)
    cur = np.array(["a"] * 3 + ["b"] * 7, dtype=object)
    want = stats.chisquare([3, 7], [6.0, 4.0]).pvalue
    assert chisquare(Sample(ref, cur)) == pytest.approx(want, rel=1e-9)


def _psi_oracle(ref_pct: Array, cur_pct: Array) -> float:
    """Evidently's PSI: zero shares filled with min/1e6 when min <= 1e-4, else 1e-4."""
    ref_pct, cur_pct = ref_pct.astype(float), cur_pct.astype(float)
    for pct in (ref_pct, cur_pct):
        smallest = pct[pct > 0].min()
        pct[pct == 0] = smallest / 1e6 if smallest <= 1e-4 else 1e-4
    return float(np.sum((ref_pct - cur_pct) * np.log(ref_pct / cur_pct)))


def test_psi_bins_a_reference_whose_21st_value_comes_late() -> None:
    # the first 80 values hold 20 distinct ones; 10 more follow: 30 distinct, so sturges bins
    reference = np.concatenate((np.tile(np.arange(20.0), 4), np.arange(20.0, 30.0)))
    current = np.linspace(5.0, 35.0, 40)
    edges = np.histogram_bin_edges(np.concatenate((reference, current)), bins="sturges")
    want = _psi_oracle(
        np.histogram(reference, edges)[0] / reference.size,
        np.histogram(current, edges)[0] / current.size,
    )
    assert psi(Sample(reference, current), "num") == pytest.approx(want, rel=1e-9)


def test_psi_fills_empty_shares_below_the_1e4_boundary() -> None:
    # one "b" in 10,000 reference values: the smallest share is exactly 1e-4, so empty
    # shares get 1e-4 / 1e6 (Evidently's `<=`)
    ref = np.array(["a"] * 9999 + ["b"], dtype=object)
    cur = np.array(["a"] * 8 + ["c"] * 2, dtype=object)
    want = _psi_oracle(np.array([0.9999, 0.0001, 0.0]), np.array([0.8, 0.0, 0.2]))
    assert psi(Sample(ref, cur), "cat") == pytest.approx(want, rel=1e-9)


def test_hellinger_of_identical_shares_is_zero_despite_rounding() -> None:
    # twenty shares of 1/20: the Bhattacharyya coefficient sums to 1 + 2e-16
    values = np.array([f"v{i}" for i in range(20)], dtype=object)
    assert hellinger(Sample(values, values.copy()), "cat") == 0.0


@pytest.mark.parametrize(("n_ref", "n_cur"), [(1, 5), (5, 1), (1, 1)])
def test_cramer_von_mises_needs_two_values_a_side(n_ref: int, n_cur: int) -> None:
    sample = Sample(np.linspace(0.0, 1.0, n_ref), np.linspace(0.5, 2.0, n_cur))
    assert math.isnan(cramer_von_mises(sample))


@pytest.mark.parametrize(
    ("n_ref", "n_cur"),
    [(2, 2), (2, 3), (3, 2), (4, 6), (6, 4), (20, 2), (2, 20), (21, 2), (2, 21), (40, 30)],
)
def test_cramer_von_mises_is_scipys_exact_up_to_20_values_then_asymptotic(
    n_ref: int, n_cur: int
) -> None:
    # sizes where every count of the exact table fits its integer dtype (with more
    # combinations than the bound, the port, like the scipy it copies, counts in float16)
    from scipy import stats

    rng = np.random.default_rng(n_ref * 100 + n_cur)
    ref, cur = rng.normal(0.0, 1.0, n_ref), rng.normal(0.6, 1.0, n_cur)
    want = stats.cramervonmises_2samp(ref, cur, method="auto").pvalue
    assert cramer_von_mises(Sample(ref, cur)) == pytest.approx(want, rel=1e-9)


def test_epps_singleton_runs_when_the_pooled_iqr_is_one() -> None:
    from scipy import stats

    ref = np.arange(0.0, 7.0) / 6
    cur = np.arange(7.0, 13.0) / 6
    pooled = np.concatenate((ref, cur))
    assert stats.iqr(pooled) == 1.0
    want = stats.epps_singleton_2samp(ref, cur).pvalue
    assert epps_singleton(Sample(ref, cur)) == pytest.approx(want, rel=1e-9)


def _tvd_oracle(ref: Array, cur: Array, iterations: int = 1000) -> float:
    """Evidently's permutation TVD: np.random.seed(0), choice(pooled, n, replace=False)."""
    pooled = np.concatenate((ref, cur))
    keys = np.unique(pooled)

    def distance(a: Array, b: Array) -> float:
        pa = np.array([np.sum(a == k) for k in keys]) / a.size
        pb = np.array([np.sum(b == k) for k in keys]) / b.size
        return 0.5 * float(np.sum(np.abs(pa - pb)))

    observed = distance(ref, cur)
    rs = np.random.RandomState(0)
    hits = 0
    for _ in range(iterations):
        order = rs.permutation(pooled.size)
        hits += observed <= distance(pooled[order[: ref.size]], pooled[order[ref.size :]])
    return hits / iterations


def test_tvd_of_integers_with_a_rare_largest_value_is_evidentlys() -> None:
    # 9 appears once in 20 pooled values, so many permuted references miss the largest label
    ref = np.array([0] * 5 + [1] * 5)
    cur = np.array([0] * 5 + [1] * 4 + [9])
    assert tvd(Sample(ref, cur), iterations=200) == _tvd_oracle(ref, cur, 200)


def test_cramer_von_mises_exact_with_ties_is_scipys() -> None:
    # average ranks make the statistic a fraction: the exact p counts tables at or above it
    from scipy import stats

    ref, cur = np.array([0.0, 0.0, 1.0, 2.0]), np.array([1.0, 1.0, 2.0, 3.0, 3.0])
    want = stats.cramervonmises_2samp(ref, cur, method="exact").pvalue
    assert cramer_von_mises(Sample(ref, cur)) == pytest.approx(want, rel=1e-9)


def test_tvd_keeps_integer_labels_above_2_53_apart() -> None:
    big = 2**53
    ref = np.array([big] * 5 + [big + 1] * 5, dtype=np.int64)
    cur = np.array([big] * 5 + [big + 1] * 4 + [big + 9], dtype=np.int64)
    assert tvd(Sample(ref, cur), iterations=200) == _tvd_oracle(ref, cur, 200)
