"""The report of one model's window: drift, data quality, predictions and late labels.

Pure: it takes the model's loaded reference and the observations and labels the store holds
for its window, and calls the engine; the service runs it in a worker process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node_exporter_ml.drift.bodies import split_reference
from node_exporter_ml.drift.engine.errors import DataError, OptionsError
from node_exporter_ml.drift.engine.histograms import column_histograms
from node_exporter_ml.drift.engine.labels import (
    calibration,
    classification,
    confidence_histogram,
    prediction_drift,
    prediction_summary,
)
from node_exporter_ml.drift.engine.quality import data_quality
from node_exporter_ml.drift.engine.regression import (
    CLASSIFICATION,
    REGRESSION,
    regression_quality,
    split_task,
)
from node_exporter_ml.drift.engine.report import evaluate, parse_options
from node_exporter_ml.drift.engine.table import Table
from node_exporter_ml.drift.store import (
    Observation,
    Reference,
    Window,
    unpack_reference,
)


@dataclass(frozen=True, slots=True)
class LoadedReference:
    """A reference parsed into tables, cached by (model, version)."""

    version: int
    features: Table
    predictions: list[Any] | None
    confidences: list[float | None] | None
    options: Mapping[str, Any]
    n_rows: int
    updated_at: float
    task: str = CLASSIFICATION


def load_reference(ref: Reference) -> LoadedReference:
    """A stored reference unpacked and split into features, predictions and confidences."""
    table = unpack_reference(ref)
    features, predictions, confidences = split_reference(table)
    task, options = split_task(ref.options)
    return LoadedReference(
        version=ref.version,
        features=features,
        predictions=predictions,
        confidences=confidences,
        options=options,
        n_rows=ref.n_rows,
        updated_at=ref.updated_at,
        task=task,
    )


def build_report(
    model: str,
    ref: LoadedReference,
    window: Sequence[Observation],
    labeled: Sequence[Any],
    spec: Window,
) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """The report of one model's window: drift, quality, predictions and labels.

    Returns:
        (report, histograms for the page, error or None). A window that cannot be evaluated
        (empty, or the engine refuses it) still reports quality, predictions and labels.
    """
    report: dict[str, Any] = {
        "model": model,
        "reference": {
            "version": ref.version,
            "rows": ref.n_rows,
            "columns": len(ref.features.columns),
            "updated_at": ref.updated_at,
            "task": ref.task,
        },
        "window": {
            "kind": spec.kind,
            "size": spec.seconds if spec.seconds is not None else spec.rows,
            "rows": len(window),
            "first_at": window[0].ts if window else None,
            "last_at": window[-1].ts if window else None,
        },
        "columns": {},
        "dataset": None,
        "not_evaluated": {},
        "data_quality": None,
        "error": None,
    }
    error: str | None = None
    histograms: dict[str, Any] = {}
    current: Table | None = None
    if not window:
        error = "no observations in the window"
    else:
        try:
            current = Table.from_rows([o.features for o in window])
            drift = evaluate(ref.features, current, **ref.options)
            report.update(drift)
        except (DataError, OptionsError) as err:
            error = str(err)
    if current is not None:
        if report["data_quality"] is None:
            report["data_quality"] = _quality(ref, current)
        histograms = column_histograms(ref.features, current, report["columns"])
    report["error"] = error
    predictions = [o.prediction for o in window]
    numerical = ref.task == REGRESSION
    pred: dict[str, Any] = {
        "summary": prediction_summary(predictions, numerical=numerical),
        "drift": None,
        "confidence": confidence_histogram(o.confidence for o in window),
        "reference_confidence": (
            confidence_histogram(ref.confidences) if ref.confidences is not None else None
        ),
    }
    if ref.predictions is not None:
        try:
            pred["drift"] = prediction_drift(
                ref.predictions, predictions, evaluate, Table.from_columns, numerical=numerical
            )
        except (DataError, OptionsError) as err:
            pred["drift_error"] = str(err)
    report["prediction"] = pred
    pairs = [(lp.label, lp.prediction) for lp in labeled]
    if numerical:
        labels = regression_quality(pairs)
    else:
        labels = classification(pairs)
        labels["calibration"] = calibration(
            (lp.label, lp.prediction, lp.confidence) for lp in labeled
        )
    labels["task"] = ref.task
    labels["labels"] = len(labeled)
    labels["unmatched"] = sum(not lp.matched for lp in labeled)
    report["labels"] = labels
    return report, histograms, error


def _quality(ref: LoadedReference, current: Table) -> Any:
    """Data quality on its own, for a window the drift evaluation refused."""
    try:
        ranges = parse_options(ref.options).ranges
        return data_quality(ref.features, current, ranges=ranges)
    except (DataError, OptionsError) as err:
        return {"error": str(err)}
