from __future__ import annotations

import gzip

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.exposition import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    Renderer,
    accepts_gzip,
    negotiate,
    wants_openmetrics,
)
from node_exporter_ml.snapshot import CollectorResult, Snapshot
from tests.helpers import BrokenRenderCollector, CountingCollector, config


@pytest.mark.parametrize(
    ("accept", "om"),
    [
        ("", False),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-text; version=1.0.0", True),
        # What Prometheus 2.x sends: OpenMetrics preferred, text as fallback.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        ("text/plain;q=1,application/openmetrics-text;q=0.5", False),
        ("*/*", False),
    ],
)
def test_wants_openmetrics(accept, om):
    assert wants_openmetrics(accept) is om


@pytest.mark.parametrize(
    ("value", "gz"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("identity", False),
        ("", False),
        ("gzip;q=0", False),
        ("*", True),
        ("br;q=1.0, gzip;q=0.8", True),
    ],
)
def test_accepts_gzip(value, gz):
    assert accepts_gzip(value) is gz


def _snapshot(data, taken_at=1_700_000_000.0):
    result = CollectorResult("counting", True, 0.001, data)
    return Snapshot(taken_at=taken_at, results={"counting": result})


def test_series_of_vanished_things_disappear():
    collector = CountingCollector(CollectContext(config()))
    renderer = Renderer([collector], interval=5, process_metrics=False)
    first = renderer.render(_snapshot({"thing0": 1.0, "thing1": 2.0})).text.decode()
    second = renderer.render(_snapshot({"thing1": 3.0})).text.decode()
    assert 'nodeml_test_thing_value{thing="thing0"} 1.0' in first
    assert 'thing="thing0"' not in second
    assert 'nodeml_test_thing_value{thing="thing1"} 3.0' in second


def test_rendered_formats_are_consistent_and_precompressed():
    collector = CountingCollector(CollectContext(config()))
    rendered = Renderer([collector], interval=5).render(_snapshot({"thing0": 1.0}))
    assert gzip.decompress(rendered.text_gzip) == rendered.text
    assert gzip.decompress(rendered.openmetrics_gzip) == rendered.openmetrics
    assert rendered.openmetrics.endswith(b"# EOF\n")
    names = {f.name for f in text_string_to_metric_families(rendered.text.decode())}
    assert {
        "nodeml_collector_success",
        "nodeml_snapshot_timestamp_seconds",
        "nodeml_build_info",
        "process_resident_memory_bytes",
        "nodeml_test_thing_value",
    } <= names
    fmt, ctype = negotiate({"Accept": "application/openmetrics-text"})
    body, gz = rendered.ensure(fmt), fmt[1]
    assert (body, ctype, gz) == (rendered.openmetrics, CONTENT_TYPE_OPENMETRICS, False)
    fmt, ctype = negotiate({"Accept-Encoding": "gzip"})
    body, gz = rendered.ensure(fmt), fmt[1]
    assert (body, ctype, gz) == (rendered.text_gzip, CONTENT_TYPE_TEXT, True)


def test_failed_collector_has_success_0_and_no_series():
    collector = CountingCollector(CollectContext(config()))
    snap = Snapshot(
        taken_at=1.0,
        results={"counting": CollectorResult("counting", False, 0.5, None, "boom")},
    )
    text = Renderer([collector], interval=5, process_metrics=False).render(snap).text.decode()
    assert 'nodeml_collector_success{collector="counting"} 0.0' in text
    assert 'nodeml_collector_duration_seconds{collector="counting"} 0.5' in text
    assert "nodeml_test_thing_value" not in text


def test_a_rendering_bug_in_one_collector_spares_the_others():
    ctx = CollectContext(config())
    counting, broken = CountingCollector(ctx), BrokenRenderCollector(ctx)
    snap = Snapshot(
        taken_at=1.0,
        results={
            "counting": CollectorResult("counting", True, 0.1, {"thing0": 1.0}),
            "broken_render": CollectorResult("broken_render", True, 0.1, 1),
        },
    )
    text = Renderer([counting, broken], interval=5, process_metrics=False).render(snap).text
    assert b"nodeml_test_thing_value" in text
    assert b"nodeml_test_half" not in text
