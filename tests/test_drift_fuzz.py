"""Schema-driven fuzz of the drift API: requests drawn from the OpenAPI document never get a 5xx.

Bodies come from each operation's request schema (valid shapes with random content), from
arbitrary JSON, and from arbitrary bytes under every content type; model names from the
documented pattern and from arbitrary text. The server is the test runner process, so the
whole HTTP path (aiohttp parsing, limits, worker processes, SQLite) is exercised; table bodies
come as CSV, Parquet and Arrow IPC stream, valid, truncated or overwritten. Bounded:
derandomized, a fixed number of examples per operation.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

RUNNER = Path(__file__).with_name("drift_runner.py")
TOKEN = "fuzz-token"
EXAMPLES = int(os.environ.get("DRIFT_FUZZ_EXAMPLES", "250"))


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def from_schema(
    doc: dict[str, Any], schema: dict[str, Any], depth: int = 0
) -> st.SearchStrategy[Any]:
    """A strategy for JSON values valid against the subset of JSON Schema our document uses."""
    schema = resolve(doc, schema)
    if "oneOf" in schema:
        return st.one_of([from_schema(doc, s, depth) for s in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kinds = schema.get("type") or ["null", "boolean", "number", "string", "array", "object"]
    if isinstance(kinds, str):
        kinds = [kinds]
    if depth > 3:
        kinds = [k for k in kinds if k not in ("array", "object")] or ["null"]
    options = []
    for kind in kinds:
        if kind == "null":
            options.append(st.none())
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "integer":
            options.append(st.integers(-(2**70), 2**70))
        elif kind == "number":
            lo, hi = schema.get("minimum"), schema.get("maximum")
            options.append(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
            options.append(st.integers(int(lo) if lo is not None else -(2**66),
                                       int(hi) if hi is not None else 2**66))  # fmt: skip
        elif kind == "string":
            if "pattern" in schema:
                options.append(st.from_regex(schema["pattern"], fullmatch=True))
            else:
                options.append(st.text(max_size=12))
        elif kind == "array":
            items = from_schema(doc, schema.get("items", {}), depth + 1)
            options.append(
                st.lists(
                    items, min_size=schema.get("minItems", 0), max_size=schema.get("maxItems", 12)
                )
            )
        elif kind == "object":
            options.append(_object(doc, schema, depth))
    return st.one_of(options)


def _object(doc: dict[str, Any], schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    props = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fixed = st.fixed_dictionaries(
        {k: from_schema(doc, v, depth + 1) for k, v in props.items() if k in required},
        optional={k: from_schema(doc, v, depth + 1) for k, v in props.items() if k not in required},
    )
    extra = schema.get("additionalProperties", {})
    if extra is False:
        return fixed
    keys = st.text(min_size=1, max_size=8).filter(lambda k: k not in props)
    more = st.dictionaries(keys, from_schema(doc, extra if extra else {}, depth + 1), max_size=4)
    return st.builds(lambda a, b: {**b, **a}, fixed, more)


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, int, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    token = tmp / "token"
    token.write_text(TOKEN)
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), "--state-dir", str(tmp / "state"), "--token-file",
         str(token), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(b"LISTENING "), line
    port = int(line.split()[1])
    status, doc = request(port, "GET", "/api/v1/openapi.json")
    assert status == 200
    # A model that exists, so that writes get past the 404.
    rows = [
        {"a": i * 0.5, "c": "xyz"[i % 3], "prediction": i % 2, "confidence": 0.5} for i in range(40)
    ]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    body = json.dumps({"rows": rows}).encode()
    status, _ = request(port, "PUT", "/api/v1/models/m1/reference", body, headers)
    assert status == 201
    yield "127.0.0.1", port, doc
    proc.kill()
    _, err = proc.communicate(timeout=10)
    assert b"Traceback" not in err, err.decode()[-3000:]


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type", "")
    finally:
        conn.close()
    if ctype.startswith("application/json"):
        return resp.status, json.loads(data)
    return resp.status, data


def operations() -> list[tuple[str, str]]:
    from node_exporter_ml.drift.openapi import openapi_document

    doc = openapi_document()
    return [(path, method) for path, ops in doc["paths"].items() for method in ops]


def multipart(parts: list[tuple[str, bytes]], boundary: str = "fuzzb") -> bytes:
    """A multipart body; every part says text/csv (the server sniffs Parquet and Arrow)."""
    out = b""
    for name, data in parts:
        out += (
            (
                f"--{boundary}\r\nContent-Disposition: form-data; "
                f'name="{name}"; filename="{name}.csv"\r\nContent-Type: text/csv\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


CSV_TEXT = st.lists(
    st.lists(
        st.sampled_from(["", "1", "2.5", "x", "true", "NaN", "inf", '"a,b"', "-3"]),
        min_size=1,
        max_size=4,
    ),
    min_size=0,
    max_size=6,
).map(lambda rows: "\n".join(",".join(r) for r in rows).encode())


PARQUET, ARROW = "application/vnd.apache.parquet", "application/vnd.apache.arrow.stream"


def _table_bytes(columns: dict[str, list[Any]], fmt: str) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    sink = io.BytesIO()
    if fmt == PARQUET:
        pq.write_table(table, sink)
    else:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()


def _mangle(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """`data` truncated at `cut` (0: kept whole) with bytes overwritten at `flips`."""
    out = bytearray(data[:cut] if cut else data)
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


COLUMN = st.integers(1, 6).flatmap(
    lambda n: st.one_of(
        st.lists(st.integers(-(2**63), 2**63 - 1) | st.none(), min_size=n, max_size=n),
        st.lists(st.floats() | st.none(), min_size=n, max_size=n),
        st.lists(st.text(max_size=5) | st.none(), min_size=n, max_size=n),
        st.lists(st.booleans() | st.none(), min_size=n, max_size=n),
        st.lists(st.lists(st.integers(0, 9), max_size=2), min_size=n, max_size=n),  # nested
    )
)
TABLES = st.tuples(
    st.sampled_from([PARQUET, ARROW]),
    st.integers(1, 4).flatmap(
        lambda k: st.lists(COLUMN, min_size=k, max_size=k).filter(
            lambda cols: len({len(c) for c in cols}) == 1
        )
    ),
    st.integers(0, 400),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
).map(
    lambda t: (
        t[0],
        _mangle(_table_bytes({f"c{i}": col for i, col in enumerate(t[1])}, t[0]), t[2], t[3]),
    )
)
"""Parquet and Arrow bodies: valid, truncated or with bytes overwritten (nested types too)."""


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("path", "method"), operations())
def test_no_5xx(server, path, method):
    _, port, doc = server
    op = doc["paths"][path][method]
    content = (op.get("requestBody") or {}).get("content", {})
    json_schema = content.get("application/json", {}).get("schema")
    body_json = from_schema(doc, json_schema) if json_schema else ANY_JSON
    names = st.one_of(
        st.just("m1"),
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
        st.text(max_size=140),
    )
    if method == "delete":  # keep the seeded model for the other operations
        names = names.filter(lambda name: name != "m1")
    bodies = st.one_of(
        body_json.map(lambda v: ("application/json", json.dumps(v).encode())),
        ANY_JSON.map(lambda v: ("application/json", json.dumps(v).encode())),
        st.binary(max_size=64).map(lambda b: ("application/json", b)),
        CSV_TEXT.map(lambda b: ("text/csv", b)),
        st.lists(st.tuples(st.sampled_from(["reference", "current", "options", "x"]), CSV_TEXT),
                 max_size=3).map(lambda p: ("multipart/form-data; boundary=fuzzb", multipart(p))),
        st.binary(max_size=64).map(lambda b: ("multipart/form-data; boundary=fuzzb", b)),
        st.tuples(st.sampled_from(["text/plain", "application/x-www-form-urlencoded", ""]),
                  st.binary(max_size=32)),
        TABLES,
        st.tuples(st.sampled_from([PARQUET, ARROW]), st.binary(max_size=64)),
        st.lists(st.tuples(st.sampled_from(["reference", "current"]), TABLES.map(lambda t: t[1])),
                 max_size=2).map(lambda p: ("multipart/form-data; boundary=fuzzb", multipart(p))),
    )  # fmt: skip

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=os.environ.get("DRIFT_FUZZ_RANDOM") is None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(model=names, body=bodies, authorized=st.booleans() | st.just(True))
    def run(model: str, body: tuple[str, bytes], authorized: bool) -> None:
        url = path.replace("{model}", urllib.parse.quote(model, safe=""))
        headers = {"Authorization": f"Bearer {TOKEN}"} if authorized else {}
        payload = None
        if method in ("post", "put"):
            ctype, payload = body
            if ctype:
                headers["Content-Type"] = ctype
        status, answer = request(port, method.upper(), url, payload, headers)
        assert status < 500, (method, url, headers, payload, answer)
        if status >= 400 and url.startswith("/api/"):
            assert isinstance(answer, dict), answer
            assert isinstance(answer.get("error"), str), answer
            assert answer["error"], answer

    run()
    # The page of a model fed by the fuzzing still renders.
    status, _ = request(port, "GET", "/drift/m1")
    assert status == 200
