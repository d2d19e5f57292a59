"""Evidently's test-choice and verdict boundaries, both sides, against Evidently 0.7.23 (issue 19).

Mutation testing showed the choice at Evidently's edges could flip unnoticed (`> 20` ->
`>= 20` distinct values passed the whole suite). tests/fixtures/drift/boundaries.py builds
cases that sit on each edge, one column on each side, and stores what Evidently itself
answered on them (boundaries.json); here the engine must give the same test, threshold,
verdict and score on every column, and the same dataset verdict.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from node_exporter_ml.drift import Table, evaluate
from node_exporter_ml.drift.engine.stattests import Sample
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
