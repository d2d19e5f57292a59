"""The drift service: stores what the API accepts and evaluates every model's window.

Every ``--drift.interval`` the service evaluates each model whose data changed (every model,
for time windows) against its reference, and keeps the latest result per model for the
collector to publish. SQLite writes run in one database thread; request parsing, typing and
every evaluation run in worker processes (`drift.worker`, `drift.jobs`), waited on from a
small thread pool; continuous evaluation waits in its own thread, so a long evaluation never
delays a write, and the agent's own process never loads the statistics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import re
import reprlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from node_exporter_ml.drift.columnar import Blob, Upload, loads_columnar, read_table
from node_exporter_ml.drift.errors import DataError, OptionsError
from node_exporter_ml.drift.labels import (
    calibration,
    classification,
    confidence_histogram,
    prediction_drift,
    prediction_summary,
)
from node_exporter_ml.drift.regression import (
    CLASSIFICATION,
    REGRESSION,
    first_non_number,
    regression_quality,
    split_task,
)
from node_exporter_ml.drift.store import (
    EncodedObservation,
    Observation,
    Reference,
    Store,
    StoreError,
    Window,
    encode_observations,
)
from node_exporter_ml.drift.table import Column, Table
from node_exporter_ml.drift.worker import WorkerError, WorkerLimits, WorkerPool
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.tasks import cancel_task

log = logging.getLogger(__name__)

T = TypeVar("T")

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Model names: safe in URLs, label values and file names."""
PREDICTION, CONFIDENCE, ID = "prediction", "confidence", "id"
RESERVED = (PREDICTION, CONFIDENCE, ID)
"""Observation keys that are not features; in a reference, columns with these names too."""
MAX_ID_LENGTH = 256
API_WORKERS = 2
"""Requests parsed or evaluated at once; more wait (each may hold a 64 MiB body)."""
STATELESS_EVALUATIONS = 1
"""Stateless evaluations at once: each holds the GIL for long stretches, and scrapes wait."""


class ApiError(Exception):
    """A request problem with the HTTP status to answer and a message naming it."""

    def __init__(self, status: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = {k.replace("_", "-"): v for k, v in headers.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        # It crosses from the worker process to the agent as a pickle.
        return (_api_error, (self.status, self.message, self.headers))


def _api_error(status: int, message: str, headers: dict[str, str]) -> ApiError:
    err = ApiError(status, message)
    err.headers = headers
    return err


class UnknownModelError(Exception):
    """The model has no reference (it is created by PUT .../reference)."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits from the config file (drift.max_body_bytes, max_rows, max_columns)."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_rows: int = 1_000_000
    max_columns: int = 1_000
    max_models: int = 50
    """Models with a reference; a reference for one more answers 429 (each adds series)."""
    max_features: int = 200
    """Feature columns of a model's reference, and of one observation batch (413 beyond)."""


@dataclass(frozen=True, slots=True)
class PreparedReference:
    """A validated reference, ready to store."""

    fmt: str
    data: bytes
    options: Mapping[str, Any]
    n_rows: int
    n_columns: int


@dataclass(frozen=True, slots=True)
class ParsedObservations:
    """Observations encoded for the store, and what a regression model would refuse.

    The predictions are checked in the worker while still decoded, not decoded again later.
    """

    rows: list[EncodedObservation]
    non_number: tuple[int, Any] | None
    """(row, prediction) of the first prediction neither missing nor a finite number."""


def _parsed(rows: list[Observation]) -> ParsedObservations:
    return ParsedObservations(
        encode_observations(rows), first_non_number(o.prediction for o in rows)
    )


@dataclass(frozen=True, slots=True)
class ModelResult:
    """A model's latest evaluation; `report` is what GET .../drift answers."""

    model: str
    version: tuple[int, int, int]
    evaluated_at: float
    duration_seconds: float
    report: Mapping[str, Any]
    error: str | None = None
    histograms: Mapping[str, Any] = field(default_factory=dict)


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


# --- parsing (pure) -------------------------------------------------------------------------


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A surrogate escape (U+D800-U+DFFF): a lone one makes a string no UTF-8 output can hold."""


def parse_json(body: bytes | Blob, loads: Callable[[Any], Any] = json.loads) -> Any:
    """Decode a JSON body (UTF-8/16/32), or raise ApiError(400) naming the problem.

    Strings that cannot be written as UTF-8 (a lone surrogate escape, U+D800-U+DFFF)
    are refused here: they would break every later rendering (metrics, reports, the page).
    A `Blob` goes on to `loads_columnar` as a blob (it takes it and drops its bytes once
    decoded); its bytes are only scanned here first.
    """
    data = body.take() if isinstance(body, Blob) else body
    if not data or data.isspace():  # not strip(): that would copy the whole body
        raise ApiError(400, "malformed JSON: the body is empty")
    # Only surrogate escapes (or a UTF-16/32 body) can make such strings: check only then.
    recheck = bool(_SURROGATE_ESCAPE.search(data)) or json.detect_encoding(data) not in (
        "utf-8",
        "utf-8-sig",
    )
    arg: Any = Blob(data) if isinstance(body, Blob) and loads is loads_columnar else data
    del data  # a blob's bytes are held by `arg` alone, for `loads` to take
    try:
        value = loads(arg)
    except json.JSONDecodeError as err:
        raise ApiError(
            400, f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except UnicodeDecodeError:
        raise ApiError(400, "malformed JSON: the body is not UTF-8 text") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None
    except ValueError as err:  # e.g. an integer past Python's 4,300-digit limit
        raise ApiError(400, f"malformed JSON: {err}") from None
    if recheck:
        try:
            json.dumps(value, ensure_ascii=False, default=_column_values).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400, "malformed JSON: a string holds a lone surrogate (\\ud800-\\udfff escape)"
            ) from None
        except RecursionError:
            raise ApiError(400, "malformed JSON: nested too deeply") from None
    return value


def _column_values(value: Any) -> Any:
    """A column typed as it was decoded (`loads_columnar`), for json.dumps: its values."""
    if isinstance(value, Column):
        return value.values.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _limit_error(err: DataError, side: str) -> Exception:
    text = str(err)
    status = 413 if text.startswith("too many") else 400
    return ApiError(status, f"{side}: {text}")


def _object(value: Any, what: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"{what} must be a JSON object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ApiError(
            400, f"{what}: unknown key {unknown[0]!r} (expected {', '.join(sorted(allowed))})"
        )
    return value


def _options(value: Any, what: str = "options") -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"{what} must be a JSON object")
    return dict(value)


_SCALAR_TYPES = frozenset({type(None), str, int, float, bool})


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _obs_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ApiError(400, f"{where}: id must be a string or an integer")
    text = str(value)
    if not text or len(text) > MAX_ID_LENGTH:
        raise ApiError(400, f"{where}: id must be 1-{MAX_ID_LENGTH} characters")
    return text


def parse_observation_rows(obj: Any, limits: Limits) -> list[Observation]:
    """Observations from a body; raises ApiError naming the fault.

    The body is ``{"rows": [{feature: value, ..., "prediction"?, "confidence"?, "id"?}]}``
    or the same as ``{"columns": {...}}``.
    """
    body = _object(obj, "body", ("rows", "columns"))
    if len(body) != 1:
        raise ApiError(400, 'body must be {"rows": [...]} or {"columns": {...}}')
    if "columns" in body:
        columns = body["columns"]
        if not isinstance(columns, dict):
            raise ApiError(400, "columns must be an object of column: [values]")
        lengths = set()
        for name, values in columns.items():
            if not isinstance(values, list):
                raise ApiError(400, f"column {name!r}: values must be a list")
            lengths.add(len(values))
        if len(lengths) > 1:
            raise ApiError(400, "columns must all have the same number of values")
        n = lengths.pop() if lengths else 0
        if n > limits.max_rows:
            raise ApiError(413, f"too many rows: {n}, the limit is {limits.max_rows}")
        names = list(columns)
        rows: Any = [{k: columns[k][i] for k in names} for i in range(n)]
    else:
        rows = body["rows"]
        if not isinstance(rows, list):
            raise ApiError(400, "rows must be a list of objects")
    if len(rows) > limits.max_rows:
        raise ApiError(413, f"too many rows: {len(rows)}, the limit is {limits.max_rows}")
    names_seen: set[str] = set()
    out = []
    reserved = set(RESERVED)
    for i, row in enumerate(rows):
        where = f"row {i}"
        if not isinstance(row, dict):
            raise ApiError(400, f"{where} is not an object")
        # Fast path (json.loads makes exact types): one set of value types per row.
        features = row if reserved.isdisjoint(row) else {
            k: v for k, v in row.items() if k not in reserved
        }  # fmt: skip
        if not set(map(type, features.values())) <= _SCALAR_TYPES:
            bad = next(k for k, v in features.items() if not _scalar(v))
            raise ApiError(400, f"{where}: {bad!r} must be a number, string, boolean or null")
        if not names_seen.issuperset(features):
            names_seen.update(features)
            cap = min(limits.max_columns, limits.max_features)
            if len(names_seen) > cap:
                raise ApiError(413, f"too many columns: over the limit of {cap} features per model")
        prediction = row.get(PREDICTION)
        if not _scalar(prediction):
            raise ApiError(400, f"{where}: prediction must be a number, string, boolean or null")
        confidence = row.get(CONFIDENCE)
        if confidence is not None:
            if (
                isinstance(confidence, bool)
                or not isinstance(confidence, int | float)
                or not 0.0 <= confidence <= 1.0
            ):
                raise ApiError(400, f"{where}: confidence must be a number from 0 to 1")
            confidence = float(confidence)
        out.append(
            Observation(
                features=features,
                prediction=prediction,
                confidence=confidence,
                obs_id=_obs_id(row.get(ID), where),
            )
        )
    return out


def parse_label_rows(obj: Any, limits: Limits) -> list[tuple[str, Any]]:
    """Labels from ``{"labels": [{"id": ..., "label": ...}]}``; the last wins for a repeated id."""
    body = _object(obj, "body", ("labels",))
    labels = body.get("labels")
    if not isinstance(labels, list):
        raise ApiError(400, 'body must be {"labels": [{"id": ..., "label": ...}]}')
    if len(labels) > limits.max_rows:
        raise ApiError(413, f"too many labels: {len(labels)}, the limit is {limits.max_rows}")
    out: dict[str, Any] = {}
    for i, item in enumerate(labels):
        where = f"labels[{i}]"
        entry = _object(item, where, ("id", "label"))
        obs_id = _obs_id(entry.get(ID), where)
        if obs_id is None:
            raise ApiError(400, f"{where}: id is required")
        label = entry.get("label")
        if label is None or not _scalar(label):
            raise ApiError(400, f"{where}: label must be a number, string or boolean")
        out.pop(obs_id, None)
        out[obs_id] = label
    return list(out.items())


def split_reference(table: Table) -> tuple[Table, list[Any] | None, list[float | None] | None]:
    """A reference's feature columns, and its prediction and confidence columns if present."""
    features = {k: c for k, c in table.columns.items() if k not in RESERVED}
    predictions = confidences = None
    if PREDICTION in table.columns:
        predictions = [_plain(v) for v in table.columns[PREDICTION].values.tolist()]
    if CONFIDENCE in table.columns:
        col = table.columns[CONFIDENCE]
        confidences = [
            float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
            for v in col.values.tolist()
        ]
    return Table(features, table.n_rows), predictions, confidences


TABLE_FORMAT = "table-v1"
"""References are stored parsed and typed, so a restart does not parse the CSV again."""


def pack_table(table: Table) -> bytes:
    """A table as bytes: a JSON header, then each column as .npy (numbers) or JSON (objects).

    No pickle: object columns (strings, mixed values, None) are JSON lists.
    """
    import io

    import numpy as np

    header: dict[str, Any] = {"n_rows": table.n_rows, "columns": []}
    payloads = []
    for name, col in table.columns.items():
        if col.values.dtype.kind in "biufM":
            buf = io.BytesIO()
            np.save(buf, col.values, allow_pickle=False)
            payload, enc = buf.getvalue(), "npy"
        else:
            payload, enc = json.dumps(col.values.tolist()).encode(), "json"
        header["columns"].append(
            {"name": name, "dtype": col.dtype, "enc": enc, "size": len(payload)}
        )
        payloads.append(payload)
    head = json.dumps(header).encode()
    return len(head).to_bytes(4, "big") + head + b"".join(payloads)


def unpack_table(data: bytes) -> Table:
    """The inverse of `pack_table`."""
    import io

    import numpy as np

    size = int.from_bytes(data[:4], "big")
    header = json.loads(data[4 : 4 + size])
    pos = 4 + size
    columns = {}
    for meta in header["columns"]:
        chunk = data[pos : pos + meta["size"]]
        pos += meta["size"]
        if meta["enc"] == "npy":
            values = np.load(io.BytesIO(chunk), allow_pickle=False)
        else:
            items = json.loads(chunk)
            values = np.empty(len(items), dtype=object)
            values[:] = items
        columns[meta["name"]] = Column(meta["name"], meta["dtype"], values)
    return Table(columns, header["n_rows"])


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --- the service ---------------------------------------------------------------------------


class DriftService:
    """Owns the store, the worker threads and the latest results; see the module docstring."""

    def __init__(
        self,
        state_dir: str,
        *,
        interval: float = 60.0,
        window: Window | None = None,
        limits: Limits | None = None,
        token_file: str | None = None,
        worker: WorkerLimits | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.interval = interval
        self.window = window or Window()
        self.limits = limits or Limits()
        self.token_file = token_file
        self.token: bytes | None = None
        self.store = Store(state_dir)
        self._db: concurrent.futures.ThreadPoolExecutor | None = None
        self._workers: concurrent.futures.ThreadPoolExecutor | None = None
        self._evaluator: concurrent.futures.ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._latest: dict[str, ModelResult] = {}
        self._latest_lock = threading.Lock()
        self._refs: dict[str, LoadedReference] = {}
        self._refs_lock = threading.Lock()
        self._once = OnceLogger(log)
        self.admission = asyncio.Semaphore(API_WORKERS)
        self.worker_limits = worker or WorkerLimits()
        self.pool: WorkerPool | None = None
        self.evaluations = asyncio.Semaphore(STATELESS_EVALUATIONS)
        self._evaluating: dict[str, asyncio.Future[ModelResult]] = {}

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True between start() and stop()."""
        return self._db is not None

    async def start(self, *, run_loop: bool = True) -> None:
        """Open the store, read the token, load stored results, start the evaluation loop.

        Raises:
            StoreError: the state directory or database cannot be used, or the token file
                cannot be read or is empty.
        """
        loop = asyncio.get_running_loop()
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="nodeml-drift-db")
        self._workers = concurrent.futures.ThreadPoolExecutor(
            API_WORKERS, thread_name_prefix="nodeml-drift-api"
        )
        self._evaluator = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="nodeml-drift-eval"
        )
        self.pool = WorkerPool(API_WORKERS, self.worker_limits)  # processes start on first use
        try:
            if self.token_file:
                self.token = await loop.run_in_executor(self._db, _read_token, self.token_file)
            await loop.run_in_executor(self._db, self.store.open)
            stored = await loop.run_in_executor(self._db, self.store.results)
        except BaseException:
            await self.stop()
            raise
        with self._latest_lock:
            for model, report in stored.items():
                if isinstance(report, dict):
                    self._latest[model] = _restored(model, report)
                else:
                    log.error("drift store: skipping the stored result of %s: not an object", model)
        if run_loop:
            self._task = asyncio.create_task(self._run(), name="nodeml-drift-evaluation")

    def reload_token(self) -> None:
        """Read the token file again (SIGHUP, in a worker thread); a failure keeps the old token.

        Without a token file any previous token is dropped.
        """
        if not self.token_file:
            self.token = None
            return
        try:
            self.token = _read_token(self.token_file)
        except StoreError as err:
            log.error("drift token not reloaded, the previous one stays: %s", err)

    async def stop(self) -> None:
        """Stop the loop, let running work finish, close the store and the threads."""
        await cancel_task(self._task)
        self._task = None
        loop = asyncio.get_running_loop()
        if self._db is not None:  # start() makes all three executors at once
            for ex in (self._workers, self._evaluator):
                if ex is not None:
                    # Waits in the db thread, so the loop never blocks on a running evaluation.
                    await loop.run_in_executor(self._db, ex.shutdown, True)
            if self.pool is not None:
                await loop.run_in_executor(self._db, self.pool.close)
            await loop.run_in_executor(self._db, self.store.close)
            self._db.shutdown(wait=False)
        self._db = self._workers = self._evaluator = None
        self.pool = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                assert self._evaluator is not None
                await loop.run_in_executor(self._evaluator, self.evaluate_all)
                self._once.forget("loop")
            except StoreError as err:
                self._once.log(logging.ERROR, "loop", "drift evaluation failed: %s", err)
            except Exception:
                if self._once.log(logging.ERROR, "loop", "drift evaluation failed"):
                    log.exception("drift evaluation failed")
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    # --- executors --------------------------------------------------------------------------

    async def in_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call in the database thread."""
        return await _run_in(self._db, fn, *args)

    async def in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run parsing or numerical work in a worker process, waited on from the API threads.

        `fn` is one of this service's methods (run on the worker's twin of the service) or a
        module-level function; its arguments and result cross as one pickle.
        """
        return await _run_in(self._workers, self.in_process, fn, *args)

    def in_process(self, fn: Callable[..., T], *args: Any) -> T:
        """`in_worker`, from a thread: blocks until the worker answers.

        Raises:
            ApiError: 503 when the worker died (it is replaced), 504 when it timed out.
        """
        from node_exporter_ml.drift import jobs

        pool = self.pool
        if pool is None:
            raise ApiError(503, "the drift service is not running")
        try:
            if getattr(fn, "__self__", None) is self:
                config = jobs.ServiceConfig(self.state_dir, self.window, self.limits)
                result: T = pool.call(jobs.call_method, config, fn.__name__, *args)
                return result
            return pool.call(fn, *args)
        except WorkerError as err:
            raise ApiError(504 if err.reason == "timeout" else 503, str(err)) from None

    # --- stateless evaluation (worker threads) --------------------------------------------

    def _table(self, obj: Any, side: str) -> Table:
        limits = {"max_rows": self.limits.max_rows, "max_columns": self.limits.max_columns}
        try:
            if isinstance(obj, Upload):
                return read_table(obj, max_bytes=self.limits.max_body_bytes, **limits)
            return Table.from_json(obj, **limits)
        except DataError as err:
            raise _limit_error(err, side) from None

    def evaluate_json_body(self, body: bytes | Blob) -> dict[str, Any]:
        """POST /api/v1/drift/evaluate with a JSON body."""
        obj = _object(parse_json(body, loads_columnar), "body", ("reference", "current", "options"))
        for side in ("reference", "current"):
            if side not in obj:
                raise ApiError(400, f"{side} is missing")
        reference = self._table(obj["reference"], "reference")
        current = self._table(obj["current"], "current")
        return self._evaluate(reference, current, _options(obj.get("options")))

    def evaluate_uploads(
        self, reference: Upload, current: Upload, options: bytes | None
    ) -> dict[str, Any]:
        """POST /api/v1/drift/evaluate with two files (CSV, Parquet, Arrow) and JSON options."""
        opts = _options(parse_json(options)) if options is not None else {}
        return self._evaluate(
            self._table(reference, "reference"), self._table(current, "current"), opts
        )

    def _evaluate(
        self, reference: Table, current: Table, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        from node_exporter_ml.drift import evaluate

        return dict(evaluate(reference, current, **options))

    # --- writes -----------------------------------------------------------------------------

    def prepare_reference_json(self, body: bytes | Blob) -> PreparedReference:
        """Validate a JSON reference body: DATA plus optional evaluation ``options``."""
        obj = _object(parse_json(body, loads_columnar), "body", ("columns", "rows", "options"))
        data = {k: v for k, v in obj.items() if k in ("columns", "rows")}
        table = self._table(data, "reference")
        return self._prepared(table, _options(obj.get("options")))

    def prepare_reference_upload(self, upload: Upload, extra: bytes | None) -> PreparedReference:
        """Validate a CSV, Parquet or Arrow reference, with optional JSON evaluation options."""
        options = _options(parse_json(extra)) if extra else {}
        return self._prepared(self._table(upload, "reference"), options)

    def _prepared(self, table: Table, options: dict[str, Any]) -> PreparedReference:
        self._check_reference(table, options)
        return PreparedReference(
            TABLE_FORMAT, pack_table(table), options, table.n_rows, len(table.columns)
        )

    def _check_reference(self, table: Table, options: Mapping[str, Any]) -> None:
        features, predictions, _ = split_reference(table)
        if not features.columns:
            raise ApiError(400, "reference: no feature columns")
        if len(features.columns) > self.limits.max_features:
            raise ApiError(
                413,
                f"reference: {len(features.columns)} feature columns, over the limit of "
                f"{self.limits.max_features} per model (drift.max_features)",
            )
        if table.n_rows == 0:
            raise ApiError(400, "reference: no rows")
        task, options = split_task(options)
        bad = first_non_number(predictions or ()) if task == REGRESSION else None
        if bad is not None:
            raise ApiError(
                400,
                f"reference: row {bad[0]}: prediction must be a finite number for a regression "
                f"model, not {reprlib.repr(bad[1])}",
            )
        # Options are checked now, not at the first evaluation: evaluate a slice against itself.
        sample = Table(
            {k: _head(c, 50) for k, c in features.columns.items()}, min(50, features.n_rows)
        )
        try:
            self._evaluate(sample, sample, options)
        except OptionsError:
            raise
        except DataError:
            pass  # the sample may be too small for some test; the data itself parsed fine

    def store_reference(self, model: str, prepared: PreparedReference) -> int:
        """Store a validated reference (database thread); returns its version.

        A new model beyond drift.max_models is refused (429): each model adds series.
        """
        models = self.store.models()
        if model not in models and len(models) >= self.limits.max_models:
            raise ApiError(
                429,
                f"too many models: {len(models)}, the limit is {self.limits.max_models} "
                "(drift.max_models); DELETE one first",
            )
        return self.store.put_reference(
            model,
            prepared.fmt,
            prepared.data,
            prepared.options,
            prepared.n_rows,
            prepared.n_columns,
        )

    def parse_observations(self, body: bytes) -> ParsedObservations:
        """Validate an observations body and encode it for the store (worker process)."""
        return _parsed(parse_observation_rows(parse_json(body), self.limits))

    def parse_observation_upload(self, upload: Upload) -> ParsedObservations:
        """`parse_observations` of a table: CSV, Parquet or Arrow (worker process)."""
        columns = {"columns": table_lists(self._table(upload, "body"))}
        return _parsed(parse_observation_rows(columns, self.limits))

    def store_observations(self, model: str, parsed: ParsedObservations) -> int:
        """Append parsed observations (database thread); UnknownModelError without a reference."""
        bad = parsed.non_number
        if bad is not None and self._model_task(model) == REGRESSION:
            raise ApiError(
                400,
                f"row {bad[0]}: prediction must be a finite number for a regression model, "
                f"not {reprlib.repr(bad[1])}",
            )
        try:
            return self.store.add_encoded_observations(model, parsed.rows)
        except KeyError:
            raise UnknownModelError(model) from None

    def parse_labels(self, body: bytes) -> list[tuple[str, Any]]:
        """Validate a labels body (worker thread)."""
        return parse_label_rows(parse_json(body), self.limits)

    def store_labels(self, model: str, labels: Sequence[tuple[str, Any]]) -> tuple[int, int]:
        """Store labels (database thread); UnknownModelError without a reference."""
        if self._model_task(model) == REGRESSION:
            bad = first_non_number(label for _, label in labels)
            if bad is not None:
                raise ApiError(
                    400,
                    f"label of id {labels[bad[0]][0]!r} must be a finite number for a "
                    f"regression model, not {reprlib.repr(bad[1])}",
                )
        try:
            return self.store.add_labels(model, labels)
        except KeyError:
            raise UnknownModelError(model) from None

    def _model_task(self, model: str) -> str:
        """The model's task, from its stored options (database thread)."""
        options = self.store.options(model)
        if options is None:
            raise UnknownModelError(model)
        return split_task(options)[0]

    async def delete_model(self, model: str) -> None:
        """Forget a model and everything stored for it."""
        if not await self.in_db(self.store.delete_model, model):
            raise UnknownModelError(model)
        with self._latest_lock:
            self._latest.pop(model, None)
        with self._refs_lock:
            self._refs.pop(model, None)

    # --- continuous evaluation (evaluation thread) ------------------------------------------

    def latest(self) -> dict[str, ModelResult]:
        """The latest result of every model (a copy)."""
        with self._latest_lock:
            return dict(self._latest)

    async def current_result(self, model: str) -> ModelResult:
        """The model's result for its current window (evaluated now if the data changed)."""
        version = await self.in_db(self.store.version, model)
        if version[0] == 0:
            raise UnknownModelError(model)
        cached = self._fresh(model, version)
        if cached is not None:
            return cached
        # Concurrent GETs of one model share one evaluation instead of queueing one each.
        pending = self._evaluating.get(model)
        if pending is None:
            pending = asyncio.ensure_future(_run_in(self._evaluator, self.evaluate_model, model))
            self._evaluating[model] = pending
            pending.add_done_callback(lambda _: self._evaluating.pop(model, None))
        return await asyncio.shield(pending)

    def evaluate_all(self) -> None:
        """Evaluate every model whose data changed since its last result, then prune."""
        models = self.store.models()
        with self._latest_lock:
            for gone in set(self._latest) - set(models):
                del self._latest[gone]
        for model in models:
            try:
                if self._fresh(model, self.store.version(model)) is None:
                    self.evaluate_model(model)
                self.store.prune(model, self.window)
                self._once.forget(f"crash:{model}")
            except UnknownModelError:
                continue  # deleted meanwhile
            except Exception:  # one model's bug must not stop the others
                if self._once.log(logging.ERROR, f"crash:{model}", "drift of %s failed", model):
                    log.exception("drift evaluation of %s failed", model)

    def _fresh(self, model: str, version: tuple[int, int, int]) -> ModelResult | None:
        """The kept result while it still holds: same data, row window (a time window moves)."""
        if self.window.seconds is not None:
            return None
        with self._latest_lock:
            cached = self._latest.get(model)
        return cached if cached is not None and cached.version == version else None

    def _reference(self, model: str) -> LoadedReference:
        ref = self.store.get_reference(model)
        if ref is None:
            raise UnknownModelError(model)
        with self._refs_lock:
            cached = self._refs.get(model)
        # updated_at too: the cache lives in a worker process, which never sees a delete, and
        # a model deleted and created again starts over at version 1.
        if cached is not None and (cached.version, cached.updated_at) == (
            ref.version,
            ref.updated_at,
        ):
            return cached
        loaded = _load_reference(ref)
        with self._refs_lock:
            self._refs[model] = loaded
        return loaded

    def window_report(
        self, model: str, now: float
    ) -> tuple[dict[str, Any], dict[str, Any], str | None]:
        """`build_report` of the model's window at `now` (worker process; reads the store)."""
        ref = self._reference(model)
        window = self.store.window(model, self.window, now)
        labeled = self.store.labeled(model, self.window, now)
        return build_report(model, ref, window, labeled, self.window)

    def evaluate_model(self, model: str) -> ModelResult:
        """Evaluate one model's window now and keep the result (evaluation thread)."""
        started = time.perf_counter()
        version = self.store.version(model)
        now = time.time()
        report, histograms, error = self.in_process(self.window_report, model, now)
        duration = time.perf_counter() - started
        report["evaluated_at"] = now
        report["duration_seconds"] = duration
        result = ModelResult(model, version, now, duration, report, error, histograms)
        self.store.put_result(model, now, report)
        with self._latest_lock:
            self._latest[model] = result
        if error is None:
            self._once.forget(f"model:{model}")
        else:
            self._once.log(logging.WARNING, f"model:{model}", "drift of %s: %s", model, error)
        return result


async def _run_in(
    executor: concurrent.futures.Executor | None, fn: Callable[..., T], *args: Any
) -> T:
    """Run `fn` in one of the service's executors; 503 while the service is not running."""
    if executor is None:
        raise ApiError(503, "the drift service is not running")
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


def table_lists(table: Table) -> dict[str, list[Any]]:
    """A table's columns as lists of JSON values (missing values None, as JSON sends them)."""
    out = {}
    for name, col in table.columns.items():
        values = col.values.tolist()
        if col.dtype == "float":
            values = [None if v != v else v for v in values]
        out[name] = values
    return out


def _head(column: Column, n: int) -> Column:
    return Column(column.name, column.dtype, column.values[:n])


def _read_token(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as err:
        raise StoreError(f"--drift.token-file: {path}: {err.strerror or err}") from None
    if not token:
        raise StoreError(f"--drift.token-file: {path}: the file is empty")
    return token


def _restored(model: str, report: Mapping[str, Any]) -> ModelResult:
    return ModelResult(
        model=model,
        version=(-1, -1, -1),  # never equal to a live version: the first GET re-evaluates
        evaluated_at=float(report.get("evaluated_at") or 0.0),
        duration_seconds=float(report.get("duration_seconds") or 0.0),
        report=report,
        error=report.get("error"),
    )


def _load_reference(ref: Reference) -> LoadedReference:
    if ref.format != TABLE_FORMAT:
        raise StoreError(f"model {ref.model}: reference stored as {ref.format!r}, unreadable")
    table = unpack_table(ref.data)
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
    from node_exporter_ml.drift import evaluate
    from node_exporter_ml.drift.page import column_histograms

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
    from node_exporter_ml.drift.quality import data_quality
    from node_exporter_ml.drift.report import parse_options

    try:
        ranges = parse_options(ref.options).ranges
        return data_quality(ref.features, current, ranges=ranges)
    except (DataError, OptionsError) as err:
        return {"error": str(err)}
