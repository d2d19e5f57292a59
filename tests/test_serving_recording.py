"""The real H100 neighbour recording: latency regression and its causes, frame by frame.

The NVML side is the recording itself turned into NvmlData (a fake at the hardware
boundary); the model server's side is served over HTTP frame by frame and scraped by the
real serving collector, on a clock stepped one recorded second per frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from blockbuster import blockbuster_ctx

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.serving import LatencyCauses, ServingCollector
from node_exporter_ml.serving.causes import CAUSES, CauseReport
from node_exporter_ml.serving.data import ServingCauses, ServingData
from node_exporter_ml.serving.options import ServingTarget
from node_exporter_ml.snapshot import CollectorResult, Snapshot
from tests.helpers import make_config
from tests.serving_fakes import NVML_RECORDING, SERVING_RECORDING, load, nvml_frame

MODEL = "mlp-8x4096"
# With one-second frames and a 12 s incident, a 2 s window plays the part the 60 s
# default plays at a 5 s sampler interval in production.
WINDOW = 2.0


@pytest.fixture(autouse=True)
def no_blocking() -> Iterator[None]:
    with blockbuster_ctx("node_exporter_ml"):
        yield


@pytest.fixture(scope="module")
def recordings() -> tuple[dict[str, Any], dict[str, Any]]:
    return load(NVML_RECORDING), load(SERVING_RECORDING)


def _value(families: list[Any], name: str, **labels: str) -> float | None:
    for fam in families:
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


@pytest.fixture
async def replay(aiohttp_server, recordings):
    """Run the whole recording; return {second: (CauseReport | None, families)}."""
    nvml, serving = recordings
    current = {"frame": 0}

    async def metrics(request: web.Request) -> web.Response:
        text = serving["frames"][current["frame"]]["text"]
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = await aiohttp_server(app)
    owner = serving["frames"][0]["server_pid"]
    config = make_config(
        serving_window=WINDOW,
        serving_baseline=900.0,
        serving_targets=(
            ServingTarget(url=str(server.make_url("/metrics")), name="mlp", pid=owner),
        ),
    )
    clock = {"t": 0.0}
    collector = ServingCollector(CollectContext(config), clock=lambda: clock["t"])
    causes = LatencyCauses(config)
    seen: dict[int, tuple[CauseReport | None, list[Any]]] = {}
    previous = None
    try:
        for i, frame in enumerate(nvml["frames"]):
            assert serving["frames"][i]["t"] == frame["t"]
            current["frame"], clock["t"] = i, frame["t"]
            data = await collector.update(previous)
            assert isinstance(data, ServingData)
            snapshot = Snapshot(
                taken_at=frame["t"],
                results={
                    "nvml": CollectorResult("nvml", True, 0.0, nvml_frame(nvml, i)),
                    "serving": CollectorResult("serving", True, 0.0, data),
                },
            )
            snapshot = causes(snapshot)
            derived = snapshot.derived["serving"]
            assert isinstance(derived, ServingCauses)
            report = derived.reports.get(("mlp", MODEL, None))
            seen[int(frame["t"])] = (report, list(collector.families(data, snapshot)))
            previous = snapshot
    finally:
        await collector.stop()
    return seen


async def test_neighbour_is_the_top_cause_while_it_runs(replay):
    for second in range(21, 33):
        report, families = replay[second]
        assert report is not None, second
        assert report.regression_ratio is not None, second
        assert report.regression_ratio >= 2, (second, report.regression_ratio)
        assert report.top() == "noisy_neighbour", (second, report.scores)
        # The rendered series say the same.
        ratio = _value(families, "nodeml_serving_latency_regression_ratio", model=MODEL)
        assert ratio == pytest.approx(report.regression_ratio)
        scores = {
            c: _value(families, "nodeml_serving_latency_cause", model=MODEL, cause=c)
            for c in CAUSES
        }
        assert max(scores, key=lambda c: scores[c] or 0.0) == "noisy_neighbour"


async def test_load_is_the_top_cause_with_eight_clients(replay):
    for second in range(9, 16):
        report, _ = replay[second]
        assert report is not None, second
        assert report.regression_ratio is not None, second
        assert report.regression_ratio > 1.5, (second, report.regression_ratio)
        assert report.top() == "load", (second, report.scores)


async def test_no_cause_at_rest(replay):
    rest = [*range(6, 9), *range(35, 41)]
    for second in rest:
        report, _ = replay[second]
        # Not vacuous: a baseline exists from the sixth second on.
        assert report is not None, second
        assert report.regression_ratio is not None, second
        assert all(score <= 0.3 for score in report.scores.values()), (second, report.scores)


async def test_early_seconds_have_no_baseline_yet(replay):
    # Fewer than three window latencies older than the current window: no ratio, no causes.
    for second in (1, 2, 3, 4):
        report, families = replay[second]
        assert report is None or report.regression_ratio is None
        assert _value(families, "nodeml_serving_latency_regression_ratio") is None


async def test_window_latency_follows_the_recording(replay):
    _, quiet = replay[7]
    _, busy = replay[12]
    _, neighbour = replay[26]
    mean = "nodeml_serving_request_latency_mean_seconds"
    assert 0.0005 < _value(quiet, mean, model=MODEL) < 0.002  # ~1 ms at 2 clients
    assert 0.004 < _value(busy, mean, model=MODEL) < 0.010  # ~7 ms queueing at 8 clients
    assert 0.015 < _value(neighbour, mean, model=MODEL) < 0.025  # ~20 ms with the neighbour
    rps = "nodeml_serving_requests_per_second"
    assert 300 < _value(neighbour, rps, model=MODEL) < 500 < _value(busy, rps, model=MODEL)
    p99 = _value(neighbour, "nodeml_serving_request_latency_seconds", quantile="0.99")
    assert p99 is not None
    assert p99 >= _value(neighbour, mean, model=MODEL)
    assert _value(neighbour, "nodeml_serving_target_info", pid="415", framework="generic") == 1
    assert _value(neighbour, "nodeml_serving_target_up", target="mlp") == 1
    uuid = "GPU-478bad86-921b-0395-2f3f-4ae082da1bb5"
    assert _value(neighbour, "nodeml_serving_target_gpu_info", gpu="0", uuid=uuid) == 1
