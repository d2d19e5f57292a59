"""Prediction drift, confidence histograms and classification quality from late labels (pure).

Classes are compared by a canonical text form (`class_key`), so a prediction ``1`` and a
label ``1.0`` or ``"1"`` are the same class. Per-class figures are capped to the most frequent
`max_classes` classes; the rest are pooled as ``other`` in the confusion counts (accuracy and
the macro scores are always computed over the exact classes, never over the pooled ones).

Macro precision, recall and F1 are scikit-learn's ``average="macro"``, which Evidently 0.7.23's
`ClassificationPreset` reports for more than two classes: the unweighted mean over every class
seen as a label or as a prediction, a class's score being 0 where it is undefined (precision of
a class never predicted, recall of a class never labelled). The calibration error is the
expected calibration error (ECE) of the predictions that carry a confidence, over
`CONFIDENCE_BINS` equal-width bins: sum over bins of (bin count / n) x |accuracy in the bin -
mean confidence in the bin|.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from node_exporter_ml.drift.engine.regression import as_float

OTHER = "other"
MAX_CLASSES = 20
CONFIDENCE_BINS = 10


def class_key(value: Any) -> str:
    """The canonical text of a class value: "true"/"false", "3" for 3 and 3.0, else str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return str(value)


def top_classes(values: Iterable[str], max_classes: int = MAX_CLASSES) -> list[str]:
    """The `max_classes` most frequent classes, most frequent first (ties by name)."""
    counts = Counter(values)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [k for k, _ in ranked[:max_classes]]


def classification(
    pairs: Sequence[tuple[Any, Any]], max_classes: int = MAX_CLASSES
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall and confusion counts of (label, prediction) pairs.

    Pairs whose prediction is None (no prediction recorded) are left out.

    Returns:
        ``{"count", "accuracy", "classes": {cls: {"precision", "recall", "support"}},
        "confusion": [{"actual", "predicted", "count"}]}``; precision or recall is None
        when nothing was predicted as, or labelled as, that class.
    """
    keyed = [(class_key(y), class_key(p)) for y, p in pairs if p is not None and y is not None]
    n = len(keyed)
    if n == 0:
        return {"count": 0, "accuracy": None, **macro_scores(Counter(), Counter(), Counter()),
                "classes": {}, "confusion": []}  # fmt: skip
    correct = sum(y == p for y, p in keyed)
    kept = top_classes([c for pair in keyed for c in pair], max_classes)
    kept_set = set(kept)
    actual = Counter(y for y, _ in keyed)
    predicted = Counter(p for _, p in keyed)
    hits = Counter(y for y, p in keyed if y == p)
    macro = macro_scores(actual, predicted, hits)
    classes: dict[str, dict[str, Any]] = {}
    for c in sorted(kept):
        classes[c] = {
            "precision": hits[c] / predicted[c] if predicted[c] else None,
            "recall": hits[c] / actual[c] if actual[c] else None,
            "support": actual[c],
        }

    def pooled(c: str) -> str:
        return c if c in kept_set else OTHER

    confusion = Counter((pooled(y), pooled(p)) for y, p in keyed)
    return {
        "count": n,
        "accuracy": correct / n,
        **macro,
        "classes": classes,
        "confusion": [
            {"actual": a, "predicted": p, "count": k} for (a, p), k in sorted(confusion.items())
        ],
    }


def macro_scores(
    actual: Counter[str], predicted: Counter[str], hits: Counter[str]
) -> dict[str, float | None]:
    """Macro precision, recall and F1 from per-class counts (labelled, predicted, correct).

    Returns:
        ``{"precision_macro", "recall_macro", "f1_macro"}``, None when there is no class.
    """
    classes = set(actual) | set(predicted)
    if not classes:
        return {"precision_macro": None, "recall_macro": None, "f1_macro": None}
    precision = recall = f1 = 0.0
    for c in classes:
        precision += hits[c] / predicted[c] if predicted[c] else 0.0
        recall += hits[c] / actual[c] if actual[c] else 0.0
        # 2PR / (P + R) = 2 hits / (predicted + actual); 0 when the class has no hit
        f1 += 2 * hits[c] / (predicted[c] + actual[c])
    k = len(classes)
    return {"precision_macro": precision / k, "recall_macro": recall / k, "f1_macro": f1 / k}


def _confidence_bin(value: float | None, bins: int) -> int | None:
    """The bin of a confidence over [0, 1] (the last bin includes 1); None if unusable."""
    if value is None or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return None
    return min(int(value * bins), bins - 1)


def calibration(
    triples: Iterable[tuple[Any, Any, float | None]], bins: int = CONFIDENCE_BINS
) -> dict[str, Any]:
    """Expected calibration error of (label, prediction, confidence) triples.

    Triples without a prediction, a label or a usable confidence are left out.

    Returns:
        ``{"count", "error", "bins": [{"count", "accuracy", "confidence"}]}``; ``error`` is
        None when no triple is left, a bin's accuracy and confidence are None when it is empty.
    """
    counts = [0] * bins
    correct = [0] * bins
    total = [0.0] * bins
    for label, prediction, confidence in triples:
        b = _confidence_bin(confidence, bins)
        if b is None or label is None or prediction is None:
            continue
        assert confidence is not None
        counts[b] += 1
        correct[b] += class_key(label) == class_key(prediction)
        total[b] += confidence
    n = sum(counts)
    error = sum(abs(correct[b] - total[b]) / n for b in range(bins) if counts[b]) if n else None
    return {
        "count": n,
        "error": error,
        "bins": [
            {
                "count": counts[b],
                "accuracy": correct[b] / counts[b] if counts[b] else None,
                "confidence": total[b] / counts[b] if counts[b] else None,
            }
            for b in range(bins)
        ],
    }


def confidence_histogram(
    values: Iterable[float | None], bins: int = CONFIDENCE_BINS
) -> dict[str, Any]:
    """Counts of confidences in `bins` equal bins over [0, 1] (the last bin includes 1).

    Values that are None, not finite, or outside [0, 1] are left out.
    """
    counts = [0] * bins
    total = 0.0
    n = 0
    for v in values:
        b = _confidence_bin(v, bins)
        if b is None:
            continue
        assert v is not None
        counts[b] += 1
        total += v
        n += 1
    return {
        "edges": [round(i / bins, 10) for i in range(bins + 1)],
        "counts": counts,
        "count": n,
        "mean": total / n if n else None,
    }


def prediction_summary(
    predictions: Sequence[Any], max_classes: int = MAX_CLASSES, *, numerical: bool = False
) -> dict[str, Any]:
    """Describe predictions: class shares (classification) or mean/min/max (regression).

    Predictions are numerical when every one is a number and either `numerical` is set (a
    regression model) or there are more than 10 distinct values (the engine's rule for
    integer columns); otherwise they are classes.
    """
    values = [p for p in predictions if p is not None]
    if not values:
        return {"count": 0, "kind": None}
    numeric = [f for f in map(as_float, values) if f is not None]
    if len(numeric) == len(values) and (numerical or len(set(numeric)) > 10):
        finite = [v for v in numeric if math.isfinite(v)]
        return {
            "count": len(values),
            "kind": "num",
            "mean": sum(finite) / len(finite) if finite else None,
            "min": min(finite) if finite else None,
            "max": max(finite) if finite else None,
        }
    keys = [class_key(v) for v in values]
    kept = set(top_classes(keys, max_classes))
    shares = Counter(k if k in kept else OTHER for k in keys)
    return {
        "count": len(values),
        "kind": "cat",
        "shares": {k: c / len(values) for k, c in sorted(shares.items())},
    }


Evaluate = Callable[..., Mapping[str, Any]]


def prediction_drift(
    reference: Sequence[Any],
    current: Sequence[Any],
    evaluate: Evaluate,
    make_table: Callable[[Mapping[str, Sequence[Any]]], Any],
    *,
    numerical: bool = False,
) -> dict[str, Any] | None:
    """Drift of the prediction column: reference predictions against the window's.

    The engine's default test selection applies, as for any other column; with `numerical`
    (a regression model) the predictions are floats, so the choice is the one for a
    numerical column whatever their number of distinct values. Returns the column's result
    (``column_type``, ``stattest``, ``score``, ``threshold``, ``drift_detected``), or None
    when either side has no prediction.
    """
    if numerical:
        ref = [f for f in map(as_float, reference) if f is not None]
        cur = [f for f in map(as_float, current) if f is not None]
    else:
        ref = [v for v in reference if v is not None]
        cur = [v for v in current if v is not None]
    if not ref or not cur:
        return None
    report = evaluate(make_table({"prediction": ref}), make_table({"prediction": cur}))
    column = report["columns"].get("prediction")
    return dict(column) if column is not None else None
