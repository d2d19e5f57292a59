"""The drift service: stores what the API accepts and evaluates every model's window.

Every ``--drift.interval`` the service evaluates each model whose data changed (every model,
for time windows) against its reference, and keeps the latest result per model for the
collector to publish. SQLite writes run in one database thread; request parsing
(`drift.bodies`), typing and every evaluation run in worker processes (`drift.worker`), waited
on from a small thread pool; continuous evaluation waits in its own thread, so a long
evaluation never delays a write, and the agent's own process never loads the statistics.

It speaks in domain errors only (`drift.errors`, the engine's and the store's); the web layer
(`drift.web`) maps them to HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import reprlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from node_exporter_ml.drift.bodies import (
    Limits,
    ParsedObservations,
    body_object,
    body_options,
    body_table,
    parse_json,
    parse_label_rows,
    parse_observation_rows,
    parsed_observations,
    split_reference,
    table_lists,
)
from node_exporter_ml.drift.engine.columnar import Blob, Upload, loads_columnar
from node_exporter_ml.drift.engine.errors import DataError, OptionsError
from node_exporter_ml.drift.engine.regression import (
    REGRESSION,
    first_non_number,
    split_task,
)
from node_exporter_ml.drift.engine.report import evaluate
from node_exporter_ml.drift.engine.table import Column, Table
from node_exporter_ml.drift.errors import (
    RequestError,
    TokenFileError,
    TooLargeError,
    TooManyModelsError,
    UnavailableError,
    UnknownModelError,
    WorkerTimeoutError,
)
from node_exporter_ml.drift.store import (
    TABLE_FORMAT,
    Store,
    StoreError,
    Window,
    pack_table,
)
from node_exporter_ml.drift.windowreport import LoadedReference, build_report, load_reference
from node_exporter_ml.drift.worker import WorkerError, WorkerLimits, WorkerPool
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.tasks import cancel_task

log = logging.getLogger(__name__)

T = TypeVar("T")

API_WORKERS = 2
"""Requests parsed or evaluated at once; more wait (each may hold a 64 MiB body)."""
STATELESS_EVALUATIONS = 1
"""Stateless evaluations at once: each holds the GIL for long stretches, and scrapes wait."""


@dataclass(frozen=True, slots=True)
class PreparedReference:
    """A validated reference, ready to store."""

    fmt: str
    data: bytes
    options: Mapping[str, Any]
    n_rows: int
    n_columns: int


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


# --- the service ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What a worker needs to build the service's twin: its state, window and limits."""

    state_dir: str
    window: Window
    limits: Limits


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
            StoreError: the state directory or database cannot be used.
            TokenFileError: the token file cannot be read or is empty.
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

    def reconfigure(
        self, *, interval: float, window: Window, limits: Limits, token_file: str | None
    ) -> None:
        """Take new settings (SIGHUP, in a worker thread); the store stays as started.

        The token file is read again, so a leaked token is revoked by replacing the file.
        """
        self.window = window
        self.limits = limits
        self.interval = interval
        self.token_file = token_file
        self.reload_token()

    def worker_usage(self) -> tuple[dict[str, int], int] | None:
        """The worker processes' restarts by reason and resident memory; None before start."""
        pool = self.pool
        if pool is None:
            return None
        return pool.restarts(), pool.resident_memory_bytes()

    def reload_token(self) -> None:
        """Read the token file again (SIGHUP, in a worker thread); a failure keeps the old token.

        Without a token file any previous token is dropped.
        """
        if not self.token_file:
            self.token = None
            return
        try:
            self.token = _read_token(self.token_file)
        except TokenFileError as err:
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
            UnavailableError: the service is not running, or the worker died (it is replaced).
            WorkerTimeoutError: the worker timed out (it is killed and replaced).
        """
        pool = self.pool
        if pool is None:
            raise UnavailableError("the drift service is not running")
        try:
            if getattr(fn, "__self__", None) is self:
                config = ServiceConfig(self.state_dir, self.window, self.limits)
                result: T = pool.call(call_method, config, fn.__name__, *args)
                return result
            return pool.call(fn, *args)
        except WorkerError as err:
            if err.reason == "timeout":
                raise WorkerTimeoutError(str(err)) from None
            raise UnavailableError(str(err)) from None

    # --- stateless evaluation (worker threads) --------------------------------------------

    def evaluate_json_body(self, body: bytes | Blob) -> dict[str, Any]:
        """POST /api/v1/drift/evaluate with a JSON body."""
        obj = body_object(
            parse_json(body, loads_columnar), "body", ("reference", "current", "options")
        )
        for side in ("reference", "current"):
            if side not in obj:
                raise RequestError(f"{side} is missing")
        reference = body_table(obj["reference"], "reference", self.limits)
        current = body_table(obj["current"], "current", self.limits)
        return self._evaluate(reference, current, body_options(obj.get("options")))

    def evaluate_uploads(
        self, reference: Upload, current: Upload, options: bytes | None
    ) -> dict[str, Any]:
        """POST /api/v1/drift/evaluate with two files (CSV, Parquet, Arrow) and JSON options."""
        opts = body_options(parse_json(options)) if options is not None else {}
        return self._evaluate(
            body_table(reference, "reference", self.limits),
            body_table(current, "current", self.limits),
            opts,
        )

    def _evaluate(
        self, reference: Table, current: Table, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        return dict(evaluate(reference, current, **options))

    # --- writes -----------------------------------------------------------------------------

    def prepare_reference_json(self, body: bytes | Blob) -> PreparedReference:
        """Validate a JSON reference body: DATA plus optional evaluation ``options``."""
        obj = body_object(parse_json(body, loads_columnar), "body", ("columns", "rows", "options"))
        data = {k: v for k, v in obj.items() if k in ("columns", "rows")}
        table = body_table(data, "reference", self.limits)
        return self._prepared(table, body_options(obj.get("options")))

    def prepare_reference_upload(self, upload: Upload, extra: bytes | None) -> PreparedReference:
        """Validate a CSV, Parquet or Arrow reference, with optional JSON evaluation options."""
        options = body_options(parse_json(extra)) if extra else {}
        return self._prepared(body_table(upload, "reference", self.limits), options)

    def _prepared(self, table: Table, options: dict[str, Any]) -> PreparedReference:
        self._check_reference(table, options)
        return PreparedReference(
            TABLE_FORMAT, pack_table(table), options, table.n_rows, len(table.columns)
        )

    def _check_reference(self, table: Table, options: Mapping[str, Any]) -> None:
        features, predictions, _ = split_reference(table)
        if not features.columns:
            raise RequestError("reference: no feature columns")
        if len(features.columns) > self.limits.max_features:
            raise TooLargeError(
                f"reference: {len(features.columns)} feature columns, over the limit of "
                f"{self.limits.max_features} per model (drift.max_features)",
            )
        if table.n_rows == 0:
            raise RequestError("reference: no rows")
        task, options = split_task(options)
        bad = first_non_number(predictions or ()) if task == REGRESSION else None
        if bad is not None:
            raise RequestError(
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

        A new model beyond drift.max_models is refused (TooManyModelsError): each adds series.
        """
        models = self.store.models()
        if model not in models and len(models) >= self.limits.max_models:
            raise TooManyModelsError(
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
        return parsed_observations(parse_observation_rows(parse_json(body), self.limits))

    def parse_observation_upload(self, upload: Upload) -> ParsedObservations:
        """`parse_observations` of a table: CSV, Parquet or Arrow (worker process)."""
        columns = {"columns": table_lists(body_table(upload, "body", self.limits))}
        return parsed_observations(parse_observation_rows(columns, self.limits))

    def store_observations(self, model: str, parsed: ParsedObservations) -> int:
        """Append parsed observations (database thread); UnknownModelError without a reference."""
        bad = parsed.non_number
        if bad is not None and self._model_task(model) == REGRESSION:
            raise RequestError(
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
                raise RequestError(
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
        loaded = load_reference(ref)
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
    """Run `fn` in one of the service's executors; UnavailableError while it is not running."""
    if executor is None:
        raise UnavailableError("the drift service is not running")
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


def _head(column: Column, n: int) -> Column:
    return Column(column.name, column.dtype, column.values[:n])


def _read_token(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as err:
        raise TokenFileError(f"--drift.token-file: {path}: {err.strerror or err}") from None
    if not token:
        raise TokenFileError(f"--drift.token-file: {path}: the file is empty")
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


# --- in the worker process ------------------------------------------------------------------
# Each worker keeps one `DriftService` per configuration, never started: its parsing and
# evaluation methods are pure, and for window reports it opens its own connection to the
# service's SQLite store (WAL mode lets it read while the agent writes), with its own reference
# cache. So the agent sends a method name and a body, and gets back a report or packed table.

_TWINS: dict[ServiceConfig, DriftService] = {}


def _twin(config: ServiceConfig) -> DriftService:
    service = _TWINS.get(config)
    if service is None:
        # One configuration at a time in practice; a reload makes a new twin.
        for old in _TWINS.values():
            old.store.close()
        _TWINS.clear()
        service = _TWINS[config] = DriftService(
            config.state_dir, window=config.window, limits=config.limits
        )
    return service


def call_method(config: ServiceConfig, method: str, *args: Any) -> Any:
    """``DriftService.<method>(*args)`` on this worker's twin of the agent's service."""
    service = _twin(config)
    if method == "window_report" and not service.store.is_open:
        service.store.open(lock=False)  # the agent holds the state directory's lock
    fn: Callable[..., Any] = getattr(service, method)
    return fn(*args)
