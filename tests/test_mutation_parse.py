"""Boundaries of serving/parse.py that mutation testing found untested (issue 19).

`parse_labels` has a fast path for label sets without escapes (split on quotes) and the
regular-expression walk for the rest. The differential tests in test_serving_parse.py prove
both give the same answer, so a mutant that broke the fast path (and let every label set
fall through to the slow one) passed them: these tests hold that plain label sets are
parsed without the walk (the reason the fast path exists: bench/serving.py), and that what
the fast path must refuse still parses, through the walk.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.serving import parse
from node_exporter_ml.serving.parse import (
    LABEL_CACHE_LIMIT,
    ParseError,
    parse_exposition,
    parse_labels,
)


class _Refuse:
    def match(self, *_args: Any) -> None:
        raise AssertionError("a plain label set went to the slow path")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('a="x",b="y"', {"a": "x", "b": "y"}),
        ('a="x",b="y",', {"a": "x", "b": "y"}),  # trailing comma
        (' a = "x" , b="y" ', {"a": "x", "b": "y"}),  # blanks around names and signs
        ('le="+Inf"', {"le": "+Inf"}),
        ('a="x,y}z"', {"a": "x,y}z"}),  # commas and braces inside a value
        ('model="llama-3.1:8b",a=""', {"model": "llama-3.1:8b", "a": ""}),
        ("", {}),
    ],
    ids=["two", "trailing comma", "blanks", "+Inf", "comma and brace", "empty value", "none"],
)
def test_plain_label_sets_take_the_fast_path(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: dict[str, str]
) -> None:
    monkeypatch.setattr(parse, "_LABEL", _Refuse())
    assert parse_labels(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('a="x\\"y"', {"a": 'x"y'}),  # an escaped quote: the quotes no longer pair up
        ('a="x\\\\",b="y"', {"a": "x\\", "b": "y"}),
        ('a="x" ,, b="y"', None),  # two commas: not a label set
        ('a="x" b="y"', None),  # no comma between labels
        ('a "x"', None),  # no equals sign
        ('9a="x"', None),  # not a label name
        ('a="x",b', None),  # a name with no value
    ],
    ids=[
        "escaped quote",
        "escaped backslash",
        "two commas",
        "no comma",
        "no equals",
        "bad name",
        "dangling name",
    ],
)
def test_what_the_fast_path_refuses(text: str, expected: dict[str, str] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="bad label set"):
            parse_labels(text)
    else:
        assert parse_labels(text) == expected


# --- second pass (issue 19): names, lookups, the cache bound, line numbers -------------------


@pytest.mark.parametrize(
    "text",
    [
        '{a="b"} 2\n',
        '# TYPE x gauge\n{a="b"} 2\n',
        '# TYPE x gauge\nx 1\n# TYPE y gauge\n{a="b"} 2\n',
    ],
    ids=["first line", "after a TYPE", "after another family"],
)
def test_a_sample_without_a_name_is_a_parse_error(text: str) -> None:
    # prometheus_client's text parser rejects these too; before issue 19 the first was
    # dropped and the others filed under the family declared above them
    with pytest.raises(ValueError, match=r"^$"):  # a bare ValueError, no message
        list(text_string_to_metric_families(text))
    lineno = text.count("\n")
    with pytest.raises(ParseError, match=f"line {lineno}: bad metric name ''"):
        parse_exposition(text)


@pytest.mark.parametrize(
    ("text", "lineno"),
    [("m one\n", 1), ("# HELP m x\n\nm 1\nm two\n", 4), ("ok 1\n  \n9bad 1\n", 3)],
)
def test_parse_errors_name_the_line(text: str, lineno: int) -> None:
    with pytest.raises(ParseError, match=f"^line {lineno}: "):
        parse_exposition(text)


def test_counter_found_under_either_spelling() -> None:
    exp = parse_exposition("# TYPE a counter\na_total 1\n# TYPE b_total counter\nb_total 2\n")
    assert exp.get("a") is exp.families["a"]
    assert exp.get("a_total") is exp.families["a"]
    assert exp.get("b") is exp.families["b_total"]
    assert exp.get("b_total") is exp.families["b_total"]
    assert exp.get("c") is None
    assert exp.get("c_total") is None
    assert exp.get("_total") is None


def test_series_picks_the_samples_of_one_suffix() -> None:
    text = (
        "# TYPE h histogram\n"
        'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n'
        "# TYPE g gauge\n"
        'g{a="x"} 5\ng{a="y"} 6\n'
    )
    exp = parse_exposition(text)
    assert list(exp.families["g"].series()) == [({"a": "x"}, 5.0), ({"a": "y"}, 6.0)]
    assert list(exp.families["h"].series("_count")) == [({}, 2.0)]
    assert [v for _, v in exp.families["h"].series("_bucket")] == [1.0, 2.0]
    assert list(exp.families["h"].series()) == []


def test_names_are_the_families_with_samples_and_text_is_not_openmetrics() -> None:
    exp = parse_exposition("# TYPE a gauge\n# TYPE b gauge\nb 1\nc 2\n")
    assert list(exp.names()) == ["b", "c"]
    assert exp.openmetrics is False


def test_the_label_cache_is_cleared_only_past_its_limit() -> None:
    full: dict[str, tuple[str, parse.Labels]] = {
        f'x{{i="{i}"}}': ("x", {"i": str(i)}) for i in range(LABEL_CACHE_LIMIT)
    }
    parse_exposition('a{x="1"} 1\n', full)
    assert len(full) == LABEL_CACHE_LIMIT + 1  # at the limit: kept, and the new set added
    parse_exposition('a{x="2"} 1\n', full)
    assert len(full) == 1  # past it: cleared first


# --- third pass: sample timestamps (the key of "the same series at the same instant") and
# label sets the fast split cannot take, against prometheus_client's parser ----------------


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("0", (0, 0)),
        ("1700000000", (1_700_000_000, 0)),
        ("-5", (-5, 0)),
        ("1.5", (1, 500_000_000)),
        ("1.05", (1, 50_000_000)),
        ("1.123456789", (1, 123_456_789)),
        ("1.1234567891", (1, 123_456_789)),  # beyond nanoseconds: cut
        ("0.000000001", (0, 1)),
        ("-1.5", (-1, -500_000_000)),
        ("-0.5", (0, -500_000_000)),
        ("1e3", (1000, 0)),
        ("1.5e0", (1, 500_000_000)),
        ("-1.5e0", (-1, -500_000_000)),
        ("1e-9", (0, 1)),
        (".5", (0, 500_000_000)),
        ("5.", (5, 0)),
        ("1.999e0", (1, 999_000_000)),
        ("1.9999999999", (1, 999_999_999)),  # cut, not rounded up to the next second
        # decimals are exact where a float is not: a 2026 epoch to the nanosecond, integers
        # past 2**53 (a nanosecond epoch)
        ("1767000000.123456789", (1_767_000_000, 123_456_789)),
        ("-1767000000.123456789", (-1_767_000_000, -123_456_789)),
        ("9007199254740993", (9_007_199_254_740_993, 0)),
        ("-9007199254740993", (-9_007_199_254_740_993, 0)),
    ],
)
def test_timestamp_to_seconds_and_nanoseconds(token: str, expected: tuple[int, int]) -> None:
    assert parse._timestamp(token) == expected


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("1.5", "1.5e0", True),
        ("1", "1.0", True),
        ("10", "1e1", True),
        ("1.5", "1.5000000001", True),  # equal at nanosecond precision
        ("1.5", "1.500000001", False),
        ("-1.5", "-1.5e0", True),
        ("0.5", "-0.5", False),
        ("1", "2", False),
        ("1.25", "1.2", False),
    ],
)
def test_which_timestamps_are_the_same_instant(first: str, second: str, same: bool) -> None:
    exp = parse_exposition(f"a 1 {first}\na 2 {second}\n")
    assert [v for _, v in exp.families["a"].series()] == ([1.0] if same else [1.0, 2.0])


@pytest.mark.parametrize("token", ["1_0", "1.5_0", "inf", "-inf", "nan", "x", "1.5.5", "0x10"])
def test_timestamps_that_are_not_numbers(token: str) -> None:
    with pytest.raises(ValueError, match=r"bad timestamp|could not convert"):
        parse._timestamp(token)


@pytest.mark.parametrize("token", ["1_" + "0" * 50, "0" * 40 + "1e999"])
def test_a_bad_timestamp_is_shown_cut_to_40_characters(token: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_exposition(f"a 1 {token}\n")
    assert str(caught.value) == f"line 1: bad timestamp {token[:40]!r}"


@pytest.mark.parametrize(
    "line",
    [
        'm{a="x}y"} 1',
        'm{a="x\\"}y"} 1',
        'm{a="x\\\\"} 1',
        'm{a="x\\\\",b="}"} 1',
        'm{a="}",b="{"} 2',
        'm{a="\\"}\\""} 3',
        'm{a="}"}1',
        'm{a="x\\n}"} 1',
        'm{a="\\\\\\"}"} 1',
        'm{a="x\\\\\\\\"} 1',
        'm{a="}"} 1 123',
        'm{a="x\\"y"} 1',
        'm{a="x\\"y",b="z"} 1',
    ],
)
def test_label_sets_with_braces_and_escapes_as_prometheus_client_reads_them(line: str) -> None:
    (family,) = text_string_to_metric_families(line + "\n")
    expected = [(s.name, s.labels, float(s.value)) for s in family.samples]
    exp = parse_exposition(line + "\n")
    got = [(n, dict(labels), v) for f in exp.families.values() for n, labels, v in f.samples]
    assert got == expected


@pytest.mark.parametrize("line", ['m{a="x}', 'm{a="}"', 'm{a="\\\\"}"} 1', 'm{a="\\"} 1'])
def test_unterminated_label_sets_are_parse_errors_as_in_prometheus_client(line: str) -> None:
    with pytest.raises(ValueError, match=r"could not convert|unterminated|bad label set"):
        list(text_string_to_metric_families(line + "\n"))
    with pytest.raises(ParseError, match=r"^line 1: "):
        parse_exposition(line + "\n")


def test_an_unterminated_label_set_says_so() -> None:
    with pytest.raises(ParseError) as caught:
        parse_exposition('ok 1\nm{a="x} 1\n')
    assert str(caught.value) == "line 2: unterminated label set"


# --- fourth pass: parse_exposition's survivors of the rerun --------------------------------


def _samples(text: str, cache: dict[str, tuple[str, parse.Labels]] | None = None) -> list[Any]:
    exp = parse_exposition(text, cache)
    return [(n, dict(labels), v) for f in exp.families.values() for n, labels, v in f.samples]


def _prometheus_client(text: str) -> list[Any]:
    fams = text_string_to_metric_families(text)
    return [(s.name, s.labels, float(s.value)) for f in fams for s in f.samples]


@pytest.mark.parametrize(
    "text",
    ["\tx 1\n", 'x{a="1"}12\n', 'x{a="1"}\t1\n', 'x{a="}"}12\n', '  x{a="1"} 1\n'],
    ids=[
        "tab indent",
        "no blank after brace",
        "tab after brace",
        "brace value, no blank",
        "blanks",
    ],
)
def test_blanks_around_samples_as_prometheus_client_reads_them(text: str) -> None:
    expected = _prometheus_client(text)
    cache: dict[str, tuple[str, parse.Labels]] = {}
    assert _samples(text, cache) == expected
    assert _samples(text, cache) == expected  # and again from the label cache


def test_a_label_set_with_a_brace_in_a_value_is_not_memoised() -> None:
    cache: dict[str, tuple[str, parse.Labels]] = {}
    parse_exposition('m{a="x}y"} 1\n', cache)
    assert cache == {}


def test_a_repeated_type_line_keeps_the_family_and_its_samples() -> None:
    exp = parse_exposition("x 1\n# TYPE x gauge\nx 2\n# TYPE x counter\nx 3\n")
    assert list(exp.families) == ["x"]
    assert exp.families["x"].type == "counter"
    assert [v for _, v in exp.families["x"].series()] == [1.0, 2.0, 3.0]


def test_samples_of_a_family_come_back_to_it_after_another() -> None:
    text = '# TYPE h histogram\nh_bucket{le="+Inf"} 2\n# TYPE g gauge\ng 1\nh_count 2\nh_sum 3\n'
    exp = parse_exposition(text)
    assert list(exp.families) == ["h", "g"]
    assert [n for n, _, _ in exp.families["h"].samples] == ["h_bucket", "h_count", "h_sum"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# TYPE 9x gauge\n", "line 1: bad TYPE line"),
        ("ok 1\n# TYPE x\n", "line 2: bad TYPE line"),
        ("m 1_000\n", "line 1: bad value '1_000'"),
        ("m 1_" + "0" * 50 + "\n", f"line 1: bad value {'1_' + '0' * 38!r}"),
        ("9" + "a" * 70 + " 1\n", f"line 1: bad metric name {'9' + 'a' * 59!r}"),
    ],
    ids=["bad TYPE name", "short TYPE", "underscore value", "long value", "long name"],
)
def test_parse_error_messages(text: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_exposition(text)
    assert str(caught.value) == message


def test_slow_path_label_set_may_end_in_blanks() -> None:
    # an escape sends the label set to the regular-expression walk, which must stop at the
    # blanks after the last comma as the fast split does
    assert parse_labels('a="x\\"y" ,  ') == {"a": 'x"y'}
    assert parse_labels('a="x\\"y",b="z"\t') == {"a": 'x"y', "b": "z"}


def test_openmetrics_brace_in_a_value_and_an_exemplar() -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om

    text = '# TYPE m counter\nm_total{a="x}y"} 1 # {t="z"} 2\n# EOF\n'
    expected = [(s.name, s.labels, float(s.value)) for f in om(text) for s in f.samples]
    assert _samples(text) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('m{a="1"} 2', ('a="1"', " 2")),
        ('m{a="1",b="2"}3 4', ('a="1",b="2"', "3 4")),
        ('m{a="x}y"} 1 # {t="z"} 2', ('a="x}y"', ' 1 # {t="z"} 2')),
        ('m{a="\\"}"} 1', ('a="\\"}"', " 1")),
        ("m{} 1", ("", " 1")),
    ],
)
def test_split_labels_returns_the_set_and_the_rest(line: str, expected: tuple[str, str]) -> None:
    assert parse._split_labels(line, line.index("{")) == expected
