"""The series table: declarations turned into families, in order, None giving no sample."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from node_exporter_ml.series import Series, table_families
from node_exporter_ml.textformat import LabelCache, render_openmetrics, render_text


@dataclass(frozen=True)
class Row:
    used: float | None
    seconds: float
    modes: dict[str, float | None]


TABLE = (
    Series[Row]("nodeml_test_used_bytes", "gauge", "Bytes in use.", lambda r: r.used),
    Series[Row]("nodeml_test_busy_seconds_total", "counter", "Busy time.", lambda r: r.seconds),
    Series[Row](
        "nodeml_test_cpu_seconds_total",
        "counter",
        "CPU by mode.",
        labels=("mode",),
        each=lambda r: [((m,), v) for m, v in r.modes.items()],
    ),
)

ROWS = [
    ({"pid": "2", "comm": "b"}, Row(5.0, 1.5, {"user": 1.0, "system": None})),
    ({"pid": "1", "comm": "a"}, Row(None, 2, {"user": 3.0, "system": 4.0})),
]


def test_families_in_table_order_samples_in_row_order_none_skipped():
    # The text renderer sorts label names; the samples keep the row's labels, then their own.
    text = render_text(table_families(TABLE, ROWS), LabelCache()).decode()
    assert text == (
        "# HELP nodeml_test_used_bytes Bytes in use.\n"
        "# TYPE nodeml_test_used_bytes gauge\n"
        'nodeml_test_used_bytes{comm="b",pid="2"} 5.0\n'
        "# HELP nodeml_test_busy_seconds_total Busy time.\n"
        "# TYPE nodeml_test_busy_seconds_total counter\n"
        'nodeml_test_busy_seconds_total{comm="b",pid="2"} 1.5\n'
        'nodeml_test_busy_seconds_total{comm="a",pid="1"} 2.0\n'
        "# HELP nodeml_test_cpu_seconds_total CPU by mode.\n"
        "# TYPE nodeml_test_cpu_seconds_total counter\n"
        'nodeml_test_cpu_seconds_total{comm="b",mode="user",pid="2"} 1.0\n'
        'nodeml_test_cpu_seconds_total{comm="a",mode="user",pid="1"} 3.0\n'
        'nodeml_test_cpu_seconds_total{comm="a",mode="system",pid="1"} 4.0\n'
    )


def test_every_call_builds_fresh_families_and_empty_ones_stay():
    first = table_families(TABLE, ROWS)
    second = table_families(TABLE, ROWS[:1])
    assert first[0] is not second[0]
    assert [len(f.samples) for f in first] == [1, 2, 3]
    assert [len(f.samples) for f in second] == [1, 1, 1]
    assert [len(f.samples) for f in table_families(TABLE, [])] == [0, 0, 0]


def test_a_label_of_the_series_keeps_the_row_label_position_when_both_name_it():
    [fam] = table_families(TABLE[2:], [({"mode": "x", "pid": "1"}, Row(None, 0, {"user": 1}))])
    assert list(fam.samples[0].labels.items()) == [("mode", "user"), ("pid", "1")]


def test_unit_reaches_openmetrics():
    table = (
        Series[Row](
            "nodeml_test_busy_seconds_total", "counter", "Busy.", lambda r: 1, unit="seconds"
        ),
    )
    text = render_openmetrics(table_families(table, [({}, ROWS[0][1])]), LabelCache()).decode()
    assert "# UNIT nodeml_test_busy_seconds seconds\n" in text
    assert "nodeml_test_busy_seconds_total 1.0\n" in text


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="neither value nor each"),
        pytest.param({"value": lambda r: 1, "each": lambda r: []}, id="both"),
        pytest.param({"value": lambda r: 1, "labels": ("mode",)}, id="labels without each"),
    ],
)
def test_malformed_declarations_are_refused(kwargs):
    with pytest.raises(ValueError, match="nodeml_test_x"):
        Series[Row]("nodeml_test_x", "gauge", "x", **kwargs)
