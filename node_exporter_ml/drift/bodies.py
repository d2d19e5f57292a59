"""The drift API's request bodies, decoded and validated: JSON, observation and label rows, tables.

Pure (bytes or decoded JSON in, values the service stores or evaluates out); runs in the drift
worker processes. Every fault raises `RequestError` naming it, `TooLargeError` past one of the
configured `Limits`; the web layer says how to answer them over HTTP.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node_exporter_ml.drift.engine.columnar import Blob, Upload, loads_columnar, read_table
from node_exporter_ml.drift.engine.errors import DataError
from node_exporter_ml.drift.engine.regression import first_non_number
from node_exporter_ml.drift.engine.table import Column, Table
from node_exporter_ml.drift.errors import RequestError, TooLargeError
from node_exporter_ml.drift.store import EncodedObservation, Observation, encode_observations

"""Model names: safe in URLs, label values and file names."""
PREDICTION, CONFIDENCE, ID = "prediction", "confidence", "id"
RESERVED = (PREDICTION, CONFIDENCE, ID)
"""Observation keys that are not features; in a reference, columns with these names too."""
MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits from the config file (drift.max_body_bytes, max_rows, max_columns)."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_rows: int = 1_000_000
    max_columns: int = 1_000
    max_models: int = 50
    """Models with a reference; a reference for one more is refused (each adds series)."""
    max_features: int = 200
    """Feature columns of a model's reference, and of one observation batch (too large beyond)."""


@dataclass(frozen=True, slots=True)
class ParsedObservations:
    """Observations encoded for the store, and what a regression model would refuse.

    The predictions are checked in the worker while still decoded, not decoded again later.
    """

    rows: list[EncodedObservation]
    non_number: tuple[int, Any] | None
    """(row, prediction) of the first prediction neither missing nor a finite number."""


def parsed_observations(rows: list[Observation]) -> ParsedObservations:
    """Observations encoded for the store, with the first prediction that is not a number."""
    return ParsedObservations(
        encode_observations(rows), first_non_number(o.prediction for o in rows)
    )


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A surrogate escape (U+D800-U+DFFF): a lone one makes a string no UTF-8 output can hold."""


def parse_json(body: bytes | Blob, loads: Callable[[Any], Any] = json.loads) -> Any:
    """Decode a JSON body (UTF-8/16/32), or raise RequestError naming the problem.

    Strings that cannot be written as UTF-8 (a lone surrogate escape, U+D800-U+DFFF)
    are refused here: they would break every later rendering (metrics, reports, the page).
    A `Blob` goes on to `loads_columnar` as a blob (it takes it and drops its bytes once
    decoded); its bytes are only scanned here first.
    """
    data = body.take() if isinstance(body, Blob) else body
    if not data or data.isspace():  # not strip(): that would copy the whole body
        raise RequestError("malformed JSON: the body is empty")
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
        raise RequestError(
            f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except UnicodeDecodeError:
        raise RequestError("malformed JSON: the body is not UTF-8 text") from None
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None
    except ValueError as err:  # e.g. an integer past Python's 4,300-digit limit
        raise RequestError(f"malformed JSON: {err}") from None
    if recheck:
        try:
            json.dumps(value, ensure_ascii=False, default=_column_values).encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                "malformed JSON: a string holds a lone surrogate (\\ud800-\\udfff escape)"
            ) from None
        except RecursionError:
            raise RequestError("malformed JSON: nested too deeply") from None
    return value


def _column_values(value: Any) -> Any:
    """A column typed as it was decoded (`loads_columnar`), for json.dumps: its values."""
    if isinstance(value, Column):
        return value.values.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _table_error(err: DataError, side: str) -> RequestError:
    """A table's DataError as a request error naming the side (TooLargeError past a limit)."""
    text = str(err)
    kind = TooLargeError if text.startswith("too many") else RequestError
    return kind(f"{side}: {text}")


def body_object(value: Any, what: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    """`value` when it is a JSON object with no key outside `allowed`; `what` names it."""
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be a JSON object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise RequestError(
            f"{what}: unknown key {unknown[0]!r} (expected {', '.join(sorted(allowed))})"
        )
    return value


def body_options(value: Any, what: str = "options") -> dict[str, Any]:
    """Evaluation options: a JSON object, or none (the engine checks the keys and values)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be a JSON object")
    return dict(value)


_SCALAR_TYPES = frozenset({type(None), str, int, float, bool})


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _obs_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RequestError(f"{where}: id must be a string or an integer")
    text = str(value)
    if not text or len(text) > MAX_ID_LENGTH:
        raise RequestError(f"{where}: id must be 1-{MAX_ID_LENGTH} characters")
    return text


def parse_observation_rows(obj: Any, limits: Limits) -> list[Observation]:
    """Observations from a body; raises RequestError (TooLargeError past a limit) naming the fault.

    The body is ``{"rows": [{feature: value, ..., "prediction"?, "confidence"?, "id"?}]}``
    or the same as ``{"columns": {...}}``.
    """
    body = body_object(obj, "body", ("rows", "columns"))
    if len(body) != 1:
        raise RequestError('body must be {"rows": [...]} or {"columns": {...}}')
    if "columns" in body:
        columns = body["columns"]
        if not isinstance(columns, dict):
            raise RequestError("columns must be an object of column: [values]")
        lengths = set()
        for name, values in columns.items():
            if not isinstance(values, list):
                raise RequestError(f"column {name!r}: values must be a list")
            lengths.add(len(values))
        if len(lengths) > 1:
            raise RequestError("columns must all have the same number of values")
        n = lengths.pop() if lengths else 0
        if n > limits.max_rows:
            raise TooLargeError(f"too many rows: {n}, the limit is {limits.max_rows}")
        names = list(columns)
        rows: Any = [{k: columns[k][i] for k in names} for i in range(n)]
    else:
        rows = body["rows"]
        if not isinstance(rows, list):
            raise RequestError("rows must be a list of objects")
    if len(rows) > limits.max_rows:
        raise TooLargeError(f"too many rows: {len(rows)}, the limit is {limits.max_rows}")
    names_seen: set[str] = set()
    out = []
    reserved = set(RESERVED)
    for i, row in enumerate(rows):
        where = f"row {i}"
        if not isinstance(row, dict):
            raise RequestError(f"{where} is not an object")
        # Fast path (json.loads makes exact types): one set of value types per row.
        features = row if reserved.isdisjoint(row) else {
            k: v for k, v in row.items() if k not in reserved
        }  # fmt: skip
        if not set(map(type, features.values())) <= _SCALAR_TYPES:
            bad = next(k for k, v in features.items() if not _scalar(v))
            raise RequestError(f"{where}: {bad!r} must be a number, string, boolean or null")
        if not names_seen.issuperset(features):
            names_seen.update(features)
            cap = min(limits.max_columns, limits.max_features)
            if len(names_seen) > cap:
                raise TooLargeError(f"too many columns: over the limit of {cap} features per model")
        prediction = row.get(PREDICTION)
        if not _scalar(prediction):
            raise RequestError(f"{where}: prediction must be a number, string, boolean or null")
        confidence = row.get(CONFIDENCE)
        if confidence is not None:
            if (
                isinstance(confidence, bool)
                or not isinstance(confidence, int | float)
                or not 0.0 <= confidence <= 1.0
            ):
                raise RequestError(f"{where}: confidence must be a number from 0 to 1")
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
    body = body_object(obj, "body", ("labels",))
    labels = body.get("labels")
    if not isinstance(labels, list):
        raise RequestError('body must be {"labels": [{"id": ..., "label": ...}]}')
    if len(labels) > limits.max_rows:
        raise TooLargeError(f"too many labels: {len(labels)}, the limit is {limits.max_rows}")
    out: dict[str, Any] = {}
    for i, item in enumerate(labels):
        where = f"labels[{i}]"
        entry = body_object(item, where, ("id", "label"))
        obs_id = _obs_id(entry.get(ID), where)
        if obs_id is None:
            raise RequestError(f"{where}: id is required")
        label = entry.get("label")
        if label is None or not _scalar(label):
            raise RequestError(f"{where}: label must be a number, string or boolean")
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


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def body_table(obj: Any, side: str, limits: Limits) -> Table:
    """The table of one side of a request: a JSON shape (`Table.from_json`) or an upload."""
    bounds = {"max_rows": limits.max_rows, "max_columns": limits.max_columns}
    try:
        if isinstance(obj, Upload):
            return read_table(obj, max_bytes=limits.max_body_bytes, **bounds)
        return Table.from_json(obj, **bounds)
    except DataError as err:
        raise _table_error(err, side) from None


def table_lists(table: Table) -> dict[str, list[Any]]:
    """A table's columns as lists of JSON values (missing values None, as JSON sends them)."""
    out = {}
    for name, col in table.columns.items():
        values = col.values.tolist()
        if col.dtype == "float":
            values = [None if v != v else v for v in values]
        out[name] = values
    return out
