"""Boundaries of textformat.py that mutation testing found untested (issue 19).

The module's contract has two halves: output byte-identical to client_python (the property
test in test_textformat.py), and client_python NOT called for plain gauge and counter
families, whose label strings are formatted once and reused (the reason it exists,
bench/nvml_tick.py). Mutants that sent every family to client_python, or sent a family with a
timestamp or an exemplar down the fast path, passed; these tests hold both halves.
"""

from __future__ import annotations

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.samples import Exemplar

from node_exporter_ml import textformat
from node_exporter_ml.textformat import LabelCache, render_openmetrics, render_text


class _View:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _plain() -> list[Metric]:
    gauge = GaugeMetricFamily("nodeml_g", "A gauge.", labels=["gpu", "uuid"])
    gauge.add_metric(["0", "GPU-a"], 1.5)
    counter = CounterMetricFamily("nodeml_c", "A counter.", labels=["pid"])
    counter.add_metric(["7"], 3.0)
    return [gauge, counter]


def test_plain_families_never_reach_client_python(monkeypatch: pytest.MonkeyPatch) -> None:
    expected_text = generate_latest(_View(_plain()))
    expected_om = generate_openmetrics(_View(_plain()))

    def refuse(*_args: object) -> bytes:
        raise AssertionError("a plain gauge or counter went to client_python")

    monkeypatch.setattr(textformat, "generate_latest", refuse)
    monkeypatch.setattr(textformat, "generate_openmetrics", refuse)
    cache = LabelCache()
    assert render_text(_plain(), cache) == expected_text
    assert render_openmetrics(_plain(), cache) == expected_om


def test_label_strings_come_from_the_cache() -> None:
    cache = LabelCache()
    render_text(_plain(), cache)
    key = (("gpu", "0"), ("uuid", "GPU-a"))
    assert cache.text[key] == '{gpu="0",uuid="GPU-a"}'
    cache.text[key] = '{from="cache"}'  # what a second render must reuse, not rebuild
    assert b'nodeml_g{from="cache"} 1.5\n' in render_text(_plain(), cache)


def _timestamped() -> list[Metric]:
    gauge = GaugeMetricFamily("nodeml_t", "Has a timestamp.", labels=["a"])
    gauge.add_metric(["x"], 2.0, timestamp=1_700_000_000.5)
    return [gauge]


def _with_exemplar() -> list[Metric]:
    counter = CounterMetricFamily("nodeml_e", "Has an exemplar.", labels=["a"])
    counter.add_metric(["x"], 4.0)
    sample = counter.samples[0]
    counter.samples[0] = sample._replace(exemplar=Exemplar({"trace_id": "abc"}, 0.25, 1.0))
    return [counter]


@pytest.mark.parametrize("families", [_timestamped, _with_exemplar], ids=["timestamp", "exemplar"])
def test_timestamps_and_exemplars_are_kept(families) -> None:  # type: ignore[no-untyped-def]
    # the fast path writes neither: such families must go to client_python, byte for byte
    assert render_text(families(), LabelCache()) == generate_latest(_View(families()))
    om = render_openmetrics(families(), LabelCache())
    assert om == generate_openmetrics(_View(families()))


@pytest.mark.parametrize("render", [render_text, render_openmetrics], ids=["text", "openmetrics"])
def test_cache_cleared_only_above_its_bound(render) -> None:  # type: ignore[no-untyped-def]
    gauge = GaugeMetricFamily("nodeml_g", "A gauge.", labels=["pid"])
    for pid in ("1", "2"):
        gauge.add_metric([pid], 1.0)
    cache = LabelCache(max_entries=2)
    render([gauge], cache)
    held = cache.text if render is render_text else cache.openmetrics
    assert len(held) == 2  # exactly at the bound: kept
    gauge.add_metric(["3"], 1.0)
    render([gauge], cache)
    assert len(held) == 0  # above it: forgotten


def _histogram(help_text: str, gpu: str) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    hist = HistogramMetricFamily("nodeml_h_seconds", help_text, labels=["gpu"])
    hist.add_metric([gpu], buckets=[("0.1", 1.0), ("+Inf", 2.0)], sum_value=0.3)
    return hist


@pytest.mark.parametrize(
    ("render", "reference"),
    [(render_text, generate_latest), (render_openmetrics, generate_openmetrics)],
)
def test_a_lone_surrogate_in_a_client_python_family_is_written_as_a_question_mark(
    render, reference
) -> None:
    # A histogram goes to client_python, which cannot encode a lone surrogate: the family is
    # rendered again with each one as "?", in HELP and in label values alike.
    got = render([_histogram("Latency \ud800 here.", "0\udfff")], LabelCache())
    assert got == reference(_View([_histogram("Latency ? here.", "0?")]))


def test_a_family_that_cannot_be_formatted_is_left_out_and_logged_once_each() -> None:
    import logging

    from prometheus_client.samples import Sample

    def broken(name: str) -> Metric:
        family = GaugeMetricFamily(name, "Broken.")
        family.samples.append(Sample(name, {}, "not a number"))  # a collector's bug
        return family

    class Records(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    # On the module's own logger, whatever the logging configuration around the test.
    first_run, second_run = Records(), Records()
    families = [broken("nodeml_bad_a"), *_plain(), broken("nodeml_bad_b")]
    for name in ("nodeml_bad_a", "nodeml_bad_b"):  # the once-logger is the module's: a
        textformat._ONCE.forget(name)  # second run of this test in one process starts afresh
    textformat.log.addHandler(first_run)
    try:
        first = render_text(families, LabelCache())
    finally:
        textformat.log.removeHandler(first_run)
    textformat.log.addHandler(second_run)
    try:
        again = render_text(families, LabelCache())
    finally:
        textformat.log.removeHandler(second_run)
    assert first == again == generate_latest(_View(_plain()))
    assert not second_run.records  # each failure is logged the first time only
    logged = first_run.records
    expected = {"formatting nodeml_bad_a failed", "formatting nodeml_bad_b failed"}
    assert {r.getMessage() for r in logged} == expected
    assert {r.getMessage() for r in logged if r.exc_info} == expected  # with the traceback
    assert {r.levelno for r in logged} == {logging.ERROR}
