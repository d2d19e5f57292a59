"""Prediction drift, confidence histograms and classification quality from late labels (pure).

Classes are compared by a canonical text form (`class_key`), so a prediction ``1`` and a
label ``1.0`` or ``"1"`` are the same class. Per-class figures are capped to the most frequent
`max_classes` classes; the rest are pooled as ``other`` in the confusion counts (accuracy is
always computed over the exact classes, never over the pooled ones).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

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
        return {"count": 0, "accuracy": None, "classes": {}, "confusion": []}
    correct = sum(y == p for y, p in keyed)
    kept = top_classes([c for pair in keyed for c in pair], max_classes)
    kept_set = set(kept)
    actual = Counter(y for y, _ in keyed)
    predicted = Counter(p for _, p in keyed)
    hits = Counter(y for y, p in keyed if y == p)
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
        "classes": classes,
        "confusion": [
            {"actual": a, "predicted": p, "count": k} for (a, p), k in sorted(confusion.items())
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
        if v is None or not math.isfinite(v) or not 0.0 <= v <= 1.0:
            continue
        counts[min(int(v * bins), bins - 1)] += 1
        total += v
        n += 1
    return {
        "edges": [round(i / bins, 10) for i in range(bins + 1)],
        "counts": counts,
        "count": n,
        "mean": total / n if n else None,
    }


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def prediction_summary(
    predictions: Sequence[Any], max_classes: int = MAX_CLASSES
) -> dict[str, Any]:
    """Describe predictions: class shares (classification) or mean/min/max (regression).

    Predictions are numerical when every one is a number and there are more than 10 distinct
    values (the engine's rule for integer columns); otherwise they are classes.
    """
    values = [p for p in predictions if p is not None]
    if not values:
        return {"count": 0, "kind": None}
    numeric = [float(v) for v in values if _is_number(v)]
    if len(numeric) == len(values) and len(set(numeric)) > 10:
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
) -> dict[str, Any] | None:
    """Drift of the prediction column: reference predictions against the window's.

    The engine's default test selection applies, as for any other column. Returns the
    column's result (``column_type``, ``stattest``, ``score``, ``threshold``,
    ``drift_detected``), or None when either side has no prediction.
    """
    ref = [v for v in reference if v is not None]
    cur = [v for v in current if v is not None]
    if not ref or not cur:
        return None
    report = evaluate(make_table({"prediction": ref}), make_table({"prediction": cur}))
    column = report["columns"].get("prediction")
    return dict(column) if column is not None else None
