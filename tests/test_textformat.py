"""Our cached formatter writes exactly what client_python writes, in both formats."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.nvml import NvmlCollector
from node_exporter_ml.config import Config
from node_exporter_ml.nvml.replay import Replay
from node_exporter_ml.series import add_sample
from node_exporter_ml.snapshot import CollectorResult, Snapshot
from node_exporter_ml.textformat import LabelCache, render_openmetrics, render_text
from tests.serving_fakes import NVML_RECORDING


class _View:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def assert_identical(families: list[Metric], cache: LabelCache | None = None) -> None:
    cache = cache or LabelCache()
    for _ in range(2):  # the second pass is served from the label cache
        assert render_text(families, cache) == generate_latest(_View(families))
        assert render_openmetrics(families, cache) == generate_openmetrics(_View(families))


names = st.from_regex(r"\A[a-z_][a-z0-9_]{0,12}\Z")
label_names = st.one_of(names, st.sampled_from(["le", "quantile", "pid", "ünïcode", "a-b", "9x"]))
label_values = st.text(max_size=12)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.sampled_from([0.0, -0.0, 1e21, 123456789.0, 1e-7, math.inf, -math.inf]),
)


@st.composite
def families(draw) -> list[Metric]:
    out: list[Metric] = []
    for i in range(draw(st.integers(min_value=0, max_value=4))):
        kind = draw(st.sampled_from(["gauge", "counter", "info", "histogram", "created"]))
        name = f"{draw(names)}_{i}"
        doc = draw(st.text(max_size=20))
        keys = draw(st.lists(label_names, max_size=3, unique=True))
        series = draw(st.lists(st.tuples(*(label_values for _ in keys)), max_size=4))
        if kind == "gauge":
            fam: Metric = GaugeMetricFamily(name, doc)
        elif kind in ("counter", "created"):
            fam = CounterMetricFamily(name, doc)
        elif kind == "info":
            fam = InfoMetricFamily(name, doc, labels=keys)
            for vals in series:
                fam.add_metric(list(vals), {"extra": "x"})
            out.append(fam)
            continue
        else:
            fam = HistogramMetricFamily(name, doc, labels=keys)
            for vals in series:
                fam.add_metric(list(vals), [("1.0", 2.0), ("+Inf", 3.0)], 4.5)
            out.append(fam)
            continue
        for vals in series:
            add_sample(fam, dict(zip(keys, vals, strict=True)), draw(values))
            if kind == "created":
                fam.add_sample(name + "_created", dict(zip(keys, vals, strict=True)), 1.7e9)
        out.append(fam)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(families())
def test_identical_to_client_python_for_any_families(fams):
    assert_identical(fams)


def test_identical_for_the_real_nvml_exposition():
    doc = json.loads(NVML_RECORDING.read_text())
    now = [doc["frames"][0]["t"]]
    replay = Replay(doc, clock=lambda: now[0], source="recording")
    collector = NvmlCollector(
        CollectContext(Config(interval=1.0)), clock=lambda: now[0], library=replay
    )
    cache = LabelCache()
    for t in (1.5, 2.5, 22.5):
        now[0] = replay.started + t if hasattr(replay, "started") else t
        data = collector.update(None)
        snap = Snapshot(taken_at=t, results={"nvml": CollectorResult("nvml", True, 0.0, data)})
        fams = list(collector.families(data, snap))
        assert sum(len(f.samples) for f in fams) > 30
        assert_identical(fams, cache)


def test_cache_is_bounded():
    cache = LabelCache(max_entries=10)
    fam = GaugeMetricFamily("g", "doc")
    for i in range(50):
        add_sample(fam, {"pid": str(i)}, i)
    render_text([fam], cache)
    assert len(cache.text) == 0
