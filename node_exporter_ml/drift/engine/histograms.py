"""Histograms of a reference and a current column over shared bins, for the drift page.

Pure: numerical columns get equal-width bins over the pooled range, categorical ones the most
frequent categories of both sides; every figure is a share of its side. numpy is imported on
first use.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from node_exporter_ml.drift.engine.table import Table

NUM_BINS = 20
MAX_CATEGORIES = 12


def _as_floats(values: Any) -> NDArray[np.float64] | None:
    """The finite values as floats, or None when they are not all numbers."""
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype == bool or arr.dtype.kind in "US":
        return None
    if arr.dtype.kind == "O" and any(
        isinstance(v, bool) or not isinstance(v, int | float) for v in arr.tolist()
    ):
        return None
    try:
        floats = arr.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return floats[np.isfinite(floats)]


def numeric_histogram(ref: Any, cur: Any, bins: int = NUM_BINS) -> dict[str, Any]:
    """Shares of each side in `bins` equal-width bins over the pooled range (finite values)."""
    import numpy as np

    r = np.asarray(ref, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    r, c = r[np.isfinite(r)], c[np.isfinite(c)]
    pooled = np.concatenate([r, c])
    lo, hi = (float(pooled.min()), float(pooled.max())) if pooled.size else (0.0, 1.0)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)

    def shares(values: NDArray[np.float64]) -> list[float]:
        counts, _ = np.histogram(values, bins=edges)
        return (counts / values.size).tolist() if values.size else [0.0] * bins

    return {"kind": "num", "edges": edges.tolist(), "reference": shares(r), "current": shares(c)}


def category_histogram(ref: Any, cur: Any, limit: int = MAX_CATEGORIES) -> dict[str, Any]:
    """Shares of the most frequent categories of both sides; the rest pooled as "other"."""
    import numpy as np

    def counts(values: Any) -> tuple[Counter[str], int]:
        arr = np.asarray(values, dtype=object)
        if arr.size == 0:
            return Counter(), 0
        keys, n = np.unique(arr.astype(str), return_counts=True)
        return Counter(dict(zip(keys.tolist(), n.tolist(), strict=True))), int(arr.size)

    (rc, rn), (cc, cn) = counts(ref), counts(cur)
    ranked = sorted((rc + cc).items(), key=lambda kv: (-kv[1], kv[0]))
    kept = [k for k, _ in ranked[:limit]]
    rest = len(ranked) > limit

    def shares(counter: Counter[str], n: int) -> list[float]:
        out = [counter[k] / n if n else 0.0 for k in kept]
        if rest:
            out.append((n - sum(counter[k] for k in kept)) / n if n else 0.0)
        return out

    return {
        "kind": "cat",
        "categories": kept + (["other"] if rest else []),
        "reference": shares(rc, rn),
        "current": shares(cc, cn),
    }


def column_histograms(
    reference: Table, current: Table, columns: Mapping[str, Any]
) -> dict[str, Any]:
    """Histograms of every column both tables share, typed as the report typed them."""
    out: dict[str, Any] = {}
    for name, ref_col in reference.columns.items():
        cur_col = current.columns.get(name)
        if cur_col is None:
            continue
        ref_vals, cur_vals = ref_col.cleaned(), cur_col.cleaned()
        kind = (columns.get(name) or {}).get("column_type")
        if kind is None:
            kind = "num" if cur_col.dtype == "float" else "cat"
        if kind == "num":
            r, c = _as_floats(ref_vals), _as_floats(cur_vals)
            if r is not None and c is not None:
                out[name] = numeric_histogram(r, c)
                continue
        out[name] = category_histogram(ref_vals, cur_vals)
    return out
