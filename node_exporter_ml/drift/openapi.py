"""The drift API's OpenAPI 3.1 document (served at /api/v1/openapi.json)."""

from __future__ import annotations

import copy
import re
from typing import Any

from node_exporter_ml import __version__
from node_exporter_ml.drift.engine.columnar import TABLE_MEDIA

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A model's name in paths: what the routes accept and the document declares."""
MODEL_PATTERN = f"^{MODEL_NAME.pattern}$"

_SCALAR: dict[str, Any] = {"type": ["number", "string", "boolean", "null"]}
_COLUMNS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": "array", "items": _SCALAR},
}
_ROWS: dict[str, Any] = {
    "type": "array",
    "items": {"type": "object", "additionalProperties": _SCALAR},
}
_BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
_TABLE_BODIES: dict[str, Any] = {media: {"schema": _BINARY} for media in TABLE_MEDIA}
"""Table bodies (CSV, Parquet, Arrow IPC stream); multipart file parts may be any of them."""


def _obj(properties: dict[str, Any], required: tuple[str, ...] = (), closed: bool = True) -> Any:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    if required:
        schema["required"] = list(required)
    return schema


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed body, wrong types or a bad model name",
        401: "Missing or wrong credentials: basic auth (when the web config has users) and "
        "the drift token (when --drift.token-file is set)",
        404: "Unknown model",
        408: "The body did not arrive in time",
        413: "Body, rows, columns or features over the limit",
        415: "Unsupported Content-Type",
        429: "Too many models (drift.max_models)",
        503: "Too many concurrent requests or authentication attempts; retry after a second",
        507: "The state directory is full; nothing was stored",
    }
    ref = {"$ref": "#/components/schemas/Error"}
    return {str(c): {"description": text[c], **_json(ref)} for c in codes}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, **_json(schema)}


def _committed(**properties: Any) -> dict[str, Any]:
    return {
        "200": _ok("Committed", _obj(properties, closed=False)),
        **_errors(400, 401, 404, 408, 413, 415, 429, 503, 507),
    }


_DATA: dict[str, Any] = {
    "description": "A table: column-oriented or row-oriented.",
    "oneOf": [_obj({"columns": _COLUMNS}, ("columns",)), _obj({"rows": _ROWS}, ("rows",))],
}
_OPTIONS: dict[str, Any] = {
    "type": "object",
    "description": "Evaluation options of node_exporter_ml.drift.evaluate (Evidently's names: "
    "drift_share, method, num_method, cat_method, per_column_method, threshold, ...; and "
    "ranges {column: [low, high]} for the data-quality out-of-range share). With a model's "
    "reference also task: classification (default) or regression.",
}
_REPORT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "columns": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "column_type": {"enum": ["num", "cat"]},
                    "stattest": {"type": "string"},
                    "score": {"type": ["number", "null"]},
                    "threshold": {"type": "number"},
                    "drift_detected": {"type": "boolean"},
                },
            },
        },
        "dataset": {
            "type": ["object", "null"],
            "properties": {
                "number_of_columns": {"type": "integer"},
                "number_of_drifted_columns": {"type": "integer"},
                "share_of_drifted_columns": {"type": "number"},
                "dataset_drift": {"type": "boolean"},
                "drift_share": {"type": "number"},
            },
        },
    },
    "required": ["columns", "dataset"],
}
_OBSERVATION: dict[str, Any] = {
    "type": "object",
    "description": "Feature values, plus the optional reserved keys prediction, confidence, id.",
    "properties": {
        "prediction": _SCALAR,
        "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "id": {"type": ["string", "integer", "null"]},
    },
    "additionalProperties": _SCALAR,
}
_LABEL = _obj(
    {"id": {"type": ["string", "integer"]}, "label": {"type": ["string", "number", "boolean"]}},
    ("id", "label"),
)
_MODEL_PARAM = {
    "name": "model",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": MODEL_PATTERN},
}
# The drift token as a bearer token, or beside basic auth in X-Drift-Token (docs/security.md).
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": [], "driftToken": []}]


def _write(operation_id: str, summary: str, content: dict[str, Any], responses: Any) -> Any:
    return {
        "operationId": operation_id,
        "summary": summary,
        "security": _BEARER,
        "parameters": [_MODEL_PARAM],
        "requestBody": {"required": True, "content": content},
        "responses": responses,
    }


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "node-exporter-ml drift API",
        "version": __version__,
        "description": "Data drift with Evidently's default tests, per-model windows kept in "
        "SQLite, late labels, and a stateless evaluation endpoint.",
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "basic": {"type": "http", "scheme": "basic"},
            "driftToken": {"type": "apiKey", "in": "header", "name": "X-Drift-Token"},
        },
        "schemas": {
            "Data": _DATA,
            "Report": _REPORT,
            "Error": _obj({"error": {"type": "string"}}, ("error",)),
            "Observation": _OBSERVATION,
        },
    },
    "paths": {
        "/api/v1/drift/evaluate": {
            "post": {
                "operationId": "evaluate",
                "summary": "Evaluate drift of current against reference (stateless).",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _obj(
                                {
                                    "reference": {"$ref": "#/components/schemas/Data"},
                                    "current": {"$ref": "#/components/schemas/Data"},
                                    "options": _OPTIONS,
                                },
                                ("reference", "current"),
                            )
                        },
                        "multipart/form-data": {
                            "schema": _obj(
                                {
                                    "reference": _BINARY,
                                    "current": _BINARY,
                                    "options": {"type": "string", "description": "JSON options"},
                                },
                                ("reference", "current"),
                            )
                        },
                    },
                },
                "responses": {
                    "200": _ok("The report", {"$ref": "#/components/schemas/Report"}),
                    **_errors(400, 401, 408, 413, 415, 503, 507),
                },
            }
        },
        "/api/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "Models that have a reference.",
                "responses": {
                    "200": _ok(
                        "Model names",
                        _obj({"models": {"type": "array", "items": {"type": "string"}}}),
                    )
                },
            }
        },
        "/api/v1/models/{model}": {
            "delete": {
                "operationId": "deleteModel",
                "summary": "Forget a model: reference, observations, labels and results.",
                "security": _BEARER,
                "parameters": [_MODEL_PARAM],
                "responses": {"200": {"description": "Deleted"}, **_errors(400, 401, 404)},
            }
        },
        "/api/v1/models/{model}/reference": {
            "put": _write(
                "putReference",
                "Set a model's reference (creates the model). Columns named prediction and "
                "confidence are the reference's predictions and confidences.",
                {
                    "application/json": {
                        "schema": _obj({"columns": _COLUMNS, "rows": _ROWS, "options": _OPTIONS})
                    },
                    **_TABLE_BODIES,
                    "multipart/form-data": {
                        "schema": _obj(
                            {
                                "reference": _BINARY,
                                "options": {"type": "string", "description": "JSON options"},
                            },
                            ("reference",),
                        )
                    },
                },
                {
                    "200": {"description": "Replaced"},
                    "201": {"description": "Created"},
                    **_errors(400, 401, 408, 413, 415, 429, 503, 507),
                },
            )
        },
        "/api/v1/models/{model}/observations": {
            "post": _write(
                "postObservations",
                "Append observations to the model's window; 2xx means committed.",
                _json(
                    {
                        "oneOf": [
                            _obj(
                                {
                                    "rows": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Observation"},
                                    }
                                },
                                ("rows",),
                            ),
                            _obj({"columns": _COLUMNS}, ("columns",)),
                        ]
                    }
                )["content"]
                | _TABLE_BODIES,
                _committed(model={"type": "string"}, accepted={"type": "integer"}),
            )
        },
        "/api/v1/models/{model}/labels": {
            "post": _write(
                "postLabels",
                "Late ground truth, joined with observations by id.",
                _json(_obj({"labels": {"type": "array", "items": _LABEL}}, ("labels",)))["content"],
                _committed(stored={"type": "integer"}, matched={"type": "integer"}),
            )
        },
        "/api/v1/models/{model}/drift": {
            "get": {
                "operationId": "getDrift",
                "summary": "The report of the model's current window (with quality, "
                "prediction and label figures).",
                "parameters": [_MODEL_PARAM],
                "responses": {
                    "200": _ok("The report", {"$ref": "#/components/schemas/Report"}),
                    **_errors(400, 404),
                },
            }
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """A copy of the OpenAPI document."""
    return copy.deepcopy(_DOCUMENT)
