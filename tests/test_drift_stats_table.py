"""Typed tables: JSON and CSV cells typed as pandas types them, and clear errors for bad data.

The expected pandas typing is stored in tests/fixtures/drift/typing.json by generate.py, which
ran pandas 2.x (``pd.read_csv`` and ``pd.DataFrame``) on each snippet.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node_exporter_ml.drift import DataError, Table, as_table, evaluate

TYPING = json.loads((Path(__file__).parent / "fixtures" / "drift" / "typing.json").read_text())

PANDAS_DTYPE = {"int64": {"int"}, "float64": {"float"}, "bool": {"bool"}, "uint64": {"uint"}}
PANDAS_DTYPE["object"] = {"str", "object"}


def _plain(values: list[Any]) -> list[Any]:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


@pytest.mark.parametrize("name", sorted(TYPING["csv"]))
def test_csv_typed_as_pandas(name: str) -> None:
    snippet = TYPING["csv"][name]
    table = Table.from_csv(snippet["csv"].encode())
    assert list(table.columns) == list(snippet["columns"])
    for col, want in snippet["columns"].items():
        column = table.columns[col]
        assert column.dtype in PANDAS_DTYPE[want["dtype"]], (col, column.dtype)
        assert _plain(column.values.tolist()) == want["values"], col
        assert table.n_rows == len(want["values"])


@pytest.mark.parametrize("name", sorted(TYPING["json"]))
def test_json_typed_as_pandas(name: str) -> None:
    snippet = TYPING["json"][name]
    column = Table.from_columns({"a": snippet["values"]}).columns["a"]
    assert column.dtype in PANDAS_DTYPE[snippet["dtype"]]
    assert _plain(column.values.tolist()) == snippet["typed"]


def test_string_columns_and_missing() -> None:
    table = Table.from_csv(b"s,n\nx,1\nNA,2\ny,\n")
    s, n = table.columns["s"], table.columns["n"]
    assert (s.dtype, s.values.tolist(), s.n_missing) == ("str", ["x", None, "y"], 1)
    assert n.dtype == "float"
    assert n.n_missing == 1
    assert n.cleaned().tolist() == [1.0, 2.0]


def test_bool_with_missing_is_object_and_cleaned() -> None:
    column = Table.from_columns({"b": [True, None, False]}).columns["b"]
    assert column.dtype == "object"
    assert column.cleaned().tolist() == [True, False]


def test_cleaned_drops_missing_and_infinities() -> None:
    column = Table.from_columns({"x": [1.0, None, math.inf, -math.inf, 2.0]}).columns["x"]
    assert column.cleaned().tolist() == [1.0, 2.0]
    assert column.n_missing == 1


def test_rows_fill_missing_keys_in_first_seen_order() -> None:
    table = Table.from_rows([{"a": 1, "b": "x"}, {"c": 2.5, "a": 2}])
    assert list(table.columns) == ["a", "b", "c"]
    assert table.columns["a"].dtype == "int"
    assert table.columns["b"].values.tolist() == ["x", None]
    assert table.columns["c"].values.tolist()[1] == 2.5
    assert math.isnan(table.columns["c"].values[0])


def test_json_shapes_and_numpy_arrays() -> None:
    a = Table.from_json({"columns": {"x": [1, 2]}})
    b = Table.from_json({"rows": [{"x": 1}, {"x": 2}]})
    c = as_table({"x": np.array([1, 2], dtype=np.int32)})
    for table in (a, b, c):
        assert table.n_rows == 2
        assert table.columns["x"].dtype == "int"
    strings = as_table({"s": np.array(["a", "b"])}).columns["s"]
    assert strings.dtype == "str"
    assert strings.values.tolist() == ["a", "b"]
    scalars = as_table({"f": [np.float32(1.5), np.int64(2)]}).columns["f"]
    assert scalars.dtype == "float"
    assert scalars.values.tolist() == [1.5, 2.0]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Table.from_columns({"a": [1, 2], "b": [1]}), "column 'b' has 1 values"),
        (lambda: Table.from_columns({"a": [1, [2]]}), "column 'a' row 1: list values"),
        (lambda: Table.from_columns({"a": "abc"}), "column 'a': values must be a list"),
        (lambda: Table.from_columns([1, 2]), "columns must be an object"),
        (lambda: Table.from_rows([{"a": 1}, 3]), "row 1 is not an object"),
        (lambda: Table.from_json({"cols": {}}), 'data must be {"columns"'),
        (lambda: Table.from_json({"columns": {}, "rows": []}), 'data must be {"columns"'),
        (lambda: Table.from_columns({"a": [1, 2, 3]}, max_rows=2), "too many rows: 3"),
        (lambda: Table.from_columns({"a": [1], "b": [2]}, max_columns=1), "too many columns"),
        (lambda: Table.from_rows([{"a": 1}] * 3, max_rows=2), "too many rows"),
        (lambda: Table.from_rows([{"a": 1, "b": 2}], max_columns=1), "too many columns"),
        (lambda: Table.from_csv(b"a,b\n1,2\n3,4,5\n"), "CSV line 3: 3 fields, the header has 2"),
        (lambda: Table.from_csv(b"a,a\n1,2\n"), "names column 'a' twice"),
        (lambda: Table.from_csv(b"a\n\xff\n"), "CSV is not UTF-8"),
        (lambda: Table.from_csv(b""), "CSV is empty"),
        (lambda: Table.from_csv(b'a\n"x\n'), "CSV line"),
        (lambda: Table.from_csv(b"a\n1\n2\n3\n", max_rows=2), "too many rows"),
        (lambda: Table.from_csv(b"a,b,c\n", max_columns=2), "too many columns: 3"),
        (lambda: as_table(42), "data must be"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_data_is_a_clear_data_error(build: Any, message: str) -> None:
    with pytest.raises(DataError) as err:
        build()
    assert message in str(err.value)


def test_csv_header_only_gives_empty_columns() -> None:
    table = Table.from_csv(b"a,b\n")
    assert table.n_rows == 0
    assert list(table.columns) == ["a", "b"]


def test_dataframe_dtypes_map_as_evidently_reads_them() -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "f": pd.Series([1.5, math.nan], dtype="float64"),
            "i": pd.Series([1, 2], dtype="int64"),
            "b": pd.Series([True, False], dtype="bool"),
            "c": pd.Series(["x", math.nan], dtype="category"),
            "o": pd.Series(["x", None], dtype="object"),
            "n": pd.Series([1, None], dtype="Int64"),
        }
    )
    table = as_table(frame)
    dtypes = {name: col.dtype for name, col in table.columns.items()}
    assert dtypes == {
        "f": "float",
        "i": "int",
        "b": "bool",
        "c": "category",
        "o": "str",
        "n": "other",
    }
    assert table.columns["c"].values.tolist() == ["x", None]
    report = evaluate(frame, frame, data_quality=False)
    assert sorted(report["columns"]) == ["b", "c", "f", "i"]
    assert report["not_evaluated"]["o"].startswith("text column")  # 1 distinct of 1 present
    assert report["not_evaluated"]["n"].startswith("columns of pandas extension dtypes")


LAZY_IMPORTS = """
import sys
import node_exporter_ml.drift as d
loaded = [m for m in ('numpy', 'scipy') if m in sys.modules]
assert not loaded, f'importing the package loaded {loaded}'
ref = {'x': [i * 0.37 % 11 for i in range(3000)], 'c': ['a', 'b', 'c'] * 1000}
cur = {'x': [i * 0.41 % 12 for i in range(2000)], 'c': ['a', 'b', 'c', 'd'] * 500}
report = d.evaluate(ref, cur)
assert report['columns']['x']['stattest'] == 'wasserstein', report
assert report['columns']['c']['stattest'] == 'jensenshannon', report
assert 'scipy' not in sys.modules, 'the default large-reference tests loaded scipy'
"""


def test_numpy_loads_on_first_use_and_scipy_only_for_tests_needing_it() -> None:
    subprocess.run([sys.executable, "-c", LAZY_IMPORTS], check=True, timeout=30)
