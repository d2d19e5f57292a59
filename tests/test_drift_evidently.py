"""The drift engine against Evidently 0.7.23's answers, stored by tests/fixtures/drift/generate.py.

For every case: the same columns evaluated, the same column types, tests, thresholds and
verdicts, scores within 1e-6 relative, and the same dataset verdict. Text columns are the one
documented difference: Evidently runs a trained text classifier on them, this engine leaves them
out (and says so in ``not_evaluated``), so they are taken out of the dataset counts compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from node_exporter_ml.drift import Table, evaluate
from tests.drift_helpers import fixture_module

FIXTURES = Path(__file__).parent / "fixtures" / "drift"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CASE_NAMES = sorted(EXPECTED["cases"])


def _cases_module() -> ModuleType:
    return fixture_module("drift_fixture_cases", FIXTURES / "cases.py")


def load_case(name: str) -> tuple[Table, Table]:
    """The case's two tables: from the stored inputs, else rebuilt from its seed."""
    entry = EXPECTED["cases"][name]
    if entry["format"] == "csv":
        if "inputs" in entry:
            ref_text, cur_text = (FIXTURES / p for p in entry["inputs"])
            return Table.from_csv(ref_text.read_bytes()), Table.from_csv(cur_text.read_bytes())
        case = _cases_module().build(name)
        assert _cases_module().fingerprint(case) == entry["fingerprint"], "case data changed"
        return Table.from_csv(case["reference"].encode()), Table.from_csv(case["current"].encode())
    if "inputs" in entry:
        data: dict[str, Any] = json.loads((FIXTURES / entry["inputs"][0]).read_text())
    else:
        data = _cases_module().build(name)
        assert _cases_module().fingerprint(data) == entry["fingerprint"], "case data changed"
    return Table.from_columns(data["reference"]), Table.from_columns(data["current"])


def test_enough_varied_cases() -> None:
    cases = EXPECTED["cases"].values()
    tests = {col["stattest"] for case in cases for col in case["columns"].values()}
    assert len(CASE_NAMES) >= 12
    assert {"ks", "chisquare", "z", "wasserstein", "jensenshannon"} <= tests
    assert {"psi", "kl_div", "hellinger", "anderson", "cramer_von_mises", "ed"} <= tests
    assert {"mannw", "t_test", "TVD", "es"} <= tests
    assert EXPECTED["generated_with"]["evidently"] == "0.7.23"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_matches_evidently(name: str) -> None:
    entry = EXPECTED["cases"][name]
    reference, current = load_case(name)
    report = evaluate(reference, current, **entry["options"], data_quality=False)

    text = set(entry["column_types"]["text"])
    expected = {col: res for col, res in entry["columns"].items() if col not in text}
    assert sorted(report["columns"]) == sorted(expected)
    for col, want in expected.items():
        got = report["columns"][col]
        kind = "num" if col in entry["column_types"]["num"] else "cat"
        assert col in entry["column_types"][kind]
        assert got["column_type"] == kind, col
        assert got["stattest"] == want["stattest"], col
        assert got["threshold"] == want["threshold"], col
        assert got["score"] == pytest.approx(want["score"], rel=1e-6, abs=0), col
        assert got["drift_detected"] == want["drift_detected"], col
    for col in text:
        assert report["not_evaluated"][col].startswith("text column")

    dataset = report["dataset"]
    text_drifted = sum(1 for col in text if entry["columns"][col]["drift_detected"])
    assert dataset["number_of_columns"] == len(expected)
    assert dataset["number_of_drifted_columns"] == (
        entry["dataset"]["number_of_drifted_columns"] - text_drifted
    )
    if not text:
        assert dataset["share_of_drifted_columns"] == pytest.approx(
            entry["dataset"]["share_of_drifted_columns"], rel=1e-12
        )
        assert dataset["dataset_drift"] == entry["dataset"]["dataset_drift"]
