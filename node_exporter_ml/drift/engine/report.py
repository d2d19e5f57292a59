"""`evaluate`: Evidently's default data drift report, per column and for the dataset.

Column types come from the current data, as Evidently infers them; each column is cleaned of
missing values and +-inf on each side, a test is chosen by type, reference size and number of
distinct values (or by the options), and the dataset drifts when the share of drifted columns
reaches `drift_share`. Options carry Evidently's names: those of the 0.7 `DataDriftPreset`
(`method`, `threshold`, ...) and of its legacy presets (`stattest`, `stattest_threshold`, ...).

numpy and scipy are imported when `evaluate` first runs, not when this module is imported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node_exporter_ml.drift.engine.errors import DataError, OptionsError
from node_exporter_ml.drift.engine.kinds import column_kind
from node_exporter_ml.drift.engine.quality import data_quality
from node_exporter_ml.drift.engine.table import Column, Table, as_table

if TYPE_CHECKING:
    from node_exporter_ml.drift.engine.stattests import ColumnKind, Sample, StatTest

SMALL_REFERENCE = 1000
"""A reference of at most this many values is "small": p-value tests, else distances."""
DEFAULT_DRIFT_SHARE = 0.5
PARALLEL_MIN_VALUES = 200_000
"""Columns are evaluated on several threads when the data holds at least this many values."""

# Option name -> canonical name. Canonical names are the legacy presets' (and the DESIGN's);
# the 0.7 DataDriftPreset names are accepted as aliases.
_OPTION_ALIASES = {
    "columns": "columns",
    "drift_share": "drift_share",
    "stattest": "stattest",
    "method": "stattest",
    "cat_stattest": "cat_stattest",
    "cat_method": "cat_stattest",
    "num_stattest": "num_stattest",
    "num_method": "num_stattest",
    "per_column_stattest": "per_column_stattest",
    "per_column_method": "per_column_stattest",
    "stattest_threshold": "stattest_threshold",
    "threshold": "stattest_threshold",
    "cat_stattest_threshold": "cat_stattest_threshold",
    "cat_threshold": "cat_stattest_threshold",
    "num_stattest_threshold": "num_stattest_threshold",
    "num_threshold": "num_stattest_threshold",
    "per_column_stattest_threshold": "per_column_stattest_threshold",
    "per_column_threshold": "per_column_stattest_threshold",
    "data_quality": "data_quality",
    "ranges": "ranges",
}
_TEXT_OPTIONS = frozenset(
    {"text_stattest", "text_method", "text_stattest_threshold", "text_threshold"}
)
_STATTEST_ALIASES = {"energy_distance": "ed"}
_NOT_OFFERED = {
    "empirical_mmd": "its p-value comes from unseeded permutations, so it cannot be reproduced",
    "g_test": "Evidently's version fails unless both sides have the same size",
    "fisher_exact": "Evidently's version needs both sides to have the same size",
    "perc_text_content_drift": "text columns are not evaluated",
    "abs_text_content_drift": "text columns are not evaluated",
}


@dataclass(frozen=True, slots=True)
class Options:
    """Validated evaluation options (see `evaluate`)."""

    columns: tuple[str, ...] | None = None
    drift_share: float = DEFAULT_DRIFT_SHARE
    stattest: str | None = None
    cat_stattest: str | None = None
    num_stattest: str | None = None
    per_column_stattest: Mapping[str, str] = field(default_factory=dict)
    stattest_threshold: float | None = None
    cat_stattest_threshold: float | None = None
    num_stattest_threshold: float | None = None
    per_column_stattest_threshold: Mapping[str, float] = field(default_factory=dict)
    data_quality: bool = True
    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def stattest_for(self, name: str, kind: str) -> str | None:
        """The chosen test of a column, or None for the default choice."""
        if name in self.per_column_stattest:
            return self.per_column_stattest[name]
        typed = self.cat_stattest if kind == "cat" else self.num_stattest
        return typed if typed is not None else self.stattest

    def threshold_for(self, name: str, kind: str) -> float | None:
        """The chosen threshold of a column, or None for the test's default."""
        if name in self.per_column_stattest_threshold:
            return self.per_column_stattest_threshold[name]
        typed = self.cat_stattest_threshold if kind == "cat" else self.num_stattest_threshold
        return typed if typed is not None else self.stattest_threshold


def parse_options(raw: Mapping[str, Any]) -> Options:
    """Validate evaluation options given by Evidently's names.

    Raises:
        OptionsError: an unknown option, an option given twice under two names, an unknown
            test, or a value of the wrong type or range.
    """
    from node_exporter_ml.drift.engine.stattests import STATTESTS

    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in raw.items():
        if key in _TEXT_OPTIONS:
            raise OptionsError(
                f"option {key!r}: text columns are not evaluated (Evidently tests them with a "
                "trained text classifier, which this engine does not reproduce)"
            )
        canonical = _OPTION_ALIASES.get(key)
        if canonical is None:
            known = ", ".join(sorted(_OPTION_ALIASES))
            raise OptionsError(f"unknown option {key!r}; known options: {known}")
        if canonical in given_as:
            raise OptionsError(f"options {given_as[canonical]!r} and {key!r} are the same option")
        given_as[canonical] = key
        if value is None:
            continue
        values[canonical] = _parse_option(key, canonical, value, STATTESTS)
    return Options(**values)


def _parse_option(key: str, canonical: str, value: Any, known: Mapping[str, StatTest]) -> Any:
    if canonical == "columns":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise OptionsError(f"option {key!r} must be a list of column names")
        for name in value:
            if not isinstance(name, str):
                raise OptionsError(f"option {key!r}: {name!r} is not a column name")
        return tuple(value)
    if canonical == "drift_share":
        share = _number(key, value)
        if not 0 <= share <= 1:
            raise OptionsError(f"option {key!r} must be between 0 and 1, not {share}")
        return share
    if canonical in ("stattest", "cat_stattest", "num_stattest"):
        return _stattest_name(key, value, known)
    if canonical == "per_column_stattest":
        return {
            col: _stattest_name(f"{key}[{col!r}]", test, known)
            for col, test in _mapping(key, value).items()
        }
    if canonical.endswith("threshold"):
        if canonical.startswith("per_column"):
            return {col: _number(f"{key}[{col!r}]", t) for col, t in _mapping(key, value).items()}
        return _number(key, value)
    if canonical == "data_quality":
        if not isinstance(value, bool):
            raise OptionsError(f"option {key!r} must be true or false")
        return value
    # ranges: {column: [low, high]}, either end null for unbounded
    ranges: dict[str, tuple[float | None, float | None]] = {}
    for col, bounds in _mapping(key, value).items():
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise OptionsError(f"option {key!r}[{col!r}] must be [low, high]")
        low, high = (None if b is None else _number(f"{key}[{col!r}]", b) for b in bounds)
        if low is not None and high is not None and low > high:
            raise OptionsError(f"option {key!r}[{col!r}]: low {low} is above high {high}")
        ranges[col] = (low, high)
    return ranges


def _mapping(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise OptionsError(f"option {key!r} must map column names to values")
    return value


def _number(key: str, value: Any) -> float:
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range, e.g. 10**400
            raise OptionsError(
                f"option {key!r} must be a finite number, not a huge integer"
            ) from None
    if not math.isfinite(number):
        shown = repr(value)[:40] if isinstance(value, float | str | bool | None) else "that"
        raise OptionsError(f"option {key!r} must be a finite number, not {shown}")
    return number


def _stattest_name(key: str, value: Any, known: Mapping[str, StatTest]) -> str:
    if not isinstance(value, str):
        raise OptionsError(f"option {key!r} must be the name of a test, not {value!r}")
    name = _STATTEST_ALIASES.get(value, value)
    if name in known:
        return name
    if name in _NOT_OFFERED:
        raise OptionsError(f"option {key!r}: test {value!r} is not offered: {_NOT_OFFERED[name]}")
    raise OptionsError(
        f"option {key!r}: unknown test {value!r}; available: {', '.join(sorted(known))}"
    )


# --- evaluation -------------------------------------------------------------------------------


def evaluate(reference: Any, current: Any, **options: Any) -> dict[str, Any]:
    """Evaluate data drift of `current` against `reference`, as Evidently's DataDriftPreset.

    Args:
        reference: a `Table`, ``{"columns": {...}}`` / ``{"rows": [...]}`` JSON, a mapping of
            column name to list or numpy array, CSV bytes, or a pandas DataFrame.
        current: the same, for the data to check.
        **options: Evidently's DataDriftPreset options: ``columns``, ``drift_share``,
            ``stattest`` (``method``), ``cat_stattest`` (``cat_method``), ``num_stattest``
            (``num_method``), ``per_column_stattest`` (``per_column_method``),
            ``stattest_threshold`` (``threshold``), ``cat_stattest_threshold``
            (``cat_threshold``), ``num_stattest_threshold`` (``num_threshold``),
            ``per_column_stattest_threshold`` (``per_column_threshold``); and ours:
            ``data_quality`` (default True: include the data-quality section) and ``ranges``
            (``{column: [low, high]}`` declared ranges for that section).

    Returns:
        ``{"columns": {name: {"column_type", "stattest", "stattest_name", "score",
        "threshold", "drift_detected"}}, "dataset": {"number_of_columns",
        "number_of_drifted_columns", "share_of_drifted_columns", "dataset_drift",
        "drift_share"}, "not_evaluated": {name: reason}, "data_quality": {...}}``.
        A score that is not a finite number (a test undefined on the data) is null.

    Raises:
        DataError: unreadable data, or no column that can be evaluated.
        OptionsError: bad options.
    """
    opts = parse_options(options)
    ref_table = as_table(reference)
    cur_table = as_table(current)
    for col in opts.ranges:
        if col not in ref_table.columns and col not in cur_table.columns:
            raise OptionsError(f"option 'ranges': no column {col!r} in the data")
    if opts.columns is not None:
        names = list(opts.columns)
        for name in names:
            if name not in cur_table.columns:
                raise OptionsError(f"option 'columns': no column {name!r} in the current data")
    else:
        names = list(cur_table.columns)

    jobs: list[tuple[str, Column, Column | None]] = [
        (name, cur_table.columns[name], ref_table.columns.get(name)) for name in names
    ]
    size = (ref_table.n_rows + cur_table.n_rows) * len(jobs)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(len(jobs), cpus or 1, 4)
    if size >= PARALLEL_MIN_VALUES and workers > 1:
        # numpy's sorts, histograms and searches release the GIL: columns overlap on cores.
        with ThreadPoolExecutor(workers, thread_name_prefix="drift") as pool:
            outcomes = list(pool.map(lambda job: _evaluate_column(job, opts), jobs))
    else:
        outcomes = [_evaluate_column(job, opts) for job in jobs]

    columns: dict[str, dict[str, Any]] = {}
    not_evaluated: dict[str, str] = {}
    for (name, _, _), outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, str):
            not_evaluated[name] = outcome
        else:
            columns[name] = outcome
    if not columns:
        reasons = [f"{k}: {v}" for k, v in not_evaluated.items()]
        if len(reasons) > 5:
            reasons[5:] = [f"and {len(reasons) - 5} more"]
        raise DataError(f"no column can be evaluated ({'; '.join(reasons) or 'no columns'})")
    drifted = sum(1 for c in columns.values() if c["drift_detected"])
    share = drifted / len(columns)
    report: dict[str, Any] = {
        "columns": columns,
        "dataset": {
            "number_of_columns": len(columns),
            "number_of_drifted_columns": drifted,
            "share_of_drifted_columns": share,
            "dataset_drift": share >= opts.drift_share,
            "drift_share": opts.drift_share,
        },
        "not_evaluated": not_evaluated,
    }
    if opts.data_quality:
        report["data_quality"] = data_quality(ref_table, cur_table, ranges=opts.ranges)
    return report


def _evaluate_column(job: tuple[str, Column, Column | None], opts: Options) -> dict[str, Any] | str:
    """One column's result, or the reason it is not evaluated."""
    import numpy as np

    from node_exporter_ml.drift.engine.stattests import STATTESTS, Sample

    name, current, reference = job
    found, reason = column_kind(current)
    if reason is not None:
        return reason
    kind: ColumnKind = "num" if found == "num" else "cat"
    if reference is None:
        return "missing from the reference"
    ref_values = reference.cleaned()
    cur_values = current.cleaned()
    if ref_values.shape[0] == 0:
        return "no values in the reference after dropping missing and infinite ones"
    if cur_values.shape[0] == 0:
        return "no values in the current data after dropping missing and infinite ones"
    if kind == "num" and (ref_values.dtype == object or reference.dtype in ("datetime", "other")):
        return f"numerical in the current data but {reference.dtype} in the reference"
    sample = Sample(ref_values, cur_values)
    chosen = opts.stattest_for(name, kind)
    if chosen is None:
        test = STATTESTS[_default_stattest(sample, kind)]
    else:
        test = STATTESTS[chosen]
        if kind not in test.column_types:
            raise OptionsError(
                f"test {test.name!r} does not apply to column {name!r} of type {kind}; "
                f"it takes {' and '.join(sorted(test.column_types))} columns "
                "(use cat_stattest / num_stattest / per_column_stattest)"
            )
    threshold = opts.threshold_for(name, kind)
    if threshold is None:
        threshold = test.default_threshold
    try:
        with np.errstate(all="ignore"):  # overflow to inf, 0/0: the score says so (null)
            score = test.compute(sample, kind)
    except (TypeError, ValueError, ArithmeticError, LookupError, Warning) as err:
        # e.g. scipy's Anderson-Darling with a single distinct value (or one value a side:
        # an IndexError inside scipy), Epps-Singleton on fewer than 5 values, or labels of
        # mixed types that cannot be ordered
        return f"{test.name} cannot be computed on these values: {err}"
    return {
        "column_type": kind,
        "stattest": test.name,
        "stattest_name": test.display_name,
        "score": score if math.isfinite(score) else None,
        "threshold": threshold,
        "drift_detected": bool(test.drifted(score, threshold)),
    }


def _default_stattest(sample: Sample, kind: ColumnKind) -> str:
    """Evidently's default test for a column: by reference size and distinct values."""
    n_unique = sample.n_unique(cap=5)
    if sample.n_ref <= SMALL_REFERENCE:
        if kind == "num" and n_unique > 5:
            return "ks"
        return "chisquare" if n_unique > 2 else "z"
    if kind == "num" and n_unique > 5:
        return "wasserstein"
    return "jensenshannon"


__all__ = ["Options", "Table", "evaluate", "parse_options"]
