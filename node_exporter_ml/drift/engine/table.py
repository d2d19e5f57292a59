"""Typed column tables for the drift engine, typed as pandas would type them.

A `Table` is an ordered mapping of column name to `Column`, every column a numpy array of the
same length. Its constructors read the shapes the drift API accepts (column-oriented JSON,
row-oriented JSON, CSV bytes) and a pandas DataFrame when one is passed in-process; each types
its cells as pandas would (``pd.DataFrame(...)`` for JSON values; CSV is read by ``pd.read_csv``
itself, see `drift.engine.csvparse`), so that column types, and therefore the drift tests
chosen, are the ones Evidently would see.

numpy and pandas are imported on first use only: importing this module keeps the agent small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from node_exporter_ml.drift.engine.csvparse import parse_csv
from node_exporter_ml.drift.engine.errors import DataError

if TYPE_CHECKING:
    from numpy.typing import NDArray

Dtype = Literal["int", "uint", "float", "bool", "str", "category", "object", "datetime", "other"]
"""The pandas dtype family of a column.

``int`` (int64, never missing), ``uint`` (uint64), ``float`` (float64, NaN for missing), ``bool``
(never missing), ``str`` (object array of str, None for missing), ``category`` (a pandas
categorical, values as objects), ``object`` (anything else, None for missing: a bool column with
missing values, mixed types), ``datetime`` and ``other`` (not evaluated).
"""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1

_JSON_SCALARS: frozenset[type] = frozenset({type(None), bool, int, float, str})


@dataclass(frozen=True, eq=False, slots=True)
class Column:
    """One column: its name, pandas dtype family and values (a 1-d numpy array)."""

    name: str
    dtype: Dtype
    values: NDArray[Any]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def missing_mask(self) -> NDArray[Any]:
        """True where the value is missing (NaN for float columns, None for object columns)."""
        import numpy as np

        mask: NDArray[Any]
        if self.dtype == "float":
            mask = np.isnan(self.values)
        elif self.values.dtype == object:
            mask = none_mask(self.values)  # missing values are None in object columns
        else:
            mask = np.zeros(len(self), dtype=bool)
        return mask

    @property
    def n_missing(self) -> int:
        """How many values are missing."""
        return int(self.missing_mask().sum())

    def cleaned(self) -> NDArray[Any]:
        """The values with missing ones and +-inf dropped, as Evidently cleans before any test."""
        import numpy as np

        kept: NDArray[Any]
        if self.dtype == "float":
            finite = np.isfinite(self.values)
            kept = self.values if finite.all() else self.values[finite]
            return kept
        if self.dtype == "str":  # strings and None only
            kept = self.values[~none_mask(self.values)]
            return kept
        if self.values.dtype == object:
            keep = np.fromiter(
                (
                    v is not None and not (isinstance(v, float) and not math.isfinite(v))
                    for v in self.values
                ),
                dtype=bool,
                count=len(self),
            )
            kept = self.values[keep]
            return kept
        return self.values


@dataclass(frozen=True, eq=False, slots=True)
class Table:
    """Columns of equal length, in order."""

    columns: dict[str, Column]
    n_rows: int

    @classmethod
    def from_columns(
        cls,
        data: Mapping[str, Any],
        *,
        max_rows: int | None = None,
        max_columns: int | None = None,
    ) -> Table:
        """A table from a mapping of column name to a list (JSON values) or a numpy array.

        Raises:
            DataError: columns of unequal length, a value that is not a JSON scalar, too many
                rows or columns.
        """
        if not isinstance(data, Mapping):
            raise DataError("columns must be an object mapping column names to lists of values")
        _check_limit("columns", len(data), max_columns)
        columns: dict[str, Column] = {}
        n_rows: int | None = None
        for name, values in data.items():
            if not isinstance(name, str):
                raise DataError(f"column name {name!r} is not a string")
            column = column_from_values(name, values)
            if n_rows is None:
                n_rows = len(column)
                _check_limit("rows", n_rows, max_rows)
            elif len(column) != n_rows:
                first = next(iter(columns))
                raise DataError(
                    f"column {name!r} has {len(column)} values but column {first!r} has {n_rows}"
                )
            columns[name] = column
        return cls(columns, n_rows or 0)

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Mapping[str, Any]],
        *,
        max_rows: int | None = None,
        max_columns: int | None = None,
    ) -> Table:
        """A table from row objects; a key missing from a row is a missing value there.

        Columns are ordered by first appearance, as ``pd.DataFrame(rows)`` orders them.

        Raises:
            DataError: a row that is not an object, too many rows or columns, bad values.
        """
        if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
            raise DataError("rows must be a list of objects")
        _check_limit("rows", len(rows), max_rows)
        names: dict[str, None] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise DataError(f"row {i} is not an object")
            for key in row:
                if key not in names:
                    if not isinstance(key, str):
                        raise DataError(f"row {i}: column name {key!r} is not a string")
                    names[key] = None
                    _check_limit("columns", len(names), max_columns)
        data = {name: [row.get(name) for row in rows] for name in names}
        return cls.from_columns(data)

    @classmethod
    def from_json(
        cls,
        obj: Any,
        *,
        max_rows: int | None = None,
        max_columns: int | None = None,
    ) -> Table:
        """A table from the API's JSON shapes: ``{"columns": {...}}`` or ``{"rows": [...]}``.

        Raises:
            DataError: neither shape, or bad content.
        """
        if isinstance(obj, Mapping):
            keys = set(obj)
            if keys == {"columns"}:
                return cls.from_columns(obj["columns"], max_rows=max_rows, max_columns=max_columns)
            if keys == {"rows"}:
                return cls.from_rows(obj["rows"], max_rows=max_rows, max_columns=max_columns)
        raise DataError('data must be {"columns": {name: [values]}} or {"rows": [{name: value}]}')

    @classmethod
    def from_csv(
        cls,
        data: bytes | bytearray | str,
        *,
        max_rows: int | None = None,
        max_columns: int | None = None,
    ) -> Table:
        """A table from CSV text with a header row, read by ``pandas.read_csv`` itself.

        See `drift.engine.csvparse.parse_csv` (pandas is imported on first use).

        Raises:
            DataError: undecodable bytes, a malformed or too long row, duplicate column names,
                too many rows or columns.
        """
        return cls.from_dataframe(parse_csv(data, max_rows=max_rows, max_columns=max_columns))

    @classmethod
    def from_dataframe(cls, frame: Any) -> Table:
        """A table from a pandas DataFrame (duck-typed: pandas is not a dependency).

        Dtypes map as Evidently reads them: float*, int*, uint*, bool, category, string,
        object and datetime; pandas' nullable extension types (``Int64``, ``boolean``) are
        kept as ``other``, which Evidently does not evaluate either.
        """
        import numpy as np

        columns: dict[str, Column] = {}
        for name in frame.columns:
            series = frame[name]
            kind = str(series.dtype.name)
            key = str(name)
            if kind.startswith("float"):
                columns[key] = Column(key, "float", series.to_numpy(dtype=np.float64))
            elif kind.startswith("int"):
                columns[key] = Column(key, "int", series.to_numpy(dtype=np.int64))
            elif kind.startswith("uint"):
                columns[key] = Column(key, "uint", series.to_numpy(dtype=np.uint64))
            elif kind == "bool":
                columns[key] = Column(key, "bool", series.to_numpy(dtype=bool))
            elif kind.startswith("datetime"):
                columns[key] = Column(key, "datetime", series.to_numpy())
            elif kind in ("category", "string", "str", "object"):
                values, only_str = _objects_of(series)
                dtype: Dtype = {"category": "category", "object": "object"}.get(kind, "str")  # type: ignore[assignment]
                if dtype == "object" and only_str:
                    dtype = "str"
                columns[key] = Column(key, dtype, values)
            else:
                columns[key] = Column(key, "other", _object_array(series.tolist()))
        return cls(columns, len(frame))


def as_table(data: Any) -> Table:
    """A Table from any accepted input: a Table, the JSON shapes, a mapping of lists, a DataFrame.

    No size limits here: the API applies them when it parses a request.

    Raises:
        DataError: the input is none of those or is malformed.
    """
    if isinstance(data, Table):
        return data
    if hasattr(data, "dtypes") and hasattr(data, "columns") and hasattr(data, "to_numpy"):
        return Table.from_dataframe(data)
    if isinstance(data, Mapping):
        if set(data) in ({"columns"}, {"rows"}):
            return Table.from_json(data)
        return Table.from_columns(data)
    if isinstance(data, bytes | bytearray):
        return Table.from_csv(bytes(data))
    raise DataError(
        'data must be {"columns": {...}}, {"rows": [...]}, a mapping of lists, CSV bytes, '
        "a Table or a pandas DataFrame"
    )


def none_mask(values: NDArray[Any]) -> NDArray[Any]:
    """True where an object array holds None (one C loop, no Python call per value)."""
    import numpy as np

    mask: NDArray[Any] = np.equal(values, _NONE)
    return mask


_NONE: Any = None


def _check_limit(what: str, count: int, limit: int | None) -> None:
    if limit is not None and count > limit:
        raise DataError(f"too many {what}: {count}, the limit is {limit}")


def _object_array(values: list[Any]) -> NDArray[Any]:
    import numpy as np

    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _objects_of(series: Any) -> tuple[NDArray[Any], bool]:
    """A Series' values as an object array, None where missing; and whether all are strings.

    Both in C (pandas' isna and infer_dtype), not a Python call per value: this is most of the
    time of typing an uploaded table with text columns.
    """
    values = series.to_numpy(dtype=object, copy=True)
    missing = series.isna().to_numpy(dtype=bool)
    if missing.any():
        values[missing] = None
    from pandas.api.types import infer_dtype

    return values, infer_dtype(values, skipna=True) in ("string", "empty")


def _none_if_missing(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    # pandas.NA and NaT: both are "missing" to pandas; detected without importing pandas.
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def column_from_values(name: str, values: Any) -> Column:
    """A column from a list of JSON values or a numpy array, typed as pd.DataFrame types it."""
    import numpy as np

    if isinstance(values, Column):  # typed already (columnar.loads_columnar)
        return values if values.name == name else Column(name, values.dtype, values.values)
    if isinstance(values, np.ndarray):
        return _column_from_array(name, values)
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise DataError(f"column {name!r}: values must be a list")
    items = list(values)
    if not items:
        return Column(name, "float", np.empty(0, dtype=np.float64))  # as pandas types []
    types = set(map(type, items))
    if not types <= _JSON_SCALARS:
        items = [_json_scalar(name, i, v) for i, v in enumerate(items)]
        types = set(map(type, items))
    has_none = type(None) in types
    types.discard(type(None))
    if types == {bool}:
        if has_none:
            return Column(name, "object", _object_array(items))
        return Column(name, "bool", np.array(items, dtype=bool))
    if types == {int} and not has_none:
        return _int_column(name, items)
    if types and types <= {int, float}:
        try:
            return Column(name, "float", np.array(items, dtype=np.float64))
        except OverflowError as err:
            raise DataError(f"column {name!r}: an integer is too large for a float") from err
    cleaned = [_none_if_missing(v) for v in items] if float in types else items
    if types == {str}:
        return Column(name, "str", _object_array(cleaned))
    return Column(name, "object", _object_array(cleaned))


def _json_scalar(name: str, row: int, value: Any) -> Any:
    if type(value) in _JSON_SCALARS:
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        converted = item()
        if type(converted) in _JSON_SCALARS:
            return converted
    if isinstance(value, bool | int | float | str):  # subclasses
        for base in (bool, int, float, str):
            if isinstance(value, base):
                return base(value)
    raise DataError(
        f"column {name!r} row {row}: {type(value).__name__} values are not supported "
        "(only numbers, strings, booleans and null)"
    )


def _int_column(name: str, items: list[int]) -> Column:
    import numpy as np

    lo, hi = min(items, default=0), max(items, default=0)
    if lo >= _INT64_MIN and hi <= _INT64_MAX:
        return Column(name, "int", np.array(items, dtype=np.int64))
    if lo >= 0 and hi <= _UINT64_MAX:
        return Column(name, "uint", np.array(items, dtype=np.uint64))
    return Column(name, "object", _object_array(items))


def _column_from_array(name: str, values: NDArray[Any]) -> Column:
    import numpy as np

    if values.ndim != 1:
        raise DataError(f"column {name!r}: values must be one-dimensional")
    kind = values.dtype.kind
    if kind == "f":
        return Column(name, "float", values.astype(np.float64, copy=False))
    if kind == "i":
        return Column(name, "int", values.astype(np.int64, copy=False))
    if kind == "u":
        return Column(name, "uint", values.astype(np.uint64, copy=False))
    if kind == "b":
        return Column(name, "bool", values)
    if kind in "US":
        return Column(name, "str", _object_array(values.astype(str).tolist()))
    if kind == "M":
        return Column(name, "datetime", values)
    return column_from_values(name, values.tolist())
