"""The parser against the OpenMetrics conformance cases (tests/fixtures/openmetrics-conformance).

Every valid case must give the samples (name, labels, value) prometheus_client's strict
OpenMetrics parser gives; every invalid one must end in ParseError or in a parse (our
parser is lenient where model servers are), never in another exception.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from node_exporter_ml.serving.parse import ParseError, parse_exposition

CASES = Path(__file__).parent / "fixtures" / "openmetrics-conformance" / "parsers"
ALL = sorted(p.name for p in CASES.iterdir() if (p / "test.json").is_file())
VALID = [c for c in ALL if json.loads((CASES / c / "test.json").read_text())["shouldParse"]]
INVALID = [c for c in ALL if c not in VALID]

Sample = tuple[str, tuple[tuple[str, str], ...], float | str]


def _text(case: str) -> str:
    return (CASES / case / "metrics").read_bytes().decode("utf-8", errors="surrogateescape")


def _value(v: float) -> float | str:
    return "NaN" if math.isnan(v) else float(v)


def _ours(text: str) -> list[Sample]:
    exp = parse_exposition(text)
    return sorted(
        (n, tuple(sorted(labels.items())), _value(v))
        for fam in exp.families.values()
        for n, labels, v in fam.samples
    )


def _strict(text: str) -> list[Sample]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), _value(s.value))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    )


def test_the_suite_is_all_there():
    assert len(ALL) == 211
    assert len(VALID) == 44
    assert (CASES.parent / "LICENSE").is_file()


@pytest.mark.parametrize("case", VALID)
def test_valid_case_gives_the_strict_parsers_samples(case):
    text = _text(case)
    assert _ours(text) == _strict(text)


@pytest.mark.parametrize("case", INVALID)
def test_invalid_case_ends_in_parse_error_or_a_parse(case):
    text = _text(case)
    with pytest.raises(ValueError):  # noqa: PT011 - the strict parser agrees it is invalid
        _strict(text)
    with contextlib.suppress(ParseError):
        parse_exposition(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'a_total 0 123 # {a="b"} 0.5\n',
            [("a_total", (), 0.0)],
            id="no labels, timestamp, exemplar",
        ),
        pytest.param(
            'a_total 7 # {trace_id="x{y}"} 1 1.5\n',
            [("a_total", (), 7.0)],
            id="no labels, exemplar with a brace in its value",
        ),
        pytest.param(
            'a_bucket{le="1"} 3 # {a="b"} 0.5\n',
            [("a_bucket", (("le", "1"),), 3.0)],
            id="labels and exemplar",
        ),
        pytest.param(
            "a 1 0\na 2 0\na 3 1\n",
            [("a", (), 1.0), ("a", (), 3.0)],
            id="same series at the same instant: first kept",
        ),
        pytest.param(
            "a 1 0\na 2 0.0000000001\n",
            [("a", (), 1.0)],
            id="timestamps equal at nanosecond precision",
        ),
    ],
)
def test_exemplars_and_timestamps(text, expected):
    assert _ours(text) == expected


@pytest.mark.parametrize(
    "text",
    ["a 1 1_000\n", "a 1 nan\n", "a 1 x\n", "a 1 +Inf\n"],
    ids=["underscore", "nan", "word", "infinite"],
)
def test_bad_timestamps_are_parse_errors(text):
    with pytest.raises(ParseError):
        parse_exposition(text)
