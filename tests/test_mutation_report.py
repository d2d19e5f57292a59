"""Boundaries of drift/report.py that mutation testing found untested (issue 19).

`column_kind` follows Evidently 0.7.23's typing of the current column (shared reference
"Evidently's default data drift, precisely", section 1): float numerical; int categorical
with at most 10 distinct values, else numerical; bool and category categorical; strings
(or objects whose first and last values are strings) text when distinct > 0.5 x non-null
count, else categorical; datetime, pandas extension dtypes, uint64, booleans with missing
values, all-missing and mixed objects are not evaluated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from node_exporter_ml.drift.engine.kinds import column_kind
from node_exporter_ml.drift.engine.table import Column


def _col(dtype: str, values: list[Any], np_dtype: Any = object) -> Column:
    return Column("x", dtype, np.array(values, dtype=np_dtype))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("column", "kind", "reason_mentions"),
    [
        (_col("float", [0.5, 1.5], np.float64), "num", None),
        (_col("int", list(range(10)) * 2, np.int64), "cat", None),  # 10 distinct: <= 10
        (_col("int", list(range(11)) * 2, np.int64), "num", None),  # 11 distinct
        (_col("bool", [True, False], bool), "cat", None),
        (_col("category", ["a", "b"]), "cat", None),
        (_col("datetime", ["2026-01-01"], "datetime64[ns]"), "datetime", "datetime"),
        (_col("other", [1, None]), "unknown", "extension"),
        (_col("uint", [2**63, 1], np.uint64), "unknown", "uint64"),
        # 2 distinct of 4 present: not more than half, so categorical; 3 of 4 is text
        (_col("str", ["a", "b", "a", "b", None]), "cat", None),
        (_col("str", ["a", "b", "c", "a"]), "text", "text"),
        (_col("object", ["a", 1, "a", "a"]), "cat", None),  # first and last are str
        (_col("object", ["a", ["l"], "b"]), "unknown", "hashable"),
        (_col("object", [True, None, False]), "unknown", "booleans"),
        (_col("object", [None, None]), "unknown", "no values"),
        (_col("str", [None, None]), "unknown", "no values"),
        (_col("object", [1, "a"]), "unknown", "mixed"),
    ],
    ids=[
        "float",
        "int 10 distinct",
        "int 11 distinct",
        "bool",
        "category",
        "datetime",
        "extension dtype",
        "uint64",
        "str half distinct",
        "str mostly distinct",
        "object str ends",
        "unhashable",
        "bools with missing",
        "object all missing",
        "str all missing",
        "mixed",
    ],
)
def test_column_kind(column: Column, kind: str, reason_mentions: str | None) -> None:
    got_kind, reason = column_kind(column)
    assert got_kind == kind
    if reason_mentions is None:
        assert reason is None
    else:
        assert reason is not None
        assert reason_mentions in reason
