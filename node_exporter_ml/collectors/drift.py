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

from prometheus_client.core import GaugeHistogramMetricFamily, Metric

from node_exporter_ml.collectors.base import AsyncCollector, CollectContext, StartupError
from node_exporter_ml.drift.bodies import Limits
from node_exporter_ml.drift.engine.quality import SCHEMA_CHANGES
from node_exporter_ml.drift.errors import TokenFileError
from node_exporter_ml.drift.options import DRIFT_OPTIONS
from node_exporter_ml.drift.service import DriftService, ModelResult
from node_exporter_ml.drift.store import RETAIN_FACTOR, StoreError, Window
from node_exporter_ml.drift.web import routes
from node_exporter_ml.drift.worker import REASONS
from node_exporter_ml.registry import register_collector
from node_exporter_ml.series import Series, table_families
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
    """A finite number as a float (a bool as 0/1); None for anything else: no sample."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


# Reading a report (`ModelResult.report`, a JSON-like mapping): a part that is absent or not a
# mapping gives None, and then no sample.


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _get(part: Mapping[str, Any] | None, key: str) -> Any:
    return part.get(key) if part is not None else None


def _flag(part: Mapping[str, Any] | None, key: str) -> float | None:
    """1/0 for a truthy/falsy `key` of a part the report has; None without the part."""
    return None if part is None else 1.0 if part.get(key) else 0.0


def _columns(r: ModelResult) -> list[tuple[str, Any]]:
    return sorted((r.report.get("columns") or {}).items())


def _quality_columns(r: ModelResult) -> list[tuple[str, Mapping[str, Any]]]:
    quality = _mapping(r.report.get("data_quality"))
    if quality is None:
        return []
    columns = sorted((quality.get("columns") or {}).items())
    return [(feature, q) for feature, q in columns if isinstance(q, Mapping)]


def _schema_changes(r: ModelResult) -> list[tuple[tuple[str, str], float]]:
    quality = _mapping(r.report.get("data_quality"))
    changes = (quality.get("schema") or {}) if quality is not None else {}
    return [
        ((str(feature), change), 1.0)
        for change, key in SCHEMA_CHANGES
        for feature in sorted(changes.get(key) or ())
    ]


def _prediction(r: ModelResult) -> Mapping[str, Any]:
    prediction: Mapping[str, Any] = r.report.get("prediction") or {}
    return prediction


def _prediction_drift(r: ModelResult) -> Mapping[str, Any] | None:
    return _mapping(_prediction(r).get("drift"))


def _confidence(r: ModelResult) -> Mapping[str, Any] | None:
    """The predictions' confidence summary, when the window has predictions with one."""
    conf = _prediction(r).get("confidence") or {}
    return conf if conf.get("count") else None


def _labelled(r: ModelResult) -> Mapping[str, Any] | None:
    """The report's labels section, when the window has labelled predictions."""
    lab = r.report.get("labels") or {}
    return lab if lab.get("count") else None


def _class_figures(r: ModelResult, key: str) -> list[tuple[tuple[str], float | None]]:
    lab = _labelled(r)
    classes = (lab.get("classes") or {}) if lab is not None else {}
    return [((cls,), _num(fig.get(key))) for cls, fig in sorted(classes.items())]


def _confusion(r: ModelResult) -> list[tuple[tuple[str, str], float]]:
    lab = _labelled(r)
    cells = (lab.get("confusion") or []) if lab is not None else []
    return [((str(c["actual"]), str(c["predicted"])), c["count"]) for c in cells]


_SRC = "from the drift service's latest evaluation of the model's window"
_R = Series[ModelResult]


def _feature_quality(name: str, doc: str, key: str) -> Series[ModelResult]:
    return _R(
        name,
        "gauge",
        doc,
        labels=("feature",),
        each=lambda r: [((f,), _num(q.get(key))) for f, q in _quality_columns(r)],
    )


# Rows: one model's latest result, labelled model. Families nobody has a sample of are left out.
DRIFT_SERIES = (
    _R("nodeml_drift_score", "gauge",
       f"Drift test score of a feature (p-value or distance, per `test`), {_SRC}.",
       labels=("feature", "test"),
       each=lambda r: [((f, str(c.get("stattest"))), _num(c.get("score")))
                       for f, c in _columns(r)]),
    _R("nodeml_drift_threshold", "gauge",
       "Threshold the drift score is compared with (p-values drift below, distances above).",
       labels=("feature", "test"),
       each=lambda r: [((f, str(c.get("stattest"))), _num(c.get("threshold")))
                       for f, c in _columns(r)]),
    _R("nodeml_drift_detected", "gauge", f"1 when the feature drifted, else 0, {_SRC}.",
       labels=("feature",),
       each=lambda r: [((f,), 1.0 if c.get("drift_detected") else 0.0) for f, c in _columns(r)]),
    _R("nodeml_dataset_drift_share", "gauge", f"Share of evaluated features that drifted, {_SRC}.",
       lambda r: _num(_get(_mapping(r.report.get("dataset")), "share_of_drifted_columns"))),
    _R("nodeml_dataset_drift_detected", "gauge",
       "1 when the drifted share reached the model's drift_share (default 0.5), else 0.",
       lambda r: _flag(_mapping(r.report.get("dataset")), "dataset_drift")),
    _R("nodeml_drift_window_observations", "gauge",
       "Observations in the model's current window.",
       lambda r: _num((r.report.get("window") or {}).get("rows"))),
    _R("nodeml_drift_evaluation_timestamp_seconds", "gauge",
       "Unix time of the model's latest drift evaluation.", lambda r: r.evaluated_at),
    _R("nodeml_drift_evaluation_duration_seconds", "gauge",
       "Seconds the model's latest drift evaluation took.", lambda r: r.duration_seconds),
    _R("nodeml_drift_evaluation_success", "gauge",
       "1 when the model's window could be evaluated for drift, else 0 (empty window, "
       "no comparable column).", lambda r: 0.0 if r.error else 1.0),
    _feature_quality("nodeml_drift_missing_ratio",
                     "Share of missing values of a feature in the window.", "missing_share"),
    _feature_quality("nodeml_drift_out_of_range_ratio",
                     "Share of a numerical feature's window values outside the reference's range "
                     "(or the range declared with the reference).", "out_of_range_share"),
    _feature_quality("nodeml_drift_unseen_categories_ratio",
                     "Share of a categorical feature's window values that never occur in the "
                     "reference.", "unseen_categories_share"),
    _R("nodeml_drift_schema_change", "gauge",
       "1 for each feature missing from the window, extra in it, or of another value type "
       "than in the reference (`change` is missing, extra or retyped).",
       labels=("feature", "change"), each=_schema_changes),
    _R("nodeml_drift_prediction_score", "gauge",
       "Drift test score of the predictions against the reference's prediction column.",
       labels=("test",),
       each=lambda r: [((str(d.get("stattest")),), _num(d.get("score")))
                       for d in [_prediction_drift(r)] if d is not None]),
    _R("nodeml_drift_prediction_detected", "gauge",
       "1 when the predictions drifted from the reference's, else 0.",
       lambda r: _flag(_prediction_drift(r), "drift_detected")),
    _R("nodeml_drift_prediction_confidence_mean", "gauge",
       "Mean confidence of the window's predictions.",
       lambda r: _num(_get(_confidence(r), "mean"))),
)  # fmt: skip

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


def _label_figure(key: str, name: str, doc: str) -> Series[ModelResult]:
    return _R(name, "gauge", doc, lambda r: _num(_path(_labelled(r) or {}, key)))


# The rows of DRIFT_SERIES; exported after nodeml_drift_prediction_confidence.
LABEL_SERIES = (
    _R("nodeml_drift_labeled_observations", "gauge",
       "Labels in the window joined with a prediction (the base of the accuracy figures).",
       lambda r: _get(_labelled(r), "count")),
    _R("nodeml_drift_accuracy_ratio", "gauge",
       "Share of labelled predictions that were correct, from late labels joined by id.",
       lambda r: _num(_get(_labelled(r), "accuracy"))),
    _R("nodeml_drift_precision_ratio", "gauge",
       "Precision of one predicted class, from late labels (the most frequent classes only).",
       labels=("class",), each=lambda r: _class_figures(r, "precision")),
    _R("nodeml_drift_recall_ratio", "gauge",
       "Recall of one actual class, from late labels (the most frequent classes only).",
       labels=("class",), each=lambda r: _class_figures(r, "recall")),
    _R("nodeml_drift_confusion_observations", "gauge",
       "Labelled predictions by actual and predicted class; rarer classes pooled as other.",
       labels=("actual", "predicted"), each=_confusion),
    *(_label_figure(*figure) for figure in _LABEL_QUALITY),
)  # fmt: skip

# One row: the tick's DriftData, no labels.
WORKER_SERIES = (
    Series[DriftData]("nodeml_drift_worker_restarts_total", "counter",
        "Drift worker processes replaced, by reason: tasks (its task budget was spent), memory "
        "(above its memory cap after a task), timeout (killed mid-task), crashed (it died).",
        labels=("reason",),
        each=lambda d: [((reason,), d.worker_restarts.get(reason, 0)) for reason in REASONS]),
    Series[DriftData]("nodeml_drift_worker_resident_memory_bytes", "gauge",
        "Resident memory of the drift worker processes, each measured after its latest task "
        "(0 while none runs; workers start on the first drift request).",
        lambda d: d.worker_resident_bytes),
)  # fmt: skip


def worker_families(data: DriftData) -> list[Metric]:
    """The drift worker processes' restarts and memory (pure)."""
    return table_families(WORKER_SERIES, [({}, data)])


def drift_families(results: Iterable[ModelResult]) -> list[Metric]:
    """Metric families of the drift results (pure).

    Two series tables over each model's latest result, with the confidence gauge histogram
    (built by hand: a table's series are gauges or counters) between them.
    """
    rows = [({"model": r.model}, r) for r in results]
    families = [
        *table_families(DRIFT_SERIES, rows),
        _confidence_histogram([r for _, r in rows]),
        *table_families(LABEL_SERIES, rows),
    ]
    return [f for f in families if f.samples]  # no HELP/TYPE lines for series nobody has


def _confidence_histogram(results: Iterable[ModelResult]) -> Metric:
    # A gauge histogram: the buckets describe the current window, they do not only grow.
    hist = GaugeHistogramMetricFamily(
        "nodeml_drift_prediction_confidence",
        "Confidence of the window's predictions (a gauge histogram over the window).",
        labels=["model"],
    )
    for r in results:
        conf = _confidence(r)
        if conf is None:
            continue
        mean = _num(conf.get("mean"))
        running, buckets = 0.0, []
        for edge, count in zip(conf["edges"][1:], conf["counts"], strict=True):
            running += count
            buckets.append((f"{edge:g}", running))
        buckets.append(("+Inf", running))
        total = mean * running if mean is not None else None
        hist.add_metric([r.model], buckets, gsum_value=total)
    return hist


def _path(mapping: Mapping[str, Any], dotted: str) -> Any:
    value: Any = mapping
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
