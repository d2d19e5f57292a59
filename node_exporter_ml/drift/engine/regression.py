"""A model's task, and the quality of a regressor from late labels, as Evidently computes it (pure).

A model is a ``classification`` model (the default) or a ``regression`` model, chosen with
``options.task`` on its reference. A regressor's predictions and labels are numbers; its quality
over the labelled window follows Evidently 0.7.23's `RegressionPreset` (its legacy
`RegressionQualityMetric`), with error = prediction - label:

- ``mean_error`` = mean(e); ``mae`` = mean(|e|); ``rmse`` = sqrt(mean(e^2));
  ``max_abs_error`` = max(|e|);
- ``mape_ratio`` = mean(a), Evidently's MAPE / 100, where a = |e| / max(label, eps) with eps the
  float64 machine epsilon, and a = 1 (100%) where |label| <= eps ("replace" zero handling, the
  0.7 default). Evidently divides by max(label, eps), not by |label|: a negative label counts
  as a division by eps, and so do we;
- ``r2`` = 1 - sum(e^2) / sum((label - mean(label))^2), scikit-learn's `r2_score`: 1 when both
  sums are 0, 0 when only the second is, null below two pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from node_exporter_ml.drift.engine.errors import OptionsError

CLASSIFICATION, REGRESSION = "classification", "regression"
TASKS = (CLASSIFICATION, REGRESSION)
TASK_OPTION = "task"
ERROR_BINS = 20
"""Equal-width bins of the error histogram."""
GRID_BINS = 20
"""Bins per axis of the predicted-vs-actual grid."""


def split_task(options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model's task and its other (drift) options.

    Raises:
        OptionsError: ``task`` is not one of `TASKS`.
    """
    rest = {k: v for k, v in options.items() if k != TASK_OPTION}
    task = options.get(TASK_OPTION, CLASSIFICATION)
    if task is None:
        return CLASSIFICATION, rest
    if task not in TASKS:
        raise OptionsError(
            f"option 'task' must be one of {', '.join(map(repr, TASKS))}, not {task!r}"
        )
    return str(task), rest


def as_float(value: Any) -> float | None:
    """An int or float (not a bool) as a float, NaN and infinities included; else None.

    An int too large for a float (JSON allows ``1`` followed by 400 zeros) is None, not an
    OverflowError.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def is_number(value: Any) -> bool:
    """True for a finite int or float (not a bool): what a regressor predicts and learns from."""
    number = as_float(value)
    return number is not None and math.isfinite(number)


def first_non_number(values: Iterable[Any]) -> tuple[int, Any] | None:
    """The position and value of the first value that is neither missing nor a finite number."""
    for i, value in enumerate(values):
        if value is not None and not is_number(value):
            return i, value
    return None


def regression_quality(pairs: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    """Regression quality of (label, prediction) pairs, as Evidently's RegressionPreset.

    Pairs without a prediction are left out; pairs whose label or prediction is not a finite
    number are counted as ``skipped`` and left out (a model whose task changed keeps its
    older observations).

    Returns:
        ``{"count", "skipped", "mean_error", "mae", "rmse", "mape_ratio", "r2",
        "max_abs_error", "error_histogram": {"edges", "counts"}, "predicted_vs_actual":
        {"edges", "cells": [[actual_bin, predicted_bin, count]]}}``; the figures are None
        without pairs (``r2`` below two).
    """
    import numpy as np

    joined = [(y, p) for y, p in pairs if p is not None and y is not None]
    kept = [(y, p) for y, p in joined if is_number(y) and is_number(p)]
    out: dict[str, Any] = {
        "count": len(kept),
        "skipped": len(joined) - len(kept),
        "mean_error": None,
        "mae": None,
        "rmse": None,
        "mape_ratio": None,
        "r2": None,
        "max_abs_error": None,
        "error_histogram": None,
        "predicted_vs_actual": None,
    }
    if not kept:
        return out
    y = np.array([float(v) for v, _ in kept])
    p = np.array([float(v) for _, v in kept])
    with np.errstate(over="ignore", invalid="ignore"):  # huge values overflow to inf: null
        err = p - y
        abs_err = np.abs(err)
        eps = np.finfo(np.float64).eps
        ape = abs_err / np.maximum(y, eps)
        ape[~(np.abs(y) > eps)] = 1.0
        out.update(
            mean_error=_finite(np.mean(err)),
            mae=_finite(np.mean(abs_err)),
            rmse=_finite(np.sqrt(np.mean(err**2))),
            mape_ratio=_finite(np.mean(ape)),
            r2=_r2(y, err),
            max_abs_error=_finite(np.max(abs_err)),
            error_histogram=_histogram(err),
            predicted_vs_actual=_grid(y, p),
        )
    return out


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _r2(y: Any, err: Any) -> float | None:
    import numpy as np

    if y.shape[0] < 2:
        return None  # scikit-learn: "not well-defined with less than two samples" (NaN)
    numerator = float(np.sum(err**2))
    denominator = float(np.sum((y - np.mean(y)) ** 2))
    if not (math.isfinite(numerator) and math.isfinite(denominator)):
        return None
    if denominator == 0.0:
        return 1.0 if numerator == 0.0 else 0.0
    return 1.0 - numerator / denominator


def _edges(values: Any, bins: int) -> Any:
    import numpy as np

    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    if not math.isfinite(hi - lo):  # a range over 1.8e308: halve the ends, exactly
        return np.linspace(lo / 2, hi / 2, bins + 1) * 2
    return np.linspace(lo, hi, bins + 1)


def _histogram(err: Any, bins: int = ERROR_BINS) -> dict[str, Any]:
    """Counts of the errors in `bins` equal-width bins over their range."""
    import numpy as np

    edges = _edges(err, bins)
    counts, _ = np.histogram(err[np.isfinite(err)], bins=edges)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _grid(y: Any, p: Any, bins: int = GRID_BINS) -> dict[str, Any]:
    """Counts of (actual, predicted) pairs on a `bins` x `bins` grid with shared edges."""
    import numpy as np

    edges = _edges(np.concatenate([y, p]), bins)
    finite = np.isfinite(y) & np.isfinite(p)
    counts, _, _ = np.histogram2d(y[finite], p[finite], bins=[edges, edges])
    cells = [[int(i), int(j), int(counts[i, j])] for i, j in zip(*np.nonzero(counts), strict=True)]
    return {"edges": edges.tolist(), "cells": cells}
