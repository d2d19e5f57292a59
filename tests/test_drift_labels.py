from __future__ import annotations

import math

import pytest

from node_exporter_ml.drift import Table, evaluate
from node_exporter_ml.drift.labels import (
    OTHER,
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
    assert classification([]) == {"count": 0, "accuracy": None, "classes": {}, "confusion": []}


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
