"""Columnar uploads: Parquet and Arrow IPC stream read as their CSV twin, bad bytes refused."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import FormData
from hypothesis import given, settings
from hypothesis import strategies as st

from node_exporter_ml.drift import evaluate
from node_exporter_ml.drift.bodies import Limits
from node_exporter_ml.drift.engine.columnar import (
    ARROW_STREAM,
    CSV,
    PARQUET,
    Blob,
    Upload,
    loads_columnar,
    read_table,
    sniff,
)
from node_exporter_ml.drift.engine.errors import DataError
from node_exporter_ml.drift.engine.table import Column, Table
from node_exporter_ml.drift.store import Window
from tests.drift_helpers import app_for, running_service

LIMITS = Limits(max_body_bytes=4 * 2**20, max_rows=5000, max_columns=20)


def frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Every column kind the engine types: floats (with missing), ints, text, bools, categories."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(size=n).round(6)
    amount[::37] = np.nan
    return pd.DataFrame(
        {
            "amount": amount,
            "items": rng.integers(1, 30, size=n),
            "country": rng.choice(["de", "fr", "us", "jp"], size=n),
            "flag": rng.random(size=n) > 0.3,
            "note": [None if i % 11 == 0 else f"n{i % 5}" for i in range(n)],
        }
    )


def parquet_of(df: pd.DataFrame, **kw: Any) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, **kw)
    return buf.getvalue()


def arrow_of(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=128)
    return sink.getvalue()


def csv_of(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()


def assert_same_table(got: Table, want: Table) -> None:
    assert list(got.columns) == list(want.columns)
    assert got.n_rows == want.n_rows
    for name, col in want.columns.items():
        other = got.columns[name]
        assert other.dtype == col.dtype, name
        if col.dtype == "float":
            np.testing.assert_array_equal(other.values, col.values)
        else:
            assert other.values.tolist() == col.values.tolist(), name


def test_parquet_and_arrow_read_as_their_csv_twin():
    df = frame()
    twin = read_table(Upload(csv_of(df), CSV))
    assert {n: c.dtype for n, c in twin.columns.items()} == {
        "amount": "float", "items": "int", "country": "str", "flag": "bool", "note": "str",
    }  # fmt: skip
    assert_same_table(read_table(Upload(parquet_of(df), PARQUET)), twin)
    assert_same_table(read_table(Upload(parquet_of(df, index=True), PARQUET)), twin)
    stream = arrow_of(pa.Table.from_pandas(df, preserve_index=False))
    assert_same_table(read_table(Upload(stream, ARROW_STREAM)), twin)


def test_pandas_index_and_categories_as_pandas_reads_them():
    df = frame(200).set_index("items")  # df.to_parquet() keeps a named index: not a feature
    df["country"] = df["country"].astype("category")
    table = read_table(Upload(parquet_of(df), PARQUET))
    assert list(table.columns) == ["amount", "country", "flag", "note"]
    assert table.columns["country"].dtype == "category"
    # A nullable integer column (Parquet INT64 with nulls) is float with NaN, as in pandas.
    ints = pa.table({"n": pa.array([1, None, 3], pa.int64())})
    column = read_table(Upload(arrow_of(ints), ARROW_STREAM)).columns["n"]
    assert column.dtype == "float"
    assert np.isnan(column.values[1])


def test_sniffing_multipart_parts():
    df = frame(20)
    assert sniff(parquet_of(df)) == PARQUET
    assert sniff(arrow_of(pa.Table.from_pandas(df))) == ARROW_STREAM
    assert sniff(csv_of(df)) == CSV
    assert sniff(b"PAR1,b\n1,2\n") == CSV


def _nested() -> dict[str, pa.Table]:
    return {
        "list": pa.table({"a": [1, 2], "l": [[1, 2], [3]]}),
        "struct": pa.table({"a": [1, 2], "s": [{"x": 1}, {"x": 2}]}),
        "map": pa.table({"m": pa.array([[("k", 1)], []], pa.map_(pa.string(), pa.int64()))}),
        "binary": pa.table({"b": pa.array([b"\x00", b"\x01"], pa.binary())}),
        "decimal": pa.table({"d": pa.array([1, 2], pa.decimal128(10, 2))}),
        "date": pa.table({"d": pa.array([1, 2], pa.date32())}),
    }


@pytest.mark.parametrize("kind", sorted(_nested()))
def test_unsupported_column_types_are_named(kind: str):
    table = _nested()[kind]
    bad = table.schema[-1]
    for upload in (Upload(parquet_of(table.to_pandas()) if kind == "list" else _pq(table), PARQUET),
                   Upload(arrow_of(table), ARROW_STREAM)):  # fmt: skip
        with pytest.raises(DataError, match=f"column '{bad.name}' has type .* not supported"):
            read_table(upload)


def _pq(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _bad_bytes() -> dict[str, tuple[Upload, str]]:
    df = frame(300)
    good_pq = parquet_of(df)
    good_arrow = arrow_of(pa.Table.from_pandas(df))
    footer = bytearray(good_pq)
    footer[-40:-8] = b"\xff" * 32  # the Thrift footer: schema and offsets
    return {
        "truncated Parquet": (Upload(good_pq[: len(good_pq) // 2], PARQUET), "Parquet: "),
        "Parquet footer only magic": (Upload(b"PAR1" + b"\0" * 16 + b"PAR1", PARQUET), "Parquet"),
        "corrupt Parquet footer": (Upload(bytes(footer), PARQUET), "Parquet: "),
        "CSV sent as Parquet": (Upload(csv_of(df), PARQUET), "Parquet: "),
        "empty Parquet": (Upload(b"", PARQUET), "Parquet: "),
        "truncated Arrow": (Upload(good_arrow[: len(good_arrow) // 2], ARROW_STREAM), "Arrow"),
        "Arrow header only": (Upload(good_arrow[:16], ARROW_STREAM), "Arrow stream: "),
        "Parquet sent as Arrow": (Upload(good_pq, ARROW_STREAM), "Arrow stream: "),
        "ragged CSV": (Upload(b"a,b\n1,2\n3,4,5\n", CSV), "CSV line 3: 3 fields, the header has 2"),
        "invalid UTF-8 CSV": (Upload(b"a,b\n1,\xc3\x28\n", CSV), "CSV is not UTF-8: byte 6"),
        "NUL in CSV": (Upload(b"a,b\n1,\x002\n", CSV), "CSV line 2: a NUL byte"),
        "unclosed quote": (Upload(b'a\n"x\n', CSV), "CSV line 2: a quoted field is not closed"),
        "repeated name": (Upload(b"a,a\n1,2\n", CSV), "names column 'a' twice"),
    }


@pytest.mark.parametrize("case", sorted(_bad_bytes()))
def test_bad_bytes_are_a_data_error(case: str):
    upload, message = _bad_bytes()[case]
    with pytest.raises(DataError) as err:
        read_table(upload)
    assert message in str(err.value)


def test_limits_are_checked_before_decoding():
    df = pd.DataFrame({"a": np.zeros(200_000), "b": np.ones(200_000)})
    bomb = parquet_of(df, compression="zstd")
    assert len(bomb) < 20_000
    with pytest.raises(DataError, match="too many bytes once decoded"):
        read_table(Upload(bomb, PARQUET), max_bytes=len(bomb))
    with pytest.raises(DataError, match="too many rows: 200000"):
        read_table(Upload(bomb, PARQUET), max_rows=1000)
    with pytest.raises(DataError, match="too many columns: 2"):
        read_table(Upload(arrow_of(pa.Table.from_pandas(df)), ARROW_STREAM), max_columns=1)
    stream = arrow_of(pa.Table.from_pandas(df.head(3000)))
    with pytest.raises(DataError, match="too many rows"):
        read_table(Upload(stream, ARROW_STREAM), max_rows=1000)


# --- through the API -----------------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client, tmp_path: Path):
    state = str(tmp_path / "state")
    async with running_service(state, interval=3600, window=Window(rows=500), limits=LIMITS) as svc:
        yield await aiohttp_client(app_for(svc))


def _form(**files: bytes) -> FormData:
    form = FormData()
    for name, data in files.items():
        # curl -F name=@file sends application/octet-stream: the part is sniffed.
        form.add_field(name, data, filename=f"{name}.bin", content_type="application/octet-stream")
    return form


async def test_evaluate_parquet_and_arrow_equal_their_csv_twin(client):
    ref, cur = frame(800, seed=1), frame(700, seed=2)
    cur["amount"] += 0.4
    by_csv = await client.post("/api/v1/drift/evaluate", data=_form(
        reference=csv_of(ref), current=csv_of(cur)))  # fmt: skip
    assert by_csv.status == 200, await by_csv.text()
    want = await by_csv.json()
    assert want["columns"]["amount"]["drift_detected"] is True
    for reference, current in (
        (parquet_of(ref), parquet_of(cur)),
        (arrow_of(pa.Table.from_pandas(ref)), arrow_of(pa.Table.from_pandas(cur))),
        (parquet_of(ref), csv_of(cur)),
    ):
        resp = await client.post("/api/v1/drift/evaluate", data=_form(
            reference=reference, current=current))  # fmt: skip
        assert resp.status == 200, await resp.text()
        assert await resp.json() == want
    expected = await asyncio.to_thread(
        lambda: evaluate(Table.from_csv(csv_of(ref)), Table.from_csv(csv_of(cur)))
    )
    assert want["dataset"] == json.loads(json.dumps(expected["dataset"]))


async def test_reference_and_observations_as_parquet_and_arrow(client):
    ref = frame(600)
    resp = await client.put("/api/v1/models/p/reference", data=parquet_of(ref),
                            headers={"Content-Type": PARQUET})  # fmt: skip
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["rows"] == 600
    resp = await client.put("/api/v1/models/c/reference", data=csv_of(ref),
                            headers={"Content-Type": CSV})  # fmt: skip
    assert resp.status == 201
    cur = frame(300, seed=4)
    for model in ("p", "c"):
        for body, media in (
            (parquet_of(cur.head(150)), PARQUET),
            (arrow_of(pa.Table.from_pandas(cur.tail(150))), ARROW_STREAM),
        ):
            resp = await client.post(f"/api/v1/models/{model}/observations", data=body,
                                     headers={"Content-Type": media})  # fmt: skip
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["accepted"] == 150
    reports = [await (await client.get(f"/api/v1/models/{m}/drift")).json() for m in ("p", "c")]
    assert reports[0]["window"]["rows"] == 300
    assert reports[0]["columns"] == reports[1]["columns"]
    assert reports[0]["dataset"] == reports[1]["dataset"]


@pytest.mark.parametrize("case", sorted(_bad_bytes()))
async def test_bad_uploads_are_400_and_store_nothing(client, case):
    upload, message = _bad_bytes()[case]
    resp = await client.put("/api/v1/models/m/reference", data=upload.data,
                            headers={"Content-Type": upload.media})  # fmt: skip
    assert resp.status == 400
    assert message in (await resp.json())["error"]
    assert (await (await client.get("/api/v1/models")).json())["models"] == []


async def test_nested_parquet_in_a_multipart_part_is_400(client):
    nested = _pq(_nested()["struct"])
    resp = await client.post("/api/v1/drift/evaluate", data=_form(
        reference=nested, current=csv_of(frame(10))))  # fmt: skip
    assert resp.status == 400
    assert "reference: column 's' has type struct" in (await resp.json())["error"]


async def test_a_body_that_lies_about_its_length(client):
    body = parquet_of(frame(100))
    for declared in (len(body) + 1000, len(body) // 2):
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(
            b"PUT /api/v1/models/m/reference HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Type: {PARQUET}\r\nContent-Length: {declared}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        # Longer than sent: the body ends early (400 or the connection dropped); shorter: the
        # declared bytes are a truncated Parquet file (400), the rest a bad next request.
        if answer:
            assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert (await (await client.get("/api/v1/models")).json())["models"] == []
    assert (await client.get("/api/v1/openapi.json")).status == 200  # the agent is unaffected


# --- column-oriented JSON ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.just("columns"), inner, max_size=4)
    ),
    max_leaves=15,
)


def _plain(value: Any) -> Any:
    """Typed columns back to JSON values (NaN: None), other values as they are."""
    if isinstance(value, Column):
        return [None if v != v else v for v in value.values.tolist()]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values once typed: numbers by value, booleans apart from numbers."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return bool(a == b)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(JSON_VALUES, st.sampled_from([None, 1]))
def test_loads_columnar_decodes_as_json_loads(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert _same(_plain(loads_columnar(text.encode())), json.loads(text))


@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"a":1,}', b'{"columns": {"a": [1,2}}', b"[1] x", b'{"a" 1}', b"\xff"]
)
def test_loads_columnar_fails_as_json_loads(body: bytes) -> None:
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)) as ours:
        loads_columnar(body)
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)) as theirs:
        json.loads(body)
    assert str(ours.value) == str(theirs.value)


def test_columns_are_typed_while_decoding():
    body = {"reference": {"columns": {"x": [1, 2], "c": ["a", None], "bad": [1, {"o": 1}]}}}
    decoded = loads_columnar(json.dumps(body).encode())["reference"]["columns"]
    assert (decoded["x"].dtype, decoded["c"].dtype) == ("int", "str")
    assert decoded["bad"] == [1, {"o": 1}]  # left for the table to refuse, naming the side


def test_a_blob_is_handed_over_once():
    import pickle

    body = {"columns": {"x": [1.5, 2.5], "c": ["a", "b"]}}
    blob = Blob(bytearray(json.dumps(body).encode()))
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(blob, protocol=5, buffer_callback=buffers.append)
    assert len(blob) == 0  # the sender holds nothing once it is pickled
    assert len(buffers) == 1  # the bytes went out of band, not into the pickle
    assert len(head) < 100
    received = pickle.loads(head, buffers=[bytes(b.raw()) for b in buffers])
    assert isinstance(received, Blob)
    assert len(received) > 0
    decoded = loads_columnar(received)
    assert len(received) == 0  # taken by the parser, which dropped it once decoded
    assert decoded["columns"]["x"].values.tolist() == [1.5, 2.5]
    # Without out-of-band buffers the bytes go into the pickle.
    assert pickle.loads(pickle.dumps(Blob(b"[1]"), protocol=4)).take() == b"[1]"
