"""Data quality of the current data against the reference: what drift tests do not see (pure).

Evidently drops missing values before its tests, so a column that goes half-empty does not
drift; nor does a sensor reading outside any range it ever had if it is rare enough. This
section reports, per column: the missing share on each side, the share of current values
outside the reference's range (or a range declared with the reference), categories never seen
in the reference, and the schema: columns missing from or added to the current data, and
columns whose value type changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node_exporter_ml.drift.engine.kinds import column_kind
from node_exporter_ml.drift.engine.table import Column, Table

MAX_LISTED_CATEGORIES = 10
"""At most this many unseen categories are listed by name (all are counted)."""
SCHEMA_CHANGES = (
    ("missing", "missing_columns"),
    ("extra", "extra_columns"),
    ("retyped", "retyped_columns"),
)
"""Each schema change's name and its key in the report's ``schema`` section."""


def value_family(column: Column) -> str:
    """The coarse type of a column's values: number, bool, string, datetime, mixed or empty.

    An integer column that gained a missing value becomes float but stays a number, so only a
    change of family is a schema change.
    """
    if column.dtype in ("int", "uint", "float"):
        if column.dtype == "float" and len(column) and column.n_missing == len(column):
            return "empty"
        return "number"
    if column.dtype == "bool":
        return "bool"
    if column.dtype == "datetime":
        return "datetime"
    present = [v for v in column.values.tolist() if v is not None]
    if not present:
        return "empty"
    if all(isinstance(v, str) for v in present):
        return "string"
    if all(isinstance(v, bool) for v in present):
        return "bool"
    if column.dtype == "category":
        return "string"
    return "mixed"


def data_quality(
    reference: Table,
    current: Table,
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> dict[str, Any]:
    """The data-quality section of a drift report.

    Args:
        reference: the reference table.
        current: the current table.
        ranges: declared ``(low, high)`` ranges per column (either end None: unbounded); a
            declared range replaces the reference's observed range for that column.

    Returns:
        ``{"reference_rows", "current_rows", "schema": {"missing_columns", "extra_columns",
        "retyped_columns": {name: {"reference", "current"}}}, "columns": {name: {...}}}``.
        Each column has ``missing_share`` and ``reference_missing_share``; numerical columns
        add ``range`` ``[low, high]``, ``range_source`` (``reference`` or ``declared``) and
        ``out_of_range_share`` (of present current values, +-inf counting as outside);
        categorical columns add ``unseen_categories_share``, ``unseen_categories_count`` and
        up to ten ``unseen_categories`` (as text, most frequent first). Shares are null when
        there is nothing to divide by.
    """
    ranges = ranges or {}
    missing = [name for name in reference.columns if name not in current.columns]
    extra = [name for name in current.columns if name not in reference.columns]
    retyped: dict[str, dict[str, str]] = {}
    columns: dict[str, dict[str, Any]] = {}
    for name, cur in current.columns.items():
        ref = reference.columns.get(name)
        entry: dict[str, Any] = {
            "missing_share": _share(cur.n_missing, len(cur)),
            "reference_missing_share": None if ref is None else _share(ref.n_missing, len(ref)),
        }
        if ref is not None:
            ref_family, cur_family = value_family(ref), value_family(cur)
            if ref_family != cur_family and "empty" not in (ref_family, cur_family):
                retyped[name] = {"reference": ref_family, "current": cur_family}
        declared = ranges.get(name)
        if cur.dtype in ("int", "uint", "float") and (declared is not None or ref is not None):
            entry.update(_range_check(cur, ref, declared))
        if ref is not None and _is_categorical(cur):
            entry.update(_unseen(cur, ref))
        columns[name] = entry
    return {
        "reference_rows": reference.n_rows,
        "current_rows": current.n_rows,
        "schema": {
            "missing_columns": missing,
            "extra_columns": extra,
            "retyped_columns": retyped,
        },
        "columns": columns,
    }


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def _is_categorical(column: Column) -> bool:
    return column_kind(column)[0] == "cat"


def _range_check(
    current: Column, reference: Column | None, declared: tuple[float | None, float | None] | None
) -> dict[str, Any]:
    import numpy as np

    values = current.values.astype(np.float64, copy=False)
    present = values[~np.isnan(values)]
    if declared is not None:
        low, high = declared
        source = "declared"
    else:
        assert reference is not None
        if reference.dtype not in ("int", "uint", "float", "bool"):
            return {}
        ref = reference.values.astype(np.float64, copy=False)
        ref = ref[np.isfinite(ref)]
        if ref.shape[0] == 0:
            return {}
        low, high = float(ref.min()), float(ref.max())
        source = "reference"
    outside = np.zeros(present.shape[0], dtype=bool)
    if low is not None:
        outside |= present < low
    if high is not None:
        outside |= present > high
    outside |= np.isinf(present)  # an infinite reading is outside any range
    return {
        "range": [low, high],
        "range_source": source,
        "out_of_range_share": _share(int(outside.sum()), int(present.shape[0])),
    }


def _unseen(current: Column, reference: Column) -> dict[str, Any]:
    from collections import Counter

    known = set(reference.cleaned().tolist())
    counts = Counter(current.cleaned().tolist())
    unseen = {k: n for k, n in counts.items() if k not in known}
    listed = sorted(unseen.items(), key=lambda kv: (-kv[1], str(kv[0])))[:MAX_LISTED_CATEGORIES]
    return {
        "unseen_categories_share": _share(sum(unseen.values()), sum(counts.values())),
        "unseen_categories_count": len(unseen),
        "unseen_categories": [str(k) for k, _ in listed],
    }
