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

from node_exporter_ml.serving import parse
from node_exporter_ml.serving.parse import parse_labels


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
