"""Data drift of each model's recent observations against its reference, from the drift API.

Model servers push feature rows, predictions and late labels to the drift API
(``/api/v1/models/{model}/...``); every ``--drift.interval`` the drift service evaluates each
model's window in a worker process and keeps the latest result in SQLite under
``--state.dir``. This collector is a thin adapter over that subsystem (`node_exporter_ml.drift`):
it builds the service from the flags, starts and stops it, mounts its routes (`drift.web`,
through the `RouteProvider` hook), and turns the service's in-memory results into series:

    nodeml_drift_score{model="fraud",feature="amount",test="wasserstein"} 0.031
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from node_exporter_ml.collectors.base import AsyncCollector, CollectContext, StartupError
from node_exporter_ml.drift.bodies import Limits
from node_exporter_ml.drift.engine.quality import SCHEMA_CHANGES
from node_exporter_ml.drift.errors import TokenFileError
from node_exporter_ml.drift.options import DRIFT_OPTIONS
from node_exporter_ml.drift.service import DriftService, ModelResult
from node_exporter_ml.drift.store import RETAIN_FACTOR, StoreError, Window
from node_exporter_ml.drift.web import routes
from node_exporter_ml.drift.worker import REASONS
from node_exporter_ml.exposition import add_sample
from node_exporter_ml.registry import register_collector
from node_exporter_ml.snapshot import DataKey, Snapshot
from node_exporter_ml.webroutes import RouteProvider

if TYPE_CHECKING:
    from aiohttp import web

    from node_exporter_ml.settings import Config


@dataclass(frozen=True, slots=True)
class DriftData:
    """The latest result of every model, at the tick."""

    results: tuple[ModelResult, ...]
    worker_restarts: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    worker_resident_bytes: int = 0


DRIFT = DataKey("drift", DriftData)


def service_from_config(config: Config) -> DriftService:
    """A DriftService configured from the agent's flags and config file."""
    f = config.section(DRIFT_OPTIONS)
    return DriftService(
        f.state_dir,
        interval=f.interval,
        # A time window holds at most what is retained: RETAIN_FACTOR x window_rows rows.
        window=Window(
            rows=f.window_rows,
            seconds=f.window_seconds,
            max_rows=f.window_rows * RETAIN_FACTOR,
        ),
        limits=Limits(
            max_body_bytes=f.max_body_bytes,
            max_rows=f.max_rows,
            max_columns=f.max_columns,
            max_models=f.max_models,
            max_features=f.max_features,
        ),
        token_file=f.token_file,
    )


@register_collector("drift", produces=DRIFT, options=DRIFT_OPTIONS)
class DriftCollector(AsyncCollector[DriftData], RouteProvider):
    """Data drift, data quality and prediction quality per model, from the drift API.

    Reads the drift service's latest in-memory results (no I/O); the service owns the store,
    the threads and the worker processes, and runs the API and the evaluation loop from
    start() to stop().
    """

    def __init__(self, ctx: CollectContext) -> None:
        super().__init__(ctx)
        self.service = service_from_config(ctx.config)

    async def start(self) -> None:
        """Open the store under --state.dir and start the evaluation loop.

        Raises:
            StartupError: the state directory, its database or the token file is unusable.
        """
        try:
            await self.service.start()
        except (StoreError, TokenFileError) as err:
            raise StartupError(str(err)) from err

    async def stop(self) -> None:
        """Stop the evaluation loop and close the store."""
        await self.service.stop()

    def reload(self, ctx: CollectContext) -> None:
        """Take new window settings, limits and token file; the store stays as started.

        Runs in a worker thread (SIGHUP): the token file is read again here, so a leaked
        token is revoked by replacing the file and sending SIGHUP.
        """
        super().reload(ctx)
        fresh = service_from_config(ctx.config)
        self.service.reconfigure(
            interval=fresh.interval,
            window=fresh.window,
            limits=fresh.limits,
            token_file=fresh.token_file,
        )

    def api_token(self) -> bytes | None:
        """The token the web layer requires of the drift API's writes (None: none set)."""
        return self.service.token

    def links(self) -> list[tuple[str, str]]:
        """The drift API's description, for the landing page."""
        return [("/api/v1/openapi.json", "Drift API (OpenAPI)")]

    def max_body_bytes(self) -> int:
        """drift.max_body_bytes: the largest upload the drift API reads."""
        return self.ctx.config.section(DRIFT_OPTIONS).max_body_bytes

    async def update(self, previous: Snapshot | None) -> DriftData:
        """The latest results; evaluation itself runs in the service's own thread."""
        await asyncio.sleep(0)
        latest = self.service.latest()
        results = tuple(latest[m] for m in sorted(latest))
        usage = self.service.worker_usage()
        if usage is None:
            return DriftData(results)
        return DriftData(results, *usage)

    def routes(self) -> list[web.RouteDef]:
        """The drift API and page routes (`drift.web`), bound to the service."""
        return routes(self.service)

    def families(self, data: DriftData, snapshot: Snapshot) -> Iterable[Metric]:
        """Drift, quality, prediction and label series of every model."""
        return [*drift_families(data.results), *worker_families(data)]


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _add_num(family: Metric, labels: Mapping[str, str], value: Any) -> None:
    """Add a sample when `value` is a finite number (a bool as 0/1); no sample otherwise."""
    number = _num(value)
    if number is not None:
        add_sample(family, labels, number)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def worker_families(data: DriftData) -> list[Metric]:
    """The drift worker processes' restarts and memory (pure)."""
    restarts = CounterMetricFamily(
        "nodeml_drift_worker_restarts",
        "Drift worker processes replaced, by reason: tasks (its task budget was spent), memory "
        "(above its memory cap after a task), timeout (killed mid-task), crashed (it died).",
        labels=["reason"],
    )
    for reason in REASONS:
        restarts.add_metric([reason], data.worker_restarts.get(reason, 0))
    memory = GaugeMetricFamily(
        "nodeml_drift_worker_resident_memory_bytes",
        "Resident memory of the drift worker processes, each measured after its latest task "
        "(0 while none runs; workers start on the first drift request).",
        value=data.worker_resident_bytes,
    )
    return [restarts, memory]


def drift_families(results: Iterable[ModelResult]) -> list[Metric]:
    """Metric families of the drift results (pure)."""
    src = "from the drift service's latest evaluation of the model's window"
    score = _gauge(
        "nodeml_drift_score",
        f"Drift test score of a feature (p-value or distance, per `test`), {src}.",
        ["model", "feature", "test"],
    )
    threshold = _gauge(
        "nodeml_drift_threshold",
        "Threshold the drift score is compared with (p-values drift below, distances above).",
        ["model", "feature", "test"],
    )
    detected = _gauge(
        "nodeml_drift_detected", f"1 when the feature drifted, else 0, {src}.", ["model", "feature"]
    )
    share = _gauge(
        "nodeml_dataset_drift_share", f"Share of evaluated features that drifted, {src}.", ["model"]
    )
    dataset = _gauge(
        "nodeml_dataset_drift_detected",
        "1 when the drifted share reached the model's drift_share (default 0.5), else 0.",
        ["model"],
    )
    rows = _gauge(
        "nodeml_drift_window_observations",
        "Observations in the model's current window.",
        ["model"],
    )
    evaluated = _gauge(
        "nodeml_drift_evaluation_timestamp_seconds",
        "Unix time of the model's latest drift evaluation.",
        ["model"],
    )
    took = _gauge(
        "nodeml_drift_evaluation_duration_seconds",
        "Seconds the model's latest drift evaluation took.",
        ["model"],
    )
    ok = _gauge(
        "nodeml_drift_evaluation_success",
        "1 when the model's window could be evaluated for drift, else 0 (empty window, "
        "no comparable column).",
        ["model"],
    )
    missing = _gauge(
        "nodeml_drift_missing_ratio",
        "Share of missing values of a feature in the window.",
        ["model", "feature"],
    )
    out_of_range = _gauge(
        "nodeml_drift_out_of_range_ratio",
        "Share of a numerical feature's window values outside the reference's range "
        "(or the range declared with the reference).",
        ["model", "feature"],
    )
    unseen = _gauge(
        "nodeml_drift_unseen_categories_ratio",
        "Share of a categorical feature's window values that never occur in the reference.",
        ["model", "feature"],
    )
    schema = _gauge(
        "nodeml_drift_schema_change",
        "1 for each feature missing from the window, extra in it, or of another value type "
        "than in the reference (`change` is missing, extra or retyped).",
        ["model", "feature", "change"],
    )
    pred_score = _gauge(
        "nodeml_drift_prediction_score",
        "Drift test score of the predictions against the reference's prediction column.",
        ["model", "test"],
    )
    pred_detected = _gauge(
        "nodeml_drift_prediction_detected",
        "1 when the predictions drifted from the reference's, else 0.",
        ["model"],
    )
    conf_mean = _gauge(
        "nodeml_drift_prediction_confidence_mean",
        "Mean confidence of the window's predictions.",
        ["model"],
    )
    # A gauge histogram: the buckets describe the current window, they do not only grow.
    conf_hist = GaugeHistogramMetricFamily(
        "nodeml_drift_prediction_confidence",
        "Confidence of the window's predictions (a gauge histogram over the window).",
        labels=["model"],
    )
    labeled = _gauge(
        "nodeml_drift_labeled_observations",
        "Labels in the window joined with a prediction (the base of the accuracy figures).",
        ["model"],
    )
    accuracy = _gauge(
        "nodeml_drift_accuracy_ratio",
        "Share of labelled predictions that were correct, from late labels joined by id.",
        ["model"],
    )
    precision = _gauge(
        "nodeml_drift_precision_ratio",
        "Precision of one predicted class, from late labels (the most frequent classes only).",
        ["model", "class"],
    )
    recall = _gauge(
        "nodeml_drift_recall_ratio",
        "Recall of one actual class, from late labels (the most frequent classes only).",
        ["model", "class"],
    )
    confusion = _gauge(
        "nodeml_drift_confusion_observations",
        "Labelled predictions by actual and predicted class; rarer classes pooled as other.",
        ["model", "actual", "predicted"],
    )
    quality = _label_quality_families()
    for result in results:
        model = result.model
        report = result.report
        m = {"model": model}
        add_sample(evaluated, m, result.evaluated_at)
        add_sample(took, m, result.duration_seconds)
        add_sample(ok, m, 0.0 if result.error else 1.0)
        window = report.get("window") or {}
        _add_num(rows, m, window.get("rows"))
        for feature, col in sorted((report.get("columns") or {}).items()):
            labels = {**m, "feature": feature, "test": str(col.get("stattest"))}
            _add_num(score, labels, col.get("score"))
            _add_num(threshold, labels, col.get("threshold"))
            add_sample(
                detected, {**m, "feature": feature}, 1.0 if col.get("drift_detected") else 0.0
            )
        ds = report.get("dataset")
        if isinstance(ds, Mapping):
            _add_num(share, m, ds.get("share_of_drifted_columns"))
            add_sample(dataset, m, 1.0 if ds.get("dataset_drift") else 0.0)
        _quality(report.get("data_quality"), m, missing, out_of_range, unseen, schema)
        pred = report.get("prediction") or {}
        drift = pred.get("drift")
        if isinstance(drift, Mapping):
            _add_num(pred_score, {**m, "test": str(drift.get("stattest"))}, drift.get("score"))
            add_sample(pred_detected, m, 1.0 if drift.get("drift_detected") else 0.0)
        conf = pred.get("confidence") or {}
        if conf.get("count"):
            value = _num(conf.get("mean"))
            if value is not None:
                add_sample(conf_mean, m, value)
            running, buckets = 0.0, []
            for edge, count in zip(conf["edges"][1:], conf["counts"], strict=True):
                running += count
                buckets.append((f"{edge:g}", running))
            buckets.append(("+Inf", running))
            total = value * running if value is not None else None
            conf_hist.add_metric([m["model"]], buckets, gsum_value=total)
        lab = report.get("labels") or {}
        if lab.get("count"):
            add_sample(labeled, m, lab["count"])
            _add_num(accuracy, m, lab.get("accuracy"))
            for cls, fig in sorted((lab.get("classes") or {}).items()):
                for family, key in ((precision, "precision"), (recall, "recall")):
                    _add_num(family, {**m, "class": cls}, fig.get(key))
            for cell in lab.get("confusion") or []:
                add_sample(
                    confusion,
                    {**m, "actual": str(cell["actual"]), "predicted": str(cell["predicted"])},
                    cell["count"],
                )
            for key, family in quality.items():
                _add_num(family, m, _path(lab, key))
    families = [
        score, threshold, detected, share, dataset, rows, evaluated, took, ok, missing,
        out_of_range, unseen, schema, pred_score, pred_detected, conf_mean, conf_hist, labeled,
        accuracy, precision, recall, confusion, *quality.values(),
    ]  # fmt: skip
    return [f for f in families if f.samples]  # no HELP/TYPE lines for series nobody has


_LABEL_QUALITY = (
    ("precision_macro", "nodeml_drift_precision_macro_ratio",
     "Macro precision: the mean over the classes seen (labelled or predicted) of each class's "
     "precision (0 if never predicted), from late labels; Evidently's macro precision."),
    ("recall_macro", "nodeml_drift_recall_macro_ratio",
     "Macro recall: the mean over the classes seen of each class's recall (0 if never "
     "labelled), from late labels; Evidently's macro recall."),
    ("f1_macro", "nodeml_drift_f1_macro_ratio",
     "Macro F1: the mean over the classes seen of each class's F1, from late labels; "
     "Evidently's macro F1."),
    ("calibration.error", "nodeml_drift_calibration_error_ratio",
     "Expected calibration error of the labelled predictions that carry a confidence: "
     "sum over 10 equal-width confidence bins of (bin share) x |accuracy - mean confidence|."),
    ("mean_error", "nodeml_drift_regression_mean_error",
     "Mean error (prediction - label) of a regression model's labelled predictions, as "
     "Evidently's MeanError."),
    ("mae", "nodeml_drift_regression_mae",
     "Mean absolute error of a regression model's labelled predictions, as Evidently's MAE."),
    ("rmse", "nodeml_drift_regression_rmse",
     "Root mean squared error of a regression model's labelled predictions, as Evidently's RMSE."),
    ("mape_ratio", "nodeml_drift_regression_mape_ratio",
     "Mean absolute percentage error / 100 of a regression model's labelled predictions, as "
     "Evidently's MAPE (a label within machine epsilon of 0 counts as an error of 1)."),
    ("r2", "nodeml_drift_regression_r2",
     "Coefficient of determination (R2) of a regression model's labelled predictions, as "
     "Evidently's R2Score."),
    ("max_abs_error", "nodeml_drift_regression_max_abs_error",
     "Largest absolute error of a regression model's labelled predictions, as Evidently's "
     "AbsMaxError."),
)  # fmt: skip
"""The one-number figures of a report's labels section: key (dotted path), series, HELP."""


def _label_quality_families() -> dict[str, GaugeMetricFamily]:
    return {key: _gauge(name, doc, ["model"]) for key, name, doc in _LABEL_QUALITY}


def _path(mapping: Mapping[str, Any], dotted: str) -> Any:
    value: Any = mapping
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _quality(
    quality: Any,
    m: Mapping[str, str],
    missing: GaugeMetricFamily,
    out_of_range: GaugeMetricFamily,
    unseen: GaugeMetricFamily,
    schema: GaugeMetricFamily,
) -> None:
    if not isinstance(quality, Mapping):
        return
    for feature, q in sorted((quality.get("columns") or {}).items()):
        if not isinstance(q, Mapping):
            continue
        labels = {**m, "feature": feature}
        for family, key in (
            (missing, "missing_share"),
            (out_of_range, "out_of_range_share"),
            (unseen, "unseen_categories_share"),
        ):
            _add_num(family, labels, q.get(key))
    changes = quality.get("schema") or {}
    for change, key in SCHEMA_CHANGES:
        for feature in sorted(changes.get(key) or ()):
            add_sample(schema, {**m, "feature": str(feature), "change": change}, 1.0)
