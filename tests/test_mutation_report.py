"""Boundaries of drift/report.py that mutation testing found untested (issue 19).

`column_kind` follows Evidently 0.7.23's typing of the current column (shared reference
"Evidently's default data drift, precisely", section 1): float numerical; int categorical
with at most 10 distinct values, else numerical; bool and category categorical; strings
(or objects whose first and last values are strings) text when distinct > 0.5 x non-null
count, else categorical; datetime, pandas extension dtypes, uint64, booleans with missing
values, all-missing and mixed objects are not evaluated.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import pytest

from node_exporter_ml.drift.engine import report as report_module
from node_exporter_ml.drift.engine.errors import DataError, OptionsError
from node_exporter_ml.drift.engine.kinds import column_kind
from node_exporter_ml.drift.engine.report import Options, evaluate, parse_options
from node_exporter_ml.drift.engine.table import Column, Table


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


# --- second pass (issue 19): option values, each message and each precedence -----------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (10**400, "a huge integer"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (True, "True"),
        ("0.1", "'0.1'"),
        ("x" * 100, repr("x" * 100)[:40]),
        ([0.1], "that"),
        ({"a": 1}, "that"),
    ],
    ids=["huge int", "nan", "inf", "-inf", "bool", "str", "long str", "list", "dict"],
)
@pytest.mark.parametrize("key", ["threshold", "cat_threshold", "num_stattest_threshold"])
def test_a_threshold_must_be_a_finite_number(key: str, value: Any, shown: str) -> None:
    with pytest.raises(OptionsError) as err:
        parse_options({key: value})
    assert str(err.value) == f"option {key!r} must be a finite number, not {shown}"


@pytest.mark.parametrize("value", [0, 1, 0.05, 10**6, -3])
def test_a_finite_number_is_a_threshold_as_a_float(value: float) -> None:
    got = parse_options({"threshold": value}).stattest_threshold
    assert got == float(value)
    assert type(got) is float


@pytest.mark.parametrize(
    ("share", "ok"), [(0, True), (0.0, True), (1, True), (0.5, True), (-0.01, False), (1.01, False)]
)
def test_drift_share_is_a_share(share: float, ok: bool) -> None:
    if ok:
        assert parse_options({"drift_share": share}).drift_share == share
    else:
        with pytest.raises(
            OptionsError, match=f"'drift_share' must be between 0 and 1, not {share}"
        ):
            parse_options({"drift_share": share})


def test_an_option_given_as_null_is_the_default() -> None:
    assert parse_options({"threshold": None, "method": None, "columns": None}) == Options()


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [([None, 5], (None, 5.0)), ([1, None], (1.0, None)), ([None, None], (None, None)),
     ((2, 2), (2.0, 2.0))],
)  # fmt: skip
def test_ranges_take_open_ends(bounds: Any, expected: tuple[float | None, float | None]) -> None:
    assert parse_options({"ranges": {"x": bounds}}).ranges == {"x": expected}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ranges": {"x": [1, 2, 3]}}, "option 'ranges'['x'] must be [low, high]"),
        ({"ranges": {"x": ["a", 1]}}, "option \"ranges['x']\" must be a finite number, not 'a'"),
        ({"ranges": {1: [0, 1]}}, "option 'ranges' must map column names to values"),
        ({"per_column_threshold": {"x": "a"}}, "must be a finite number, not 'a'"),
        ({"per_column_method": {"x": 3}}, "must be the name of a test, not 3"),
        ({"per_column_method": {"x": "g_test"}}, "not offered: Evidently's version fails"),
        ({"columns": ["x", 1]}, "option 'columns': 1 is not a column name"),
        ({"columns": {"x": 1}}, "option 'columns' must be a list of column names"),
        ({"text_threshold": 0.1}, "option 'text_threshold': text columns are not evaluated"),
        ({"data_quality": 1}, "option 'data_quality' must be true or false"),
    ],
)
def test_more_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError) as err:
        parse_options(options)
    assert message in str(err.value)


def test_per_column_options_are_parsed_per_column() -> None:
    opts = parse_options(
        {
            "per_column_method": {"x": "energy_distance", "c": "psi"},
            "per_column_threshold": {"x": 1, "c": 0.5},
            "columns": ["x", "c"],
            "data_quality": False,
        }
    )
    assert opts.per_column_stattest == {"x": "ed", "c": "psi"}
    assert opts.per_column_stattest_threshold == {"x": 1.0, "c": 0.5}
    assert opts.columns == ("x", "c")
    assert opts.data_quality is False


def test_precedence_of_tests_and_thresholds() -> None:
    opts = Options(
        stattest="psi",
        cat_stattest="jensenshannon",
        per_column_stattest={"p": "hellinger"},
        stattest_threshold=0.1,
        num_stattest_threshold=0.2,
        per_column_stattest_threshold={"p": 0.3},
    )
    assert opts.stattest_for("p", "num") == "hellinger"
    assert opts.stattest_for("q", "cat") == "jensenshannon"
    assert opts.stattest_for("q", "num") == "psi"  # no num test: the one for all
    assert opts.threshold_for("p", "cat") == 0.3
    assert opts.threshold_for("q", "num") == 0.2
    assert opts.threshold_for("q", "cat") == 0.1  # no cat threshold: the one for all
    assert Options().stattest_for("q", "num") is None
    assert Options().threshold_for("q", "cat") is None


# --- third pass: the report run's survivors (each message names its option) ----------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"drift_share": "x"}, "option 'drift_share' must be a finite number, not 'x'"),
        ({"method": 3}, "option 'method' must be the name of a test, not 3"),
        (
            {"per_column_method": {"x": 3}},
            "option \"per_column_method['x']\" must be the name of a test, not 3",
        ),
        (
            {"per_column_method": ["ks"]},
            "option 'per_column_method' must map column names to values",
        ),
        (
            {"per_column_threshold": {"x": "a"}},
            "option \"per_column_threshold['x']\" must be a finite number, not 'a'",
        ),
        (
            {"per_column_threshold": 0.1},
            "option 'per_column_threshold' must map column names to values",
        ),
    ],
)  # fmt: skip
def test_each_message_names_the_option_as_given(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError) as err:
        parse_options(options)
    assert str(err.value) == message


def test_an_unknown_test_lists_the_available_ones() -> None:
    from node_exporter_ml.drift.engine.stattests import STATTESTS

    with pytest.raises(OptionsError) as err:
        parse_options({"stattest": "magic"})
    available = ", ".join(sorted(STATTESTS))
    assert str(err.value) == f"option 'stattest': unknown test 'magic'; available: {available}"


def test_ranges_may_name_a_column_of_either_side() -> None:
    ref = {"x": [1.0, 2.0, 3.0] * 10, "old": [1.0] * 30}
    cur = {"x": [1.5, 2.5, 3.5] * 10}
    report = evaluate(ref, cur, ranges={"old": [0, 1]})
    assert "x" in report["columns"]


@pytest.mark.parametrize(
    ("n", "tail"), [(1, ""), (5, ""), (6, "; and 1 more"), (8, "; and 3 more")]
)
def test_no_column_evaluated_lists_five_reasons_then_a_count(n: int, tail: str) -> None:
    cols = {f"d{i}": ["2026-01-01T00:00:00"] * 3 for i in range(n)}
    data = Table.from_columns({k: np.array(v, dtype="datetime64[ns]") for k, v in cols.items()})
    with pytest.raises(DataError) as err:
        evaluate(data, data)
    shown = "; ".join(f"d{i}: datetime columns are not evaluated" for i in range(min(n, 5)))
    assert str(err.value) == f"no column can be evaluated ({shown}{tail})"


def test_no_columns_at_all() -> None:
    with pytest.raises(DataError) as err:
        evaluate({}, {})
    assert str(err.value) == "no column can be evaluated (no columns)"


def _threads(monkeypatch: pytest.MonkeyPatch, columns: int, rows: int) -> set[str]:
    """The names of the threads that evaluated the columns of a rows x columns table."""
    names: set[str] = set()
    real = report_module._evaluate_column

    def spy(job: Any, opts: Any) -> Any:
        names.add(threading.current_thread().name.split("_")[0])
        return real(job, opts)

    monkeypatch.setattr(report_module, "_evaluate_column", spy)
    monkeypatch.setattr(report_module.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    data = {f"c{i}": np.linspace(0, 1, rows) for i in range(columns)}
    evaluate(data, data, data_quality=False)
    return names


@pytest.mark.parametrize(
    ("columns", "rows", "threaded"),
    [
        (2, 50, True),  # (50 + 50) x 2 = 200 values: at the threshold
        (2, 49, False),  # 196: under it
        (1, 100, False),  # one column: one worker, no pool
        (3, 40, True),
    ],
)
def test_columns_go_to_drift_threads_from_the_threshold(
    monkeypatch: pytest.MonkeyPatch, columns: int, rows: int, threaded: bool
) -> None:
    monkeypatch.setattr(report_module, "PARALLEL_MIN_VALUES", 200)
    names = _threads(monkeypatch, columns, rows)
    assert names == ({"drift"} if threaded else {"MainThread"})


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        (
            _col("other", [1, None]),
            "columns of pandas extension dtypes (Int64, boolean, ...) are not evaluated, "
            "as in Evidently",
        ),
        (
            _col("uint", [2**63, 2**64 - 1], np.uint64),
            "uint64 columns (integers above 2**63) are not evaluated, as in Evidently",
        ),
        (_col("str", [None, None]), "no values in the current data"),
        (_col("object", ["a", ["not", "hashable"], "b"]), "values are not hashable"),
        (
            _col("object", [True, None, False]),
            "booleans with missing values are not evaluated, as in Evidently",
        ),
        (_col("object", [1, "a", 2.5]), "values of mixed types are not evaluated, as in Evidently"),
        (_col("object", [None, None]), "no values in the current data"),
    ],
)
def test_each_column_left_out_says_why_in_words(column: Column, reason: str) -> None:
    """The reason is what the report shows a user next to a column it does not evaluate."""
    assert column_kind(column) == ("unknown", reason)
