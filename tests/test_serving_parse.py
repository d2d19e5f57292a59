"""The fast exposition parser against the format's quirks, and prometheus_client as reference."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.serving.parse import ParseError, parse_exposition, parse_labels
from tests.serving_fakes import SERVING_FIXTURES

FRAMEWORKS = sorted(p.name.removesuffix(".prom") for p in SERVING_FIXTURES.glob("*.prom"))


def _counter_name(name: str) -> str:
    return name.removesuffix("_total")


@pytest.mark.parametrize("fixture", FRAMEWORKS)
def test_same_samples_as_prometheus_client(fixture):
    text = (SERVING_FIXTURES / f"{fixture}.prom").read_text(encoding="utf-8")
    ours = sorted(
        (_counter_name(n), tuple(sorted(labels.items())), v)
        for fam in parse_exposition(text).families.values()
        for n, labels, v in fam.samples
    )
    theirs = sorted(
        (_counter_name(s.name), tuple(sorted(s.labels.items())), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    )
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a[:2] == b[:2]
        assert a[2] == b[2] or (math.isnan(a[2]) and math.isnan(b[2]))


@pytest.mark.parametrize(
    ("line", "name", "labels", "value"),
    [
        ('vllm:x_total{model_name="m"} 3', "vllm:x_total", {"model_name": "m"}, 3.0),
        (":tensorflow:serving:request_count{} 7", ":tensorflow:serving:request_count", {}, 7.0),
        ('R2XX{Level="Host",Host="h",} 1.5E3', "R2XX", {"Level": "Host", "Host": "h"}, 1500.0),
        ('q{quantile="0.5"} Nan', "q", {"quantile": "0.5"}, math.nan),
        ('b{le="+Inf"} +Inf', "b", {"le": "+Inf"}, math.inf),
        ('esc{p="a\\"}b\\\\c\\nd"} 1', "esc", {"p": 'a"}b\\c\nd'}, 1.0),
        ('brace{p="x}y",q="z"} 2', "brace", {"p": "x}y", "q": "z"}, 2.0),
        ("ts_metric 4 1700000000000", "ts_metric", {}, 4.0),
        ('om_total{a="b"} 1.0 # {trace_id="abc"} 0.5 1700000000.0', "om_total", {"a": "b"}, 1.0),
        ("   indented 5", "indented", {}, 5.0),
        ('spaced { a = "1" , b="2" } 6', "spaced", {"a": "1", "b": "2"}, 6.0),
    ],
    ids=[
        "colons in names",
        "leading colon and empty braces",
        "trailing comma and Java exponent",
        "Triton Nan",
        "infinite bound",
        "escapes",
        "quoted brace",
        "timestamp",
        "OpenMetrics exemplar",
        "leading blanks",
        "blanks around labels",
    ],
)  # fmt: skip
def test_sample_lines(line, name, labels, value):
    fam = next(iter(parse_exposition(line + "\n").families.values()))
    (got_name, got_labels, got_value) = fam.samples[0]
    assert got_name == name
    assert dict(got_labels) == labels
    assert got_value == value or (math.isnan(value) and math.isnan(got_value))


def test_families_group_by_type_even_out_of_order():
    text = "\n".join(
        [
            "# TYPE h histogram",
            'h_count{a="1"} 2',
            'h_sum{a="1"} 3',
            'h_bucket{a="1",le="+Inf"} 2',
            "# TYPE c counter",
            "c 4",
            "# TYPE h_created gauge",
            'h_created{a="1"} 1.7e9',
            "",
            "untyped_one 1",
        ]
    )
    exp = parse_exposition(text)
    assert list(exp.families) == ["h", "c", "h_created", "untyped_one"]
    assert [s[0] for s in exp.families["h"].samples] == ["h_count", "h_sum", "h_bucket"]
    assert exp.families["untyped_one"].type == "untyped"
    # counters are found under either spelling
    assert exp.get("c_total") is exp.families["c"]


def test_openmetrics_eof_and_counter_family():
    text = "# TYPE reqs counter\n# UNIT reqs requests\nreqs_total 5\nreqs_created 1.7e9\n# EOF\n"
    exp = parse_exposition(text)
    assert exp.openmetrics
    assert [s[0] for s in exp.families["reqs"].samples] == ["reqs_total", "reqs_created"]


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>nope</body></html>",
        '{"status": "ok"}',
        "metric_without_value\n",
        "m{a=b} 1\n",
        'm{a="x" 1\n',
        "m one\n",
        "m 1_000\n",
        "9starts_with_digit 1\n",
        "# TYPE x\n",
    ],
    ids=["html", "json", "no value", "unquoted label", "unterminated", "word value",
         "underscore number", "bad name", "short TYPE"],
)  # fmt: skip
def test_garbage_raises_parse_error(text):
    with pytest.raises(ParseError):
        parse_exposition(text)


def test_label_cache_is_reused_and_bounded():
    cache: dict = {}
    text = 'a{x="1"} 1\na{x="2"} 2\n'
    first = parse_exposition(text, cache)
    second = parse_exposition(text, cache)
    assert len(cache) == 2
    assert first.families["a"].samples[0][1] is second.families["a"].samples[0][1]


def test_parse_labels_rejects_junk():
    assert parse_labels('a="1",b="2",') == {"a": "1", "b": "2"}
    with pytest.raises(ValueError, match="bad label set"):
        parse_labels('a="1" junk')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('p="/v2/models/a,b=c/infer",code="200"', {"p": "/v2/models/a,b=c/infer", "code": "200"}),
        (' a = "1" , b = "2" , ', {"a": "1", "b": "2"}),
        ('a="",b="x"', {"a": "", "b": "x"}),
        ('a="x\\"y",b="z"', {"a": 'x"y', "b": "z"}),
    ],
    ids=["comma and equals in a value", "blanks everywhere", "empty value", "escaped quote"],
)  # fmt: skip
def test_parse_labels_fast_and_slow_paths(text, expected):
    assert parse_labels(text) == expected


@pytest.mark.parametrize("text", ['a="1"b="2"', '="1"', 'a="1",9b="2"', 'a "1"'])
def test_parse_labels_malformed(text):
    with pytest.raises(ValueError, match="bad label set"):
        parse_labels(text)


@pytest.mark.parametrize(
    "text",
    [
        "x\t1\n",
        "x\t1\t1700000000000\n",
        "# TYPE x gauge\nx \t 2\n",
        'x{a="b"}\t3\n',
        "# TYPE y_total counter\ny_total\t4\n",
    ],
)
def test_tabs_separate_tokens_as_in_prometheus_client(text):
    """The text format separates tokens by blanks, tabs included."""
    ours = {
        (name, tuple(sorted(labels.items())), value)
        for fam in parse_exposition(text).families.values()
        for name, labels, value in fam.samples
    }
    theirs = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert ours == theirs


def test_a_sample_without_a_value_names_what_is_missing():
    with pytest.raises(ParseError, match=r"^line 2: missing value$"):
        parse_exposition("x 1\ny\n")
