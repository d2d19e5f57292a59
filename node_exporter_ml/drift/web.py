"""The drift HTTP API (aiohttp routes): stateless evaluation, per-model state, report, page.

Every error is JSON ``{"error": "..."}`` with a 4xx status naming what was wrong: the
subsystem's errors become statuses in one table (`ERRORS`), and nothing below this module
knows HTTP. Who may call which route (basic auth, the drift token) is decided by the agent's
one middleware (``webguard``), for these routes as for every other. Bodies are streamed
against our own limit (``drift.max_body_bytes``) within ``BODY_TIMEOUT``, so the web app's
``client_max_size`` does not apply. JSON decoding, table building and evaluation run in the
service's worker processes; SQLite in its database thread; nothing heavy runs on the loop.
Tables come as JSON, CSV, Parquet or Arrow IPC stream (`drift.engine.columnar`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from node_exporter_ml.drift.engine.columnar import TABLE_MEDIA, Blob, Upload, sniff
from node_exporter_ml.drift.engine.errors import DataError, OptionsError
from node_exporter_ml.drift.errors import (
    RequestError,
    TooLargeError,
    TooManyModelsError,
    UnavailableError,
    UnknownModelError,
    WorkerTimeoutError,
)
from node_exporter_ml.drift.openapi import MODEL_NAME, openapi_document
from node_exporter_ml.drift.page import render_error, render_page
from node_exporter_ml.drift.store import StoreFullError
from node_exporter_ml.drift.worker import trim_heap

if TYPE_CHECKING:
    from node_exporter_ml.drift.service import DriftService

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CHUNK = 1 << 16
TRIM_BYTES = 1 << 20
"""After a request body this large (or of unknown length), the agent trims its heap."""
BODY_TIMEOUT = 60.0
"""Seconds a request body may take to arrive (read before the request takes a work slot)."""


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None, so it is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class ApiError(Exception):
    """What to answer a request: an HTTP status and a message naming the fault.

    Raised by the handlers for faults of the HTTP exchange itself (path, media type, framing,
    body size and arrival); `api_error` makes one from a domain error.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    message: Callable[[Any], str] = str
    logged: bool = False
    """Logged at ERROR: the operator has to act (the request's sender cannot)."""


ERRORS: Mapping[type[Exception], _Answer] = {
    RequestError: _Answer(400),
    TooLargeError: _Answer(413),
    UnknownModelError: _Answer(
        404, lambda err: f"unknown model {err.model!r}: PUT its reference first"
    ),
    TooManyModelsError: _Answer(429),
    UnavailableError: _Answer(503),
    WorkerTimeoutError: _Answer(504),
    OptionsError: _Answer(400, lambda err: f"bad options: {err}"),
    DataError: _Answer(400, lambda err: f"bad data: {err}"),
    StoreFullError: _Answer(
        507, lambda _: "the agent's state directory is full; nothing was stored", logged=True
    ),
}
"""The one place the drift subsystem's errors become HTTP: class -> status and message.

A subclass not listed answers as its nearest listed base class; any other error is a bug of
ours (500, logged).
"""


def _answer(err: Exception) -> _Answer | None:
    for cls in type(err).__mro__:
        answer = ERRORS.get(cls)
        if answer is not None:
            return answer
    return None


def api_error(err: Exception) -> ApiError | None:
    """The answer `ERRORS` gives `err` (by its nearest listed class); None: not a domain error."""
    answer = _answer(err)
    return None if answer is None else ApiError(answer.status, answer.message(err))


def error_response(status: int, message: str, **headers: str) -> web.Response:
    """A JSON error body with `status`."""
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _dumps(value: Any) -> str:
    return json.dumps(json_safe(value), separators=(",", ":"), allow_nan=False)


def guarded(handler: Handler) -> Handler:
    """Turn every failure of `handler` into a JSON error (a 500 only for our own bugs)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as err:
            return error_response(err.status, err.message)
        except web.HTTPException as err:
            if err.status < 400:
                raise
            return error_response(err.status, err.reason)
        except (HttpProcessingError, ConnectionError) as err:
            # A body cut short or badly framed by the client: its fault, not a bug of ours.
            return error_response(400, f"incomplete or malformed request body: {err}")
        except Exception as err:
            answer = _answer(err)
            if answer is None:
                log.exception("drift API %s %s failed", request.method, request.path)
                return error_response(500, "internal error (logged by the agent)")
            if answer.logged:
                log.error("drift API %s %s: %s", request.method, request.path, err)
            return error_response(answer.status, answer.message(err))

    return wrapped


# --- request helpers -----------------------------------------------------------------------


def _model(request: web.Request) -> str:
    name = request.match_info["model"]
    if not MODEL_NAME.fullmatch(name):
        raise ApiError(
            400,
            f"bad model name {name[:140]!r}: expected 1-128 characters of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit",
        )
    return name


def _check_length(request: web.Request, limit: int) -> None:
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, f"body of {length} bytes is over the limit of {limit} bytes")


async def _gather(chunks: AsyncIterable[bytes], budget: int, limit: int) -> bytearray:
    """The chunks copied into one buffer as they arrive; 413 once past `budget` (of `limit`).

    One growing buffer (above glibc's mmap threshold it grows by remapping, never by copying),
    never a list of chunks and then their join: the body is held once, and each chunk is freed
    as soon as it is copied, so chunks never pile up in the agent's heap.
    """
    out = bytearray()
    async for chunk in chunks:
        if len(out) + len(chunk) > budget:
            raise ApiError(413, f"body is over the limit of {limit} bytes")
        out += chunk
    return out


def _timeout() -> ApiError:
    return ApiError(408, f"the body did not arrive within {BODY_TIMEOUT:g}s")


async def _read_body(request: web.Request, limit: int) -> bytearray:
    _check_length(request, limit)
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await _gather(request.content.iter_chunked(CHUNK), limit, limit)
    except TimeoutError:
        raise _timeout() from None


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _read_part(part: BodyPartReader, budget: int, limit: int) -> bytearray:
    data = await _gather(_part_chunks(part), budget, limit)
    if part.headers.get("Content-Transfer-Encoding", "").lower() == "base64":
        raise ApiError(400, f"multipart part {part.name!r}: base64 transfer encoding unsupported")
    return data


async def _read_multipart(
    request: web.Request, limit: int, allowed: tuple[str, ...]
) -> dict[str, bytearray]:
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await _read_parts(request, limit, allowed)
    except TimeoutError:
        raise _timeout() from None


async def _read_parts(
    request: web.Request, limit: int, allowed: tuple[str, ...]
) -> dict[str, bytearray]:
    _check_length(request, limit)
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as err:
        raise ApiError(400, f"malformed multipart body: {err}") from None
    parts: dict[str, bytearray] = {}
    used = 0
    try:
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "malformed multipart body: nested multipart is not supported")
            name = part.name
            if name not in allowed:
                raise ApiError(
                    400, f"unexpected multipart field {name!r} (expected {', '.join(allowed)})"
                )
            if name in parts:
                raise ApiError(400, f"multipart field {name!r} given twice")
            data = await _read_part(part, limit - used, limit)
            used += len(data)
            parts[name] = data
    except ApiError:
        raise
    except (ValueError, AssertionError, KeyError, UnicodeDecodeError) as err:
        raise ApiError(400, f"malformed multipart body: {err}") from None
    return parts


def _media_type(request: web.Request) -> str:
    if "Content-Type" not in request.headers:
        return "application/json"
    return request.content_type.lower()


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _unsupported(media: str, expected: str) -> ApiError:
    return ApiError(415, f"unsupported Content-Type {media!r} (expected {expected})")


def _json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=_dumps(value), status=status, content_type="application/json")


# --- handlers ------------------------------------------------------------------------------


def routes(service: DriftService) -> list[web.RouteDef]:
    """The drift API's routes, bound to `service`."""

    def trimmed(handler: Handler) -> Handler:
        """`handler`, then, after a large body, the agent's heap trimmed in the database thread.

        A large request leaves freed but resident memory behind (measured: 11 MiB after a
        50,000-row reference); trimming keeps the agent at its idle size between uploads.
        """

        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            finally:
                task = asyncio.current_task()
                length = request.content_length  # None: chunked, of unknown size
                large = length is None or length >= TRIM_BYTES
                if large and not (task is not None and task.cancelling()):
                    with contextlib.suppress(UnavailableError):  # stopped meanwhile
                        await service.in_db(trim_heap)

        return wrapped

    # Bodies are read first (under BODY_TIMEOUT), then the request takes a work slot: a client
    # trickling its body holds no slot that others wait for.
    async def evaluate(request: web.Request) -> web.StreamResponse:
        limit = service.limits.max_body_bytes
        media = _media_type(request)
        if _is_json(media):
            # A blob: the agent lets go of the body once it is sent to the worker.
            body = Blob(await _read_body(request, limit))
            async with service.admission, service.evaluations:
                report = await service.in_worker(service.evaluate_json_body, body)
        elif media == "multipart/form-data":
            parts = await _read_multipart(request, limit, ("reference", "current", "options"))
            for name in ("reference", "current"):
                if name not in parts:
                    raise ApiError(400, f"multipart field {name!r} is missing (a file)")
            async with service.admission, service.evaluations:
                report = await service.in_worker(
                    service.evaluate_uploads,
                    Upload(parts["reference"], sniff(parts["reference"])),
                    Upload(parts["current"], sniff(parts["current"])),
                    parts.get("options"),
                )
        else:
            raise _unsupported(media, "application/json or multipart/form-data")
        return _json_response(report)

    async def put_reference(request: web.Request) -> web.StreamResponse:
        model = _model(request)
        limit = service.limits.max_body_bytes
        media = _media_type(request)
        if _is_json(media):
            prepare: Callable[..., Any] = service.prepare_reference_json
            args: tuple[Any, ...] = (Blob(await _read_body(request, limit)),)
        elif media in TABLE_MEDIA:
            body = await _read_body(request, limit)
            prepare, args = service.prepare_reference_upload, (Upload(body, media), None)
        elif media == "multipart/form-data":
            parts = await _read_multipart(request, limit, ("reference", "options"))
            if "reference" not in parts:
                raise ApiError(400, "multipart field 'reference' is missing (a file)")
            upload = Upload(parts["reference"], sniff(parts["reference"]))
            prepare, args = service.prepare_reference_upload, (upload, parts.get("options"))
        else:
            raise _unsupported(media, f"application/json, {', '.join(TABLE_MEDIA)} "
                               "or multipart/form-data")  # fmt: skip
        async with service.admission:
            prepared = await service.in_worker(prepare, *args)
            version = await service.in_db(service.store_reference, model, prepared)
        return _json_response(
            {
                "model": model,
                "version": version,
                "rows": prepared.n_rows,
                "columns": prepared.n_columns,
            },
            status=201 if version == 1 else 200,
        )

    async def append(
        request: web.Request,
        parse: Callable[[Any], Any],
        store: Callable[[str, Any], Any],
        expected: str = "application/json",
    ) -> tuple[str, Any]:
        """Read the body (JSON or a `TABLE_MEDIA` table), parse it in the worker, store it.

        The body is read before the request takes a work slot.
        """
        model = _model(request)
        media = _media_type(request)
        table_media = media if media in TABLE_MEDIA and expected != "application/json" else None
        if table_media is None and not _is_json(media):
            raise _unsupported(media, expected)
        body: Any = await _read_body(request, service.limits.max_body_bytes)
        if table_media is not None:
            body = Upload(body, table_media)
        async with service.admission:
            parsed = await service.in_worker(parse, body)
            return model, await service.in_db(store, model, parsed)

    async def post_observations(request: web.Request) -> web.StreamResponse:
        parse = (
            service.parse_observation_upload
            if _media_type(request) in TABLE_MEDIA
            else service.parse_observations
        )
        expected = f"application/json, {', '.join(TABLE_MEDIA)}"
        model, count = await append(request, parse, service.store_observations, expected)
        return _json_response({"model": model, "accepted": count})

    async def post_labels(request: web.Request) -> web.StreamResponse:
        model, (stored, matched) = await append(request, service.parse_labels, service.store_labels)
        return _json_response({"model": model, "stored": stored, "matched": matched})

    async def delete_model(request: web.Request) -> web.StreamResponse:
        model = _model(request)
        await service.delete_model(model)
        return _json_response({"model": model, "deleted": True})

    async def get_drift(request: web.Request) -> web.StreamResponse:
        model = _model(request)
        result = await service.current_result(model)
        return _json_response(result.report)

    async def list_models(request: web.Request) -> web.StreamResponse:
        models = await service.in_db(service.store.models)
        return _json_response({"models": models})

    async def openapi(request: web.Request) -> web.StreamResponse:
        return web.json_response(openapi_document())

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        if not MODEL_NAME.fullmatch(name):
            return web.Response(
                text=render_error("Bad model name", name[:140]),
                status=400,
                content_type="text/html",
            )
        try:
            result = await service.current_result(name)
        except UnknownModelError:
            return web.Response(
                text=render_error("Unknown model", name), status=404, content_type="text/html"
            )
        html = await service.in_worker(render_page, result)
        # A result stored before surrogates were refused must not turn the page into a 500.
        body = html.encode("utf-8", "replace")
        return web.Response(body=body, content_type="text/html", charset="utf-8")

    known = [
        ("POST", "/api/v1/drift/evaluate", guarded(trimmed(evaluate))),
        ("GET", "/api/v1/models", guarded(list_models)),
        ("PUT", "/api/v1/models/{model}/reference", guarded(trimmed(put_reference))),
        ("POST", "/api/v1/models/{model}/observations", guarded(trimmed(post_observations))),
        ("POST", "/api/v1/models/{model}/labels", guarded(trimmed(post_labels))),
        ("GET", "/api/v1/models/{model}/drift", guarded(get_drift)),
        ("DELETE", "/api/v1/models/{model}", guarded(delete_model)),
        ("GET", "/api/v1/openapi.json", guarded(openapi)),
    ]
    shapes = [
        (method, re.compile(re.escape(path).replace(re.escape("{model}"), "[^/]*") + "$"))
        for method, path, _ in known
    ]

    async def fallback(request: web.Request) -> web.StreamResponse:
        # Under /api/v1 even a wrong path or method answers JSON (an empty model name too).
        allowed = sorted({m for m, shape in shapes if shape.match(request.path)})
        if allowed:
            return error_response(
                405,
                f"method {request.method} not allowed here (allowed: {', '.join(allowed)})",
                Allow=", ".join(allowed),
            )
        return error_response(404, f"no drift API endpoint at {request.path}")

    return [
        *(web.route(method, path, handler) for method, path, handler in known),
        web.get("/drift/{model}", guarded(page), allow_head=False),
        web.route("*", r"/api/v1/{tail:[\s\S]*}", fallback),
    ]
