"""Model quality from late labels against Evidently 0.7.23 (tests/fixtures/quality/generate.py).

Regression: the six RegressionPreset figures. Classification: accuracy and, for more than two
classes, ClassificationPreset's Precision, Recall and F1Score (scikit-learn's macro averages);
for two classes Evidently reports the positive class instead, so the macro figures are
compared with the mean of its per-label figures, and its Precision/Recall/F1 with the positive
class's own. Every per-label figure is compared too. All within 1e-6 relative.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node_exporter_ml.drift.engine.labels import class_key, classification
from node_exporter_ml.drift.engine.regression import regression_quality

FIXTURES = Path(__file__).parent / "fixtures" / "quality"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CASES = EXPECTED["cases"]
REGRESSION = sorted(k for k, v in CASES.items() if v["task"] == "regression")
CLASSIFICATION = sorted(k for k, v in CASES.items() if v["task"] == "classification")

# Evidently's metric -> our key in the labels section of a regression model's report.
REGRESSION_KEYS = {
    "MeanError": "mean_error",
    "MAE": "mae",
    "RMSE": "rmse",
    "R2Score": "r2",
    "AbsMaxError": "max_abs_error",
}


def close(got: Any, want: Any) -> bool:
    if want is None:
        return got is None
    return got == pytest.approx(want, rel=1e-6, abs=0)


def pairs(case: dict[str, Any]) -> list[tuple[Any, Any]]:
    return list(zip(case["labels"], case["predictions"], strict=True))


def test_the_cases_cover_the_issue():
    assert EXPECTED["generated_with"]["evidently"] == "0.7.23"
    assert len(REGRESSION) >= 5
    assert len(CLASSIFICATION) >= 3
    assert any(0.0 in CASES[k]["labels"] for k in REGRESSION)
    assert any(len(CASES[k]["labels"]) < 10 for k in REGRESSION)
    assert any("pos_label" in CASES[k] for k in CLASSIFICATION)


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_matches_evidently(name):
    case = CASES[name]
    want = case["evidently"]
    got = regression_quality(pairs(case))
    assert got["count"] == len(case["labels"])
    assert got["skipped"] == 0
    for metric, key in REGRESSION_KEYS.items():
        assert close(got[key], want[metric]), (metric, got[key], want[metric])
    # MAPE is a percentage in Evidently, a ratio here.
    assert close(got["mape_ratio"], want["MAPE"] / 100), (got["mape_ratio"], want["MAPE"])
    assert sum(got["error_histogram"]["counts"]) == len(case["labels"])
    assert sum(c[2] for c in got["predicted_vs_actual"]["cells"]) == len(case["labels"])


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_classification_matches_evidently(name):
    case = CASES[name]
    want = case["evidently"]
    got = classification(pairs(case))
    assert close(got["accuracy"], want["Accuracy"])
    for ours, by_label in (
        ("precision", "PrecisionByLabel"),
        ("recall", "RecallByLabel"),
    ):
        for label, value in want[by_label].items():
            assert close(got["classes"][class_key(label)][ours], value), (ours, label)
    seen = {class_key(v) for v in case["labels"] + case["predictions"]}
    macro = {"precision_macro": "Precision", "recall_macro": "Recall", "f1_macro": "F1Score"}
    if "pos_label" in case:
        by_label = {"precision_macro": "PrecisionByLabel", "recall_macro": "RecallByLabel",
                    "f1_macro": "F1ByLabel"}  # fmt: skip
        for ours, theirs in by_label.items():
            assert {class_key(k) for k in want[theirs]} == seen
            mean = sum(want[theirs].values()) / len(want[theirs])
            assert close(got[ours], mean), ours
        positive = got["classes"][class_key(case["pos_label"])]
        assert close(positive["precision"], want["Precision"])
        assert close(positive["recall"], want["Recall"])
    else:
        assert len(seen) > 2
        for ours, theirs in macro.items():
            assert close(got[ours], want[theirs]), (ours, got[ours], want[theirs])
