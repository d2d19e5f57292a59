"""Boundaries of drift/quality.py that mutation testing found untested (issue 19).

`value_family` maps each column dtype (pandas' families, as drift/table.py types them) to the
coarse kind a schema change is judged by; the range check of the data-quality section takes
the reference's finite range (or a declared one) and counts current values outside it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from node_exporter_ml.drift.engine.quality import data_quality, value_family
from node_exporter_ml.drift.engine.table import Column, Table


def _col(dtype: str, values: list[Any], np_dtype: Any = None) -> Column:
    return Column("x", dtype, np.array(values, dtype=np_dtype))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("column", "family"),
    [
        (_col("int", [1, 2]), "number"),
        (_col("uint", [2**63, 1], np.uint64), "number"),
        (_col("float", [1.5, math.nan]), "number"),
        (_col("float", [math.nan, math.nan]), "empty"),  # all missing: no family to compare
        (_col("float", []), "number"),  # no rows is not "all missing"
        (_col("bool", [True, False]), "bool"),
        (_col("datetime", ["2026-01-01"], "datetime64[ns]"), "datetime"),
        (_col("category", [1, 2], object), "string"),  # a pandas category is text, whatever
        (_col("category", [1, "a"], object), "string"),  # its values
        (_col("str", ["a", None], object), "string"),
        (_col("object", [True, None], object), "bool"),
        (_col("object", [None, None], object), "empty"),
        (_col("object", [1, "a"], object), "mixed"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{v.dtype} {v.values.tolist()}",
)
def test_value_family(column: Column, family: str) -> None:
    assert value_family(column) == family


def _quality(reference: dict[str, list[Any]], current: dict[str, list[Any]], **kw: Any) -> Any:
    report = data_quality(Table.from_columns(reference), Table.from_columns(current), **kw)
    return report["columns"]["x"]


def test_range_from_a_one_value_reference() -> None:
    # a reference with one value has the range [3, 3]: 2 of the 4 current values are outside
    got = _quality({"x": [3.0]}, {"x": [3.0, 3.0, 2.0, 4.0]})
    assert (got["range"], got["range_source"], got["out_of_range_share"]) == (
        [3.0, 3.0],
        "reference",
        0.5,
    )


def test_range_of_bool_and_uint_references() -> None:
    # a bool reference is 0/1: a current 2 is outside; a uint reference is a range of numbers
    assert _quality({"x": [True, False]}, {"x": [0, 1, 2, 1]})["out_of_range_share"] == 0.25
    got = _quality({"x": [2**63, 2**63 + 10]}, {"x": [2**63 + 5, 1]})
    assert got["out_of_range_share"] == 0.5


def test_declared_range_with_both_ends() -> None:
    # [0, 10]: -1 below, 11 above, 5 inside
    got = _quality({"x": [5.0]}, {"x": [-1.0, 5.0, 11.0]}, ranges={"x": (0.0, 10.0)})
    assert got["out_of_range_share"] == pytest.approx(2 / 3)
    assert got["range_source"] == "declared"


def test_unseen_categories_tie_broken_by_name() -> None:
    # two unseen labels seen twice each: listed by name, "b" before "c"
    got = _quality({"x": ["a"] * 4}, {"x": ["c", "b", "c", "b", "a", "a"]})
    assert got["unseen_categories"] == ["b", "c"]
    assert got["unseen_categories_count"] == 2
