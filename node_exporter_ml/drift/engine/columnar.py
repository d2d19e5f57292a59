"""Columnar uploads (CSV, Parquet, Arrow IPC stream) read into typed tables, as pandas types them.

CSV goes through ``pandas.read_csv`` itself (the C engine, default options), so the column
types are by construction the ones Evidently sees; it was measured against ``pyarrow.csv``
(bench/README.md): pyarrow parses 2.8x faster but rounds some decimal strings to a different
float64 than pandas' default parser and types dates and overflowing integers otherwise. Parquet
and Arrow IPC streams go through pyarrow and ``Table.to_pandas``, which is how a pandas user
reads the same file (``pd.read_parquet``): nullable integers become float64 with NaN, dictionary
columns categories, pandas' own index columns come back as the index and are dropped.

Everything here is pure (bytes in, `Table` out) and runs in the drift worker process; pandas
and pyarrow are imported on first use.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, SupportsIndex

from node_exporter_ml.drift.engine.csvparse import first_repeat
from node_exporter_ml.drift.engine.errors import DataError
from node_exporter_ml.drift.engine.table import Table, column_from_values

if TYPE_CHECKING:
    import pyarrow as pa

CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
TABLE_MEDIA = (CSV, PARQUET, ARROW_STREAM)
"""Media types of table bodies and multipart parts, next to JSON."""

DECODED_FACTOR = 8
"""A Parquet or Arrow body may decode to at most this many times `max_bytes` (compression
bombs are refused before they are decoded)."""


@dataclass(frozen=True, slots=True)
class Upload:
    """The bytes of one uploaded table and their media type (one of `TABLE_MEDIA`).

    In the agent, `data` is the buffer the body was read into; in the worker, the bytes
    received (the buffer crosses out of band, uncopied).
    """

    data: bytes | bytearray
    media: str = CSV

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        # Out of band when the pickler takes buffers (the drift worker's pipe): no copy.
        import pickle

        if int(protocol) >= 5:
            return (Upload, (pickle.PickleBuffer(self.data), self.media))
        return (Upload, (self.data, self.media))


class Blob:
    """A request body handed over once: whoever takes it holds the only reference.

    The agent reads a body into one buffer and hands it to a worker wrapped in a blob; pickling
    it (protocol 5, the worker's pipe) sends the buffer out of band and empties the blob, so
    once the task is sent the agent holds nothing of the body. In the worker, the parser
    `take`s the bytes, so it can drop them once they are decoded (`loads_columnar`): the body
    and its decoded text are never held twice over by anyone else.
    """

    __slots__ = ("_data",)

    def __init__(self, data: bytes | bytearray) -> None:
        self._data: bytes | bytearray = data

    def take(self) -> bytes | bytearray:
        """The bytes, which this blob no longer holds (empty once taken)."""
        data, self._data = self._data, b""
        return data

    def __len__(self) -> int:
        return len(self._data)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        import pickle

        data = self.take()
        if int(protocol) >= 5:
            return (Blob, (pickle.PickleBuffer(data),))
        return (Blob, (bytes(data),))


def sniff(data: bytes | bytearray) -> str:
    """The media type of a multipart file by its magic bytes: Parquet, Arrow stream, else CSV.

    ``curl -F file=@x.parquet`` sends every part as application/octet-stream, so a part's own
    Content-Type is not trusted: a Parquet file starts and ends with ``PAR1``, an Arrow IPC
    stream starts with the continuation marker ``0xFFFFFFFF``; neither can start a UTF-8 CSV
    (a CSV header ``PAR1`` would need the same four bytes at its very end, too).
    """
    if len(data) >= 8 and data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        return PARQUET
    if data[:4] == b"\xff\xff\xff\xff":
        return ARROW_STREAM
    return CSV


def read_table(
    upload: Upload,
    *,
    max_rows: int | None = None,
    max_columns: int | None = None,
    max_bytes: int | None = None,
) -> Table:
    """A typed table from an upload of any of `TABLE_MEDIA`.

    `max_bytes` bounds what a compressed Parquet or Arrow body may decode to
    (`DECODED_FACTOR` times it).

    Raises:
        DataError: the bytes are not a readable table of that type, hold a column type the
            engine cannot evaluate, or pass a limit ("too many ..." messages).
    """
    if upload.media == CSV:
        return read_csv(upload.data, max_rows=max_rows, max_columns=max_columns)
    decoded = None if max_bytes is None else max_bytes * DECODED_FACTOR
    if upload.media == PARQUET:
        return read_parquet(upload.data, max_rows=max_rows, max_columns=max_columns,
                            max_decoded=decoded)  # fmt: skip
    if upload.media == ARROW_STREAM:
        return read_arrow_stream(upload.data, max_rows=max_rows, max_columns=max_columns,
                                 max_decoded=decoded)  # fmt: skip
    raise DataError(f"unsupported table type {upload.media!r} (expected {', '.join(TABLE_MEDIA)})")


# --- CSV -----------------------------------------------------------------------------------


def read_csv(
    data: bytes | bytearray | str, *, max_rows: int | None = None, max_columns: int | None = None
) -> Table:
    """A table from CSV with a header row (`Table.from_csv`, see `drift.engine.csvparse`)."""
    return Table.from_csv(data, max_rows=max_rows, max_columns=max_columns)


# --- Parquet and Arrow ---------------------------------------------------------------------


def read_parquet(
    data: bytes | bytearray,
    *,
    max_rows: int | None = None,
    max_columns: int | None = None,
    max_decoded: int | None = None,
) -> Table:
    """A table from a Parquet file's bytes (as ``pandas.read_parquet`` reads it).

    Raises:
        DataError: not Parquet, truncated or corrupt, unsupported column types, limits.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _arrow_errors("Parquet"):
        parquet = pq.ParquetFile(pa.BufferReader(data))
        meta = parquet.metadata
        _check_schema(parquet.schema_arrow, max_columns)
        _check_rows(meta.num_rows, max_rows)
        # Run-length and dictionary encoding make the pages' own sizes tiny for a constant
        # column: count at least 8 bytes a cell, what numpy will hold.
        encoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        _check_decoded(max(encoded, meta.num_rows * meta.num_columns * 8), max_decoded)
        table = parquet.read(use_pandas_metadata=True)
    return from_arrow(table)


def read_arrow_stream(
    data: bytes | bytearray,
    *,
    max_rows: int | None = None,
    max_columns: int | None = None,
    max_decoded: int | None = None,
) -> Table:
    """A table from an Arrow IPC stream (``pyarrow.ipc.new_stream``; not the Feather file format).

    Raises:
        DataError: not an Arrow stream, truncated or corrupt, unsupported types, limits.
    """
    import pyarrow as pa

    with _arrow_errors("Arrow stream"):
        reader = pa.ipc.open_stream(pa.BufferReader(data))
        schema = reader.schema
        _check_schema(schema, max_columns)
        batches = []
        rows = decoded = 0
        for batch in reader:
            batch.validate(full=True)  # offsets and lengths checked before anything reads them
            rows += batch.num_rows
            decoded += batch.nbytes
            _check_rows(rows, max_rows)
            _check_decoded(decoded, max_decoded)
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema=schema)
    return from_arrow(table)


def from_arrow(table: pa.Table) -> Table:
    """A typed table from an Arrow table, through ``to_pandas`` as pandas users read it.

    Raises:
        DataError: a value pandas cannot hold (a timestamp out of its range).
    """
    import pyarrow as pa

    table = table.cast(_naive_timestamps(table.schema))
    try:
        frame = table.to_pandas()
    except (pa.ArrowException, ValueError, OverflowError) as err:
        raise DataError(f"cannot read as pandas would: {_arrow_message(err)}") from None
    return Table.from_dataframe(frame)


@contextlib.contextmanager
def _arrow_errors(what: str) -> Iterator[None]:
    """Errors of pyarrow on bad bytes as a DataError naming the format (ours pass through)."""
    import pyarrow as pa

    try:
        yield
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError, IndexError) as err:
        raise DataError(f"{what}: {_arrow_message(err)}") from None


def _check_decoded(decoded: int, limit: int | None) -> None:
    if limit is not None and decoded > limit:
        raise DataError(f"too many bytes once decoded: {decoded}, the limit is {limit}")


def _check_rows(rows: int, limit: int | None) -> None:
    if limit is not None and rows > limit:
        raise DataError(f"too many rows: {rows}, the limit is {limit}")


def _check_schema(schema: pa.Schema, max_columns: int | None) -> None:
    """Only flat columns the engine can type; unique names; at most `max_columns`."""
    import pyarrow.types as t

    names = [f.name for f in schema]
    if max_columns is not None and len(names) > max_columns:
        raise DataError(f"too many columns: {len(names)}, the limit is {max_columns}")
    repeated = first_repeat(names)
    if repeated is not None:
        raise DataError(f"column {repeated!r} appears twice")
    for field in schema:
        kind = field.type
        if t.is_dictionary(kind):
            kind = kind.value_type  # a pandas category; its values must be flat
        if not (
            t.is_integer(kind)
            or t.is_floating(kind)
            or t.is_boolean(kind)
            or t.is_string(kind)
            or t.is_large_string(kind)
            or t.is_null(kind)
            or t.is_timestamp(kind)
        ):
            raise DataError(
                f"column {field.name!r} has type {field.type}, which is not supported "
                "(numbers, strings, booleans, categories and timestamps are)"
            )


def _naive_timestamps(schema: pa.Schema) -> pa.Schema:
    """Time-zoned timestamps as UTC without a zone (datetime columns are not evaluated)."""
    import pyarrow as pa
    import pyarrow.types as t

    fields = [
        f.with_type(pa.timestamp(f.type.unit)) if t.is_timestamp(f.type) and f.type.tz else f
        for f in schema
    ]
    return pa.schema(fields, metadata=schema.metadata)


def _arrow_message(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


# --- column-oriented JSON ------------------------------------------------------------------


def loads_columnar(body: bytes | bytearray | str | Blob) -> Any:
    """``json.loads(body)``, but each ``"columns": {name: [values]}`` list is typed as it is read.

    The lists of a column-oriented table (at the top level, or one level down as in
    ``{"reference": {"columns": ...}}``) become `Column` objects one at a time, so only one
    column's Python objects exist at once instead of the whole body's (10 million JSON values
    were 1.2 GiB for a 169 MiB body). Everything else is decoded as json.loads decodes it.

    A `Blob` is taken, and its bytes dropped once decoded: only the text is held while the
    columns are typed.

    Raises:
        json.JSONDecodeError, UnicodeDecodeError, RecursionError: as json.loads.
    """
    # As json.loads: UTF-8, -16 or -32 (detected), lone surrogates kept.
    if isinstance(body, str):
        text = body
    else:
        # A blob's bytes are referenced only from _decoded's argument: freed as it returns.
        text = _decoded(body.take() if isinstance(body, Blob) else body)
    decoder = json.JSONDecoder()
    value, end = _value(decoder, text, _skip(text, 0), depth=0)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _decoded(data: bytes | bytearray) -> str:
    return data.decode(json.detect_encoding(data), "surrogatepass")


_WS = re.compile(r"[ \t\n\r]*")


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


Member = Callable[[str, int], tuple[Any, int]]
"""Decodes the value of an object's member: (key, position of the value) -> (value, end)."""


def _value(decoder: json.JSONDecoder, text: str, pos: int, depth: int) -> tuple[Any, int]:
    """A JSON value at `pos`; objects at depth 0 and 1 are walked to find "columns"."""
    if depth > 1 or text[pos : pos + 1] != "{":
        return decoder.raw_decode(text, pos)

    def member(key: str, at: int) -> tuple[Any, int]:
        if key == "columns" and text[at : at + 1] == "{":
            return _object_of(text, at, column)
        return _value(decoder, text, at, depth + 1)

    def column(name: str, at: int) -> tuple[Any, int]:
        values, end = decoder.raw_decode(text, at)
        if isinstance(values, list):  # typed now: its Python objects go at once
            with contextlib.suppress(DataError):  # kept: the table reports it, naming the side
                return column_from_values(name, values), end
        return values, end

    return _object_of(text, pos, member)


def _object_of(text: str, pos: int, member: Member) -> tuple[dict[str, Any], int]:
    """The JSON object at `pos` (its ``{``), each member's value decoded by `member`."""
    out: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text[pos : pos + 1] == "}":
        return out, pos + 1
    while True:
        if text[pos : pos + 1] != '"':
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, pos
            )
        key, pos = scanstring(text, pos + 1)
        pos = _skip(text, pos)
        if text[pos : pos + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
        out[key], pos = member(key, _skip(text, pos + 1))
        pos = _skip(text, pos)
        if text[pos : pos + 1] == "}":
            return out, pos + 1
        if text[pos : pos + 1] != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _skip(text, pos + 1)
