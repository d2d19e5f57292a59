"""The metrics never stop: no upload, collector, enricher or renderer can freeze /metrics.

Issue 11, Critical: a lone surrogate in an uploaded string used to make every later render
raise UnicodeEncodeError, killing the sampler loop while /healthz kept answering 200.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml import agent as agent_module
from node_exporter_ml.agent import Agent
from node_exporter_ml.collectors.base import BlockingCollector
from node_exporter_ml.collectors.drift import drift_families
from node_exporter_ml.drift.service import ModelResult
from node_exporter_ml.drift.store import Window
from node_exporter_ml.snapshot import Snapshot
from node_exporter_ml.textformat import LabelCache, render_openmetrics, render_text
from node_exporter_ml.web import build_app
from tests.drift_helpers import app_for, make_rows, running_service
from tests.helpers import CountingCollector, FailingCollector, config, registry

SURROGATE = "\ud800"


@pytest.fixture
async def drift_service(tmp_path: Path):
    async with running_service(
        str(tmp_path / "state"), interval=3600, window=Window(rows=100)
    ) as svc:
        yield svc


@pytest.fixture
async def drift_client(aiohttp_client, drift_service):
    client = await aiohttp_client(app_for(drift_service))
    ref = make_rows(50, seed=1, ids=True)
    resp = await client.put("/api/v1/models/m/reference", json={"rows": ref})
    assert resp.status == 201, await resp.text()
    return client


def _json(text: str) -> bytes:
    # json.dumps writes a lone surrogate as the \\ud800 escape, as a hostile client would.
    return text.encode("ascii")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(
            "/api/v1/models/m/observations",
            '{"rows":[{"amount":1,"\\ud800":1}]}',
            id="surrogate in a column name",
        ),
        pytest.param(
            "/api/v1/models/m/observations",
            '{"rows":[{"amount":1,"prediction":"a\\udfff"}]}',
            id="surrogate in a prediction",
        ),
        pytest.param(
            "/api/v1/models/m/observations",
            '{"rows":[{"amount":1,"country":"\\uDC00x"}]}',
            id="surrogate in a feature value",
        ),
        pytest.param(
            "/api/v1/models/m/labels", '{"labels":[{"id":"r1","label":"\\ud800"}]}', id="label"
        ),
        pytest.param(
            "/api/v1/models/m/labels", '{"labels":[{"id":"\\ud801","label":"x"}]}', id="id"
        ),
    ],
)
async def test_strings_utf8_cannot_hold_are_refused(drift_client, path, body):
    resp = await drift_client.post(
        path, data=_json(body), headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert "surrogate" in (await resp.json())["error"]


async def test_reference_with_a_surrogate_is_refused_and_pairs_are_fine(drift_client):
    bad = '{"rows":[{"a":1,"b":"\\ud800"},{"a":2,"b":"x"}]}'
    resp = await drift_client.put(
        "/api/v1/models/n/reference",
        data=_json(bad),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400
    # A proper surrogate pair is one character (an emoji) and stays accepted.
    good = '{"rows":[{"amount":1,"country":"\\ud83d\\ude00"}]}'
    resp = await drift_client.post(
        "/api/v1/models/m/observations",
        data=_json(good),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("render", [render_text, render_openmetrics])
def test_rendering_survives_strings_utf8_cannot_hold(render):
    # Stored before this fix (or by any other path): the output escapes, never raises.
    gauge = GaugeMetricFamily("nodeml_test_value", "A value.", labels=["feature"])
    gauge.add_metric([f"a{SURROGATE}b"], 1.0)
    gauge.add_metric(["plain"], 2.0)
    hist = GaugeHistogramMetricFamily("nodeml_test_hist", "A gauge histogram.", labels=["c"])
    hist.add_metric([SURROGATE], [("1", 1.0), ("+Inf", 2.0)], gsum_value=1.5)
    body = render([gauge, hist], LabelCache())
    text = body.decode("utf-8")
    assert 'feature="a?b"' in text
    assert 'feature="plain"' in text
    assert 'c="?"' in text


def test_drift_results_with_surrogates_still_render():
    report = {
        "columns": {SURROGATE: {"stattest": "ks", "score": 0.5, "threshold": 0.05}},
        "labels": {
            "count": 1,
            "classes": {SURROGATE: {"precision": 1.0, "recall": 1.0}},
            "confusion": [{"actual": SURROGATE, "predicted": "x", "count": 1}],
        },
    }
    result = ModelResult("m", (1, 1, 1), 1.0, 0.1, report)
    text = render_text(drift_families([result]), LabelCache()).decode()
    parsed = {f.name for f in text_string_to_metric_families(text)}
    assert {"nodeml_drift_score", "nodeml_drift_confusion_observations"} <= parsed


# --- the sampler survives every stage ---------------------------------------------------------


class RaisingFamilies(BlockingCollector):
    """families() raises before yielding anything (a plain function, not a generator)."""

    name = "raising_families"

    def update(self, previous: Snapshot | None) -> int:
        return 1

    def families(self, data: object, snapshot: Snapshot) -> Iterable[Metric]:
        raise KeyError("bug in families")


class MalformedSample(BlockingCollector):
    """A family whose sample cannot be formatted (a string value)."""

    name = "malformed"

    def update(self, previous: Snapshot | None) -> int:
        return 1

    def families(self, data: object, snapshot: Snapshot) -> Iterable[Metric]:
        fam = GaugeMetricFamily("nodeml_test_malformed", "Broken.", labels=["x"])
        fam.add_sample("nodeml_test_malformed", {"x": "1"}, "not a number")  # type: ignore[arg-type]
        return [fam]


def _broken_enricher(snapshot: Snapshot) -> Snapshot:
    raise RuntimeError("bug in an enricher")


async def _scrape(client) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return await resp.text()


async def _until(predicate, seconds=5.0):
    for _ in range(int(seconds / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_sampler_survives_failures_at_every_stage(aiohttp_client, caplog):
    classes = (CountingCollector, FailingCollector, RaisingFamilies, MalformedSample)
    agent = Agent(
        config(*(c.name for c in classes), interval=0.05),
        registry=registry(*classes),
        enrichers=[_broken_enricher],
        process_metrics=False,
    )
    client = await aiohttp_client(build_app(agent))
    await _until(lambda: _ok(client, "/readyz"))
    text = await _scrape(client)
    assert 'nodeml_collector_success{collector="counting"} 1.0' in text
    assert 'nodeml_collector_success{collector="failing"} 0.0' in text
    assert 'nodeml_collector_success{collector="raising_families"} 0.0' in text
    assert "nodeml_test_thing_value" in text
    assert "nodeml_test_malformed" not in text  # left out, the rest served

    # The renderer itself raises for a few ticks: the loop goes on, the old body is served.
    real = agent.renderer.render
    failures = []

    def flaky(snapshot, formats=((False, False),)):
        if len(failures) < 3:
            failures.append(1)
            raise MemoryError("renderer blew up")
        return real(snapshot, formats)

    agent.renderer.render = flaky  # type: ignore[method-assign]
    before = agent.rendered
    await _until(lambda: _true(len(failures) == 3))
    assert (await client.get("/metrics")).status == 200
    await _until(lambda: _true(agent.rendered is not before))
    assert not agent._task.done()  # type: ignore[union-attr]
    assert "sampler loop crashed" not in caplog.text
    # Each persistent failure is logged once, not every tick.
    assert caplog.text.count("correlation step _broken_enricher failed") <= 2


async def _ok(client, path) -> bool:
    return (await client.get(path)).status == 200


async def _true(value: bool) -> bool:
    return value


async def test_probes_fail_when_the_snapshot_goes_stale(aiohttp_client, monkeypatch):
    agent = Agent(
        config(CountingCollector.name, interval=0.05),
        registry=registry(CountingCollector),
        process_metrics=False,
    )
    client = await aiohttp_client(build_app(agent))
    await _until(lambda: _ok(client, "/readyz"))
    assert (await client.get("/healthz")).status == 200

    def broken(snapshot, formats=((False, False),)):
        raise RuntimeError("renderer stuck")

    monkeypatch.setattr(agent.renderer, "render", broken)
    limit = agent_module.STALE_TICKS * 0.05
    await asyncio.sleep(limit + 0.2)
    for path in ("/healthz", "/readyz"):
        resp = await client.get(path)
        assert resp.status == 503, path
        assert "stale" in await resp.text()
    # /metrics still serves the last good snapshot; its timestamp tells how old it is.
    assert (await client.get("/metrics")).status == 200
    monkeypatch.undo()
    await _until(lambda: _ok(client, "/healthz"))


async def test_page_of_a_stored_result_with_surrogates_renders(drift_client, drift_service):
    # As after a restart with a result stored before the API refused such strings.
    svc = drift_service
    rows = make_rows(30, seed=3)
    assert (
        await drift_client.post("/api/v1/models/m/observations", json={"rows": rows})
    ).status == 200
    result = await svc.current_result("m")
    report = dict(result.report)
    report["columns"] = {f"x{SURROGATE}": {"stattest": "ks", "score": 0.5, "threshold": 0.05}}
    svc._latest["m"] = ModelResult("m", result.version, 1.0, 0.1, report)
    resp = await drift_client.get("/drift/m")
    assert resp.status == 200
    assert "x?" in await resp.text()
