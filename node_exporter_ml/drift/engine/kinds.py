"""Evidently's type of a column (num, cat, text or unknown), from its current values.

Shared by the drift report (which test a column gets) and the data-quality section (which
figures it gets); numpy is imported on first use.
"""

from __future__ import annotations

from typing import Any

from node_exporter_ml.drift.engine.table import Column, none_mask

INTEGER_CARDINALITY_LIMIT = 10
"""An integer column with at most this many distinct current values is categorical."""


def column_kind(column: Column) -> tuple[str, str | None]:
    """Evidently's type of a column from its current values: num, cat, text or unknown.

    Returns:
        ``(kind, reason)``: the reason says why a column of kind text/unknown/datetime is
        not evaluated, None for num and cat.
    """
    dtype = column.dtype
    if dtype == "float":
        return "num", None
    if dtype == "int":
        return ("cat" if _n_distinct(column.values) <= INTEGER_CARDINALITY_LIMIT else "num"), None
    if dtype in ("bool", "category"):
        return "cat", None
    if dtype == "datetime":
        return "datetime", "datetime columns are not evaluated"
    if dtype == "other":
        return "unknown", (
            "columns of pandas extension dtypes (Int64, boolean, ...) are not evaluated, "
            "as in Evidently"
        )
    if dtype == "uint":
        return "unknown", "uint64 columns (integers above 2**63) are not evaluated, as in Evidently"
    present = column.values[~none_mask(column.values)].tolist()
    if dtype == "str" or (
        dtype == "object"
        and present
        and isinstance(present[0], str)
        and isinstance(present[-1], str)
    ):
        if not present:
            return "unknown", "no values in the current data"
        try:
            distinct = len(set(present))
        except TypeError:
            return "unknown", "values are not hashable"
        if distinct > 0.5 * len(present):
            return "text", "text column (more than half the values are distinct): not evaluated"
        return "cat", None
    if dtype == "object" and present and all(isinstance(v, bool) for v in present):
        return "unknown", "booleans with missing values are not evaluated, as in Evidently"
    if not present:
        return "unknown", "no values in the current data"
    return "unknown", "values of mixed types are not evaluated, as in Evidently"


def _n_distinct(values: Any) -> int:
    import numpy as np

    return int(np.unique(values).shape[0])
