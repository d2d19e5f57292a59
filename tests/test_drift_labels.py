from __future__ import annotations

import math

import pytest

from node_exporter_ml.drift import Table, evaluate
from node_exporter_ml.drift.engine.labels import (
    OTHER,
    calibration,
    class_key,
    classification,
    confidence_histogram,
    prediction_drift,
    prediction_summary,
)


@pytest.mark.parametrize(
    ("value", "key"),
    [(1, "1"), (1.0, "1"), ("1", "1"), (True, "true"), (False, "false"), (0.25, "0.25"),
     ("cat", "cat"), (math.inf, "inf")],
    ids=["int", "integral float", "string", "true", "false", "float", "label", "inf"],
)  # fmt: skip
def test_class_key(value, key):
    assert class_key(value) == key


def test_classification_by_hand():
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("c", "a"), (1, 1.0), ("x", None)]
    out = classification(pairs)
    assert out["count"] == 6  # the pair without a prediction is left out
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["classes"]["a"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert out["classes"]["b"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "support": 2}
    assert out["classes"]["c"] == {"precision": None, "recall": 0.0, "support": 1}
    cells = {(c["actual"], c["predicted"]): c["count"] for c in out["confusion"]}
    assert cells == {("a", "a"): 1, ("a", "b"): 1, ("b", "b"): 2, ("c", "a"): 1, ("1", "1"): 1}


def test_classification_caps_classes_and_pools_the_rest():
    pairs = [(f"k{i}", f"k{i}") for i in range(30) for _ in range(30 - i)]
    pairs.append(("k29", "k0"))
    out = classification(pairs, max_classes=5)
    assert sorted(out["classes"]) == ["k0", "k1", "k2", "k3", "k4"]
    cells = {(c["actual"], c["predicted"]): c["count"] for c in out["confusion"]}
    assert set(cells) == {("k0", "k0"), ("k1", "k1"), ("k2", "k2"), ("k3", "k3"), ("k4", "k4"),
                          (OTHER, OTHER), (OTHER, "k0")}  # fmt: skip
    assert sum(cells.values()) == len(pairs)
    # Accuracy counts exact classes: the pooled k29 -> k0 miss is a miss, pooled hits are hits.
    assert out["accuracy"] == pytest.approx((len(pairs) - 1) / len(pairs))


def test_classification_empty():
    assert classification([]) == {
        "count": 0, "accuracy": None, "precision_macro": None, "recall_macro": None,
        "f1_macro": None, "classes": {}, "confusion": [],
    }  # fmt: skip


def test_macro_scores_by_hand():
    # a: 2 labelled, predicted a twice (1 hit); b: 2 labelled, predicted 3 times (2 hits);
    # c: labelled once, never predicted; d: predicted once, never labelled.
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("c", "a"), ("e", "d"), ("e", "e")]
    out = classification(pairs)
    precision = {"a": 1 / 2, "b": 2 / 3, "c": 0.0, "d": 0.0, "e": 1.0}
    recall = {"a": 1 / 2, "b": 1.0, "c": 0.0, "d": 0.0, "e": 1 / 2}
    f1 = {k: 2 * p * recall[k] / (p + recall[k]) if p + recall[k] else 0.0
          for k, p in precision.items()}  # fmt: skip
    assert out["precision_macro"] == pytest.approx(sum(precision.values()) / 5)
    assert out["recall_macro"] == pytest.approx(sum(recall.values()) / 5)
    assert out["f1_macro"] == pytest.approx(sum(f1.values()) / 5)
    # The capped per-class table does not change the macro figures.
    capped = classification(pairs, max_classes=2)
    assert len(capped["classes"]) == 2
    assert capped["f1_macro"] == out["f1_macro"]


def test_calibration_by_hand():
    triples = [
        ("x", "x", 0.95), ("x", "y", 0.95), ("x", "x", 0.91), ("x", "x", 1.0),  # bin 9
        ("x", "x", 0.55), ("x", "y", 0.5),  # bin 5
        ("x", "x", 0.0),  # bin 0
        ("x", None, 0.9), (None, "x", 0.9), ("x", "x", None), ("x", "x", math.nan),
        ("x", "x", 1.5),  # left out
    ]  # fmt: skip
    out = calibration(triples)
    assert out["count"] == 7
    bins = out["bins"]
    assert [b["count"] for b in bins] == [1, 0, 0, 0, 0, 2, 0, 0, 0, 4]
    assert bins[9]["accuracy"] == 0.75
    assert bins[9]["confidence"] == pytest.approx((0.95 + 0.95 + 0.91 + 1.0) / 4)
    assert bins[1] == {"count": 0, "accuracy": None, "confidence": None}
    want = (4 * abs(0.75 - 0.9525) + 2 * abs(0.5 - 0.525) + 1 * abs(1.0 - 0.0)) / 7
    assert out["error"] == pytest.approx(want)


def test_calibration_of_a_calibrated_and_an_overconfident_model():
    import random

    rng = random.Random(5)
    calibrated = []
    for _ in range(20000):
        conf = rng.random()
        calibrated.append(("y", "y" if rng.random() < conf else "n", conf))
    assert calibration(calibrated)["error"] < 0.02
    # Always 99% sure, right 70% of the time: the error is 0.29.
    overconfident = [("y", "y" if i % 10 < 7 else "n", 0.99) for i in range(1000)]
    assert calibration(overconfident)["error"] == pytest.approx(0.29)
    assert calibration([])["error"] is None


def test_confidence_histogram_edges():
    out = confidence_histogram([0.0, 0.05, 0.1, 0.95, 1.0, None, math.nan, 1.5, -0.1], bins=10)
    assert out["counts"] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert out["count"] == 5
    assert out["mean"] == pytest.approx((0.05 + 0.1 + 0.95 + 1.0) / 5)
    assert out["edges"][0] == 0.0
    assert out["edges"][-1] == 1.0
    assert confidence_histogram([])["mean"] is None


def test_prediction_summary_kinds():
    cat = prediction_summary(["a", "b", "a", None])
    assert cat == {"count": 3, "kind": "cat", "shares": {"a": 2 / 3, "b": 1 / 3}}
    num = prediction_summary([float(i) for i in range(20)])
    assert num["kind"] == "num"
    assert num["mean"] == pytest.approx(9.5)
    assert (num["min"], num["max"]) == (0.0, 19.0)
    assert prediction_summary([None]) == {"count": 0, "kind": None}


def test_prediction_drift_uses_the_engine_defaults():
    ref = ["ok"] * 90 + ["fraud"] * 10
    cur = ["ok"] * 60 + ["fraud"] * 40
    out = prediction_drift(ref, cur, evaluate, Table.from_columns)
    expected = evaluate({"prediction": ref}, {"prediction": cur})["columns"]["prediction"]
    assert out == expected
    assert out is not None
    assert out["stattest"] == "z"
    assert out["drift_detected"] is True
    assert prediction_drift([], cur, evaluate, Table.from_columns) is None
