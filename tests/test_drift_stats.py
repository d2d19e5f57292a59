"""The drift engine's tests, options, report and data-quality section (pure, no Evidently).

The Evidently comparison itself is tests/test_drift_evidently.py; these check the corners
against textbook formulas and scipy, and the engine's own behaviour (options, errors, the
columns it leaves out and why, data quality, threads).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from node_exporter_ml.drift import DataError, OptionsError, Table, evaluate, parse_options
from node_exporter_ml.drift.engine import report as report_module
from node_exporter_ml.drift.engine.quality import data_quality, value_family
from node_exporter_ml.drift.engine.stattests import STATTESTS, Sample, chisquare, wasserstein, z

RNG = np.random.default_rng(7)


def _sample(ref: Any, cur: Any) -> Sample:
    """A Sample as the report builds it: numbers as numeric arrays, labels as object arrays."""

    def array(values: Any) -> Any:
        values = np.asarray(values)
        return values.astype(object) if values.dtype.kind == "U" else values

    return Sample(array(ref), array(cur))


# --- stattests --------------------------------------------------------------------------------


def test_chisquare_is_goodness_of_fit_against_reference_proportions() -> None:
    ref = np.repeat([1, 2, 3, 4, 5, 6], [90, 80, 85, 75, 95, 75])
    cur = np.repeat([1, 2, 3, 4, 5, 6], [70, 80, 60, 75, 65, 100])
    expected = np.array([90, 80, 85, 75, 95, 75]) * (450 / 500)
    want = stats.chisquare([70, 80, 60, 75, 65, 100], expected).pvalue
    assert chisquare(_sample(ref, cur)) == pytest.approx(want, rel=1e-12)
    homogeneity = stats.chi2_contingency([[90, 80, 85, 75, 95, 75], [70, 80, 60, 75, 65, 100]])
    assert chisquare(_sample(ref, cur)) < homogeneity.pvalue  # anti-conservative, as Evidently


def test_chisquare_label_only_in_current_gives_zero_without_warning() -> None:
    assert chisquare(_sample(["a", "b"] * 50, ["a", "b", "c"] * 30)) == 0.0
    assert 0 < chisquare(_sample(["a", "b", "c"] * 30, ["a", "b"] * 50)) < 1e-10


def test_z_test_pooled_two_proportions_and_its_corners() -> None:
    ref, cur = ["u"] * 70 + ["v"] * 30, ["u"] * 50 + ["v"] * 50
    p1, p2, pooled = 0.3, 0.5, 80 / 200
    zs = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / 100 + 1 / 100))
    assert z(_sample(ref, cur)) == pytest.approx(2 * (1 - stats.norm.cdf(abs(zs))), rel=1e-12)
    assert z(_sample(["k"] * 10, ["k"] * 5)) == 1.0  # one and the same value on both sides
    assert z(_sample(["a"] * 800, ["b"] * 700)) == 0.0  # 1 - Phi(30) is exactly 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
)
def test_wasserstein_matches_scipy(ref: list[float], cur: list[float]) -> None:
    want = stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)
    got = wasserstein(_sample(np.array(ref), np.array(cur)))
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_jensenshannon_bounds_and_constant_reference_wasserstein() -> None:
    js = STATTESTS["jensenshannon"]
    assert js.compute(_sample(["a"] * 10, ["b"] * 10), "cat") == pytest.approx(
        math.sqrt(math.log(2))
    )
    assert js.compute(_sample(["a", "b"] * 10, ["b", "a"] * 7), "cat") == 0.0
    score = wasserstein(_sample(np.full(2000, 2.5), np.full(1000, 2.6)))
    assert score == pytest.approx(0.1 / 0.001)


def test_binned_shares_use_pooled_sturges_edges_for_wide_numbers() -> None:
    ref, cur = RNG.normal(0, 1, 3000), RNG.normal(0.3, 1, 2000)
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    p = np.histogram(ref, edges)[0] / 3000
    q = np.histogram(cur, edges)[0] / 2000
    from scipy.spatial import distance

    got = STATTESTS["jensenshannon"].compute(_sample(ref, cur), "num")
    assert got == pytest.approx(distance.jensenshannon(p, q), rel=1e-12)


def test_psi_fills_empty_bins() -> None:
    psi = STATTESTS["psi"].compute(_sample(["a"] * 50 + ["b"] * 50, ["a"] * 100), "cat")
    r, c = np.array([0.5, 0.5]), np.array([1.0, 0.0001])
    assert psi == pytest.approx(float(np.sum((r - c) * np.log(r / c))), rel=1e-12)


def test_tvd_is_deterministic_and_sensitive() -> None:
    ref = np.array(["a", "b", "c", "d"] * 50, dtype=object)
    same = STATTESTS["TVD"].compute(_sample(ref, np.roll(ref, 3)), "cat")
    shifted = STATTESTS["TVD"].compute(_sample(ref, np.array(["a"] * 120 + ["b"] * 80)), "cat")
    assert same == STATTESTS["TVD"].compute(_sample(ref, np.roll(ref, 3)), "cat")
    assert same > 0.5
    assert shifted < 0.01


@pytest.mark.parametrize(
    ("name", "score", "threshold", "drifted"),
    [
        ("ks", 0.05, 0.05, True),  # KS drifts at p <= threshold
        ("chisquare", 0.05, 0.05, False),  # chi-square and Z at p < threshold
        ("z", 0.049, 0.05, True),
        ("wasserstein", 0.1, 0.1, True),  # distances at >=
        ("jensenshannon", 0.099, 0.1, False),
        ("ed", 0.1, 0.1, False),  # energy distance strictly >
        ("cramer_von_mises", 0.1, 0.1, True),
        ("anderson", 0.1, 0.1, False),
        ("ks", math.nan, 0.05, False),
    ],
)
def test_verdict_directions(name: str, score: float, threshold: float, drifted: bool) -> None:
    assert STATTESTS[name].drifted(score, threshold) is drifted


def test_every_test_has_evidently_default_threshold() -> None:
    defaults = {name: test.default_threshold for name, test in STATTESTS.items()}
    assert defaults == {
        "ks": 0.05,
        "chisquare": 0.05,
        "z": 0.05,
        "wasserstein": 0.1,
        "jensenshannon": 0.1,
        "psi": 0.1,
        "kl_div": 0.1,
        "hellinger": 0.1,
        "anderson": 0.1,
        "cramer_von_mises": 0.1,
        "ed": 0.1,
        "es": 0.05,
        "mannw": 0.05,
        "t_test": 0.05,
        "TVD": 0.1,
    }


# --- options ----------------------------------------------------------------------------------

REF = {"x": RNG.normal(0, 1, 300).tolist(), "c": ["a", "b", "c"] * 100}
CUR = {"x": RNG.normal(0.5, 1, 200).tolist(), "c": ["a", "b", "c", "a"] * 50}


def test_options_accept_both_evidently_vocabularies() -> None:
    legacy = evaluate(REF, CUR, stattest="psi", stattest_threshold=0.3, data_quality=False)
    current = evaluate(REF, CUR, method="psi", threshold=0.3, data_quality=False)
    assert legacy == current
    assert {c["stattest"] for c in legacy["columns"].values()} == {"psi"}
    assert {c["threshold"] for c in legacy["columns"].values()} == {0.3}


def test_option_precedence_per_column_then_type_then_all() -> None:
    report = evaluate(
        REF,
        CUR,
        stattest="psi",
        num_stattest="anderson",
        per_column_stattest={"c": "hellinger"},
        stattest_threshold=0.2,
        cat_stattest_threshold=0.3,
        per_column_stattest_threshold={"x": 0.01},
    )
    assert report["columns"]["x"]["stattest"] == "anderson"
    assert report["columns"]["x"]["threshold"] == 0.01
    assert report["columns"]["c"]["stattest"] == "hellinger"
    assert report["columns"]["c"]["threshold"] == 0.3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bins": 3}, "unknown option 'bins'"),
        ({"stattest": "ks", "method": "z"}, "'stattest' and 'method' are the same option"),
        ({"stattest": "magic"}, "unknown test 'magic'; available:"),
        ({"stattest": "empirical_mmd"}, "not offered: its p-value comes from unseeded"),
        ({"text_stattest": "abs_text_content_drift"}, "text columns are not evaluated"),
        ({"drift_share": 1.5}, "between 0 and 1"),
        ({"stattest_threshold": True}, "must be a finite number"),
        ({"threshold": "0.1"}, "must be a finite number"),
        ({"per_column_stattest": ["ks"]}, "must map column names"),
        ({"columns": "x"}, "must be a list of column names"),
        ({"ranges": {"x": [2, 1]}}, "low 2.0 is above high 1.0"),
        ({"ranges": {"x": 5}}, "must be [low, high]"),
        ({"data_quality": "yes"}, "must be true or false"),
    ],
)
def test_bad_options_are_options_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError) as err:
        parse_options(options)
    assert message in str(err.value)


def test_options_checked_against_the_data() -> None:
    with pytest.raises(OptionsError, match="no column 'y' in the current data"):
        evaluate(REF, CUR, columns=["y"])
    with pytest.raises(OptionsError, match="test 'ks' does not apply to column 'c' of type cat"):
        evaluate(REF, CUR, stattest="ks")
    with pytest.raises(OptionsError, match="'ranges': no column 'q'"):
        evaluate(REF, CUR, ranges={"q": [0, 1]})


def test_energy_distance_alias() -> None:
    report = evaluate(REF, CUR, num_stattest="energy_distance", data_quality=False)
    assert report["columns"]["x"]["stattest"] == "ed"


# --- the report -------------------------------------------------------------------------------


def test_columns_left_out_are_named_with_a_reason() -> None:
    ref = {
        "x": [1.0, 2.0, 3.0, 4.0] * 30,
        "flag": [True, None, False] * 40,
        "words": [f"w{i}" for i in range(120)],
        "empty_cur": [1.5] * 120,
        "new": [1.0] * 120,
    }
    cur = {
        "x": [1.0, 2.0, 3.5, 4.0] * 25,
        "flag": [True, None, False, True] * 25,
        "words": [f"v{i}" for i in range(100)],
        "empty_cur": [None] * 100,
        "only_cur": [1, 2] * 50,
    }
    report = evaluate(ref, cur)
    assert set(report["columns"]) == {"x"}
    reasons = report["not_evaluated"]
    assert reasons["flag"].startswith("booleans with missing values")
    assert reasons["words"].startswith("text column")
    assert reasons["empty_cur"].startswith("no values in the current data")
    assert reasons["only_cur"] == "missing from the reference"
    assert report["dataset"]["number_of_columns"] == 1
    assert report["data_quality"]["schema"]["missing_columns"] == ["new"]
    assert report["data_quality"]["schema"]["extra_columns"] == ["only_cur"]


def test_no_evaluable_column_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no column can be evaluated"):
        evaluate({"a": ["x", "y"]}, {"a": ["p", "q"]})
    with pytest.raises(DataError, match="no column can be evaluated"):
        evaluate({"columns": {}}, {"columns": {}})


def test_numerical_current_against_text_reference_is_left_out() -> None:
    report = evaluate(
        {"a": ["1", "2"] * 20, "b": [1.0] * 40}, {"a": [1.5, 2.5] * 20, "b": [1.0] * 40}
    )
    assert report["not_evaluated"]["a"] == "numerical in the current data but str in the reference"
    assert report["data_quality"]["schema"]["retyped_columns"] == {
        "a": {"reference": "string", "current": "number"}
    }


def test_dataset_drift_share_is_inclusive() -> None:
    ref = {"a": ["x", "y"] * 100, "b": ["x", "y"] * 100}
    cur = {"a": ["x"] * 200, "b": ["x", "y"] * 100}
    report = evaluate(ref, cur, data_quality=False)
    assert report["dataset"]["share_of_drifted_columns"] == 0.5
    assert report["dataset"]["dataset_drift"] is True
    assert evaluate(ref, cur, drift_share=0.51)["dataset"]["dataset_drift"] is False


def test_non_finite_scores_are_null() -> None:
    report = evaluate({"a": [1.0] * 30}, {"a": [1.0] * 30}, stattest="t_test", data_quality=False)
    assert report["columns"]["a"]["score"] is None
    assert report["columns"]["a"]["drift_detected"] is False


def test_threads_give_the_same_report(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    ref = {f"n{i}": rng.normal(0, 1, 3000) for i in range(6)} | {"c": rng.integers(0, 4, 3000)}
    cur = {f"n{i}": rng.normal(0.1 * i, 1, 2500) for i in range(6)} | {
        "c": rng.integers(0, 5, 2500)
    }
    monkeypatch.setattr(report_module, "PARALLEL_MIN_VALUES", 10**12)
    serial = evaluate(ref, cur)
    monkeypatch.setattr(report_module, "PARALLEL_MIN_VALUES", 1)
    assert evaluate(ref, cur) == serial


def test_csv_bytes_and_tables_are_accepted() -> None:
    ref = b"a,b\n" + b"".join(f"{i % 7},{'xy'[i % 2]}\n".encode() for i in range(200))
    cur = b"a,b\n" + b"".join(f"{i % 9},{'xy'[i % 3 == 0]}\n".encode() for i in range(150))
    from_bytes = evaluate(ref, cur)
    assert from_bytes == evaluate(Table.from_csv(ref), Table.from_csv(cur))
    assert from_bytes["columns"]["a"]["stattest"] == "chisquare"
    assert from_bytes["columns"]["b"]["stattest"] == "z"


# --- data quality -----------------------------------------------------------------------------


def test_data_quality_ranges_unseen_categories_and_missing() -> None:
    ref = Table.from_columns(
        {"t": [10.0, 20.0, 30.0, None], "c": ["a", "b", "a", "b"], "i": [1, 2, 3, 4]}
    )
    cur = Table.from_columns(
        {
            "t": [5.0, 15.0, math.inf, None, None],
            "c": ["z", "z", "y", "z", None],
            "i": [1, 2, 9, 4, 4],
        }
    )
    quality = data_quality(ref, cur)
    t, c, i = (quality["columns"][k] for k in "tci")
    assert t["missing_share"] == 2 / 5
    assert t["reference_missing_share"] == 1 / 4
    assert t["range"] == [10.0, 30.0]
    assert t["range_source"] == "reference"
    assert t["out_of_range_share"] == 2 / 3  # 5.0 and inf, of 3 present values
    assert c["unseen_categories_share"] == 1.0
    assert c["unseen_categories_count"] == 2
    assert c["unseen_categories"] == ["z", "y"]
    assert i["out_of_range_share"] == 1 / 5
    assert i["unseen_categories"] == ["9"]
    declared = data_quality(ref, cur, ranges={"t": (0.0, None)})["columns"]["t"]
    assert declared["range"] == [0.0, None]
    assert declared["range_source"] == "declared"
    assert declared["out_of_range_share"] == 1 / 3  # only inf
    assert quality["reference_rows"] == 4
    assert quality["current_rows"] == 5


def test_value_families_ignore_int_to_float_and_empty_columns() -> None:
    table = Table.from_columns(
        {"i": [1, 2], "f": [1, None], "e": [None, None], "b": [True, None], "s": ["x", None]}
    )
    families = {name: value_family(col) for name, col in table.columns.items()}
    assert families == {"i": "number", "f": "number", "e": "empty", "b": "bool", "s": "string"}
    ref = Table.from_columns({"i": [1, 2], "e": [1.0, 2.0]})
    cur = Table.from_columns({"i": [1.5, None], "e": [None, None]})
    assert data_quality(ref, cur)["schema"]["retyped_columns"] == {}


# --- any input: a report or a clear error, never a crash --------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["a", "b", "c", "", "NA"]),
    st.text(max_size=3),
)
_COLUMN = st.one_of(
    st.lists(_SCALARS, min_size=0, max_size=40),
    st.lists(st.floats(-1e300, 1e300), min_size=1, max_size=40),
    st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=40),
    st.lists(st.integers(0, 3), min_size=1, max_size=40),
)
_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "stattest": st.sampled_from(sorted(STATTESTS)),
        "num_stattest": st.sampled_from(["ks", "wasserstein", "anderson", "es", "t_test", "ed"]),
        "cat_stattest": st.sampled_from(["chisquare", "z", "TVD", "psi", "hellinger"]),
        "stattest_threshold": st.floats(0, 1),
        "drift_share": st.floats(0, 1),
    },
)


@st.composite
def _tables(draw: Any) -> dict[str, list[Any]]:
    names = draw(st.lists(st.sampled_from(["p", "q", "r"]), min_size=1, max_size=3, unique=True))
    n = draw(st.integers(0, 40))
    return {name: (draw(_COLUMN) * 41)[:n] for name in names}


@settings(max_examples=150, deadline=None)
@given(_tables(), _tables(), _OPTIONS)
@example(  # found by this test: scipy's anderson_ksamp raised IndexError on one value a side
    reference={"p": [None], "r": [False]},
    current={"p": [None], "r": [1.0], "q": [None]},
    options={
        "stattest": "TVD",
        "drift_share": 0.0,
        "stattest_threshold": 0.0,
        "cat_stattest": "chisquare",
        "num_stattest": "anderson",
    },
)
def test_any_input_gives_a_report_or_a_clear_error(
    reference: dict[str, list[Any]], current: dict[str, list[Any]], options: dict[str, Any]
) -> None:
    try:
        report = evaluate(reference, current, **options)
    except (DataError, OptionsError) as err:
        message = str(err)
    else:
        message = ""
    if message:
        return
    for column in report["columns"].values():
        assert column["score"] is None or math.isfinite(column["score"])
        assert isinstance(column["drift_detected"], bool)
    dataset = report["dataset"]
    assert dataset["number_of_columns"] == len(report["columns"]) > 0
    import json

    json.dumps(report, allow_nan=False)  # serialisable as strict JSON
