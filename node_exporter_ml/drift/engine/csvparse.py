"""CSV bytes read into a pandas DataFrame by ``pandas.read_csv`` itself, with our checks.

Pure (bytes in, DataFrame out); `Table.from_csv` types the frame. pandas is imported on first
use. See `drift.engine.columnar` for why pandas and not pyarrow reads CSV.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterable
from typing import Any

from node_exporter_ml.drift.engine.errors import DataError

_EXPECTED_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_EOF_IN_STRING = re.compile(r"EOF inside string starting at row (\d+)")


def parse_csv(
    data: bytes | bytearray | str, *, max_rows: int | None = None, max_columns: int | None = None
) -> Any:
    """A DataFrame from CSV with a header row, read by ``pandas.read_csv`` with its defaults.

    Beyond pandas: a row longer than the header, a repeated column name and a NUL byte are
    errors (pandas would drop data, rename the column or read the cell as missing).

    Raises:
        DataError: undecodable bytes, a malformed or too long row, duplicate column names,
            too many rows or columns.
    """
    import pandas as pd

    raw = data.encode() if isinstance(data, str) else bytes(data)
    if b"\x00" in raw:
        line = raw.count(b"\n", 0, raw.index(b"\x00")) + 1
        raise DataError(f"CSV line {line}: a NUL byte (is this a CSV file?)")
    try:
        if not raw.isascii():  # ASCII is UTF-8: no decoded copy of the whole file to check it
            raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"CSV is not UTF-8: byte {err.start} is invalid") from None
    header = _csv_header(raw)
    if max_columns is not None and len(header) > max_columns:
        raise DataError(f"too many columns: {len(header)}, the limit is {max_columns}")
    repeated = first_repeat(header)
    if repeated is not None:
        raise DataError(f"CSV header names column {repeated!r} twice")
    try:
        with warnings.catch_warnings():
            # Rows longer than the header: pandas warns and drops the extra fields.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # Mixed types across pandas' internal chunks: pandas' own result, kept as is.
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            frame = pd.read_csv(
                io.BytesIO(raw),
                index_col=False,
                nrows=None if max_rows is None else max_rows + 1,
            )
    except pd.errors.ParserWarning:
        raise DataError(_long_row(raw, len(header))) from None
    except pd.errors.EmptyDataError:
        raise DataError("CSV is empty: a header row is needed") from None
    except (pd.errors.ParserError, ValueError, OverflowError) as err:
        raise DataError(_csv_error(str(err))) from None
    if max_rows is not None and len(frame) > max_rows:
        raise DataError(f"too many rows: more than the limit of {max_rows}")
    return frame


def _csv_header(raw: bytes) -> list[str]:
    """The header row's names as written (pandas renames repeats and blanks)."""
    import pandas as pd

    try:
        head = pd.read_csv(
            io.BytesIO(raw), header=None, nrows=1, dtype=str, keep_default_na=False,
            index_col=False, skip_blank_lines=True,
        )  # fmt: skip
    except pd.errors.EmptyDataError:
        raise DataError("CSV is empty: a header row is needed") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise DataError(_csv_error(str(err))) from None
    if head.empty:
        raise DataError("CSV is empty: a header row is needed")
    return [n if n != "" else f"Unnamed: {i}" for i, n in enumerate(head.iloc[0].tolist())]


def _long_row(raw: bytes, width: int) -> str:
    """Where the first row longer than the header is (pandas only warns, without a line)."""
    import csv

    reader = csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""))
    for row in reader:
        if len(row) > width:
            return f"CSV line {reader.line_num}: {len(row)} fields, the header has {width}"
    return f"CSV: rows have more fields than the header's {width}"


def _csv_error(text: str) -> str:
    """Pandas' tokenizer message in our words (line numbers count the header as line 1)."""
    if m := _EXPECTED_FIELDS.search(text):
        want, line, got = m.groups()
        return f"CSV line {line}: {got} fields, the header has {want}"
    if m := _EOF_IN_STRING.search(text):
        return f"CSV line {int(m.group(1)) + 1}: a quoted field is not closed"
    detail = text.split("C error:", 1)[-1].strip().splitlines()
    return f"CSV line ?: {detail[0] if detail else 'malformed'}"


def first_repeat(names: Iterable[str]) -> str | None:
    """The first name given twice, or None."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None
