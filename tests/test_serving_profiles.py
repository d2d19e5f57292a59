"""Every framework's fixture pair: identified by content, right model names, seconds.

The expected means are computed independently from prometheus_client's own parser
(slow but the reference), so the fast parser, the profile and the window are all checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
from aiohttp import web
from blockbuster import blockbuster_ctx
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.serving import ServingCollector
from node_exporter_ml.serving.data import ServingData
from node_exporter_ml.serving.options import ServingTarget
from node_exporter_ml.serving.parse import parse_exposition
from node_exporter_ml.serving.profiles import identify, read_exposition, unit_of
from node_exporter_ml.serving.window import ModelWindow
from node_exporter_ml.snapshot import Snapshot
from tests.helpers import make_config
from tests.serving_fakes import SERVING_FIXTURES

SECONDS_APART = 10.0  # the README: `.later.prom` is the same endpoint 10 s later

Key = tuple[str, str | None]


def _reference(text: str, family: str, suffix_sum: str, suffix_count: str, key) -> dict:
    """{key: (sum, count)} from prometheus_client's parser (counters come back as _total)."""
    sums: dict = {}
    counts: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            k = key(s.labels)
            if k is None:
                continue
            if s.name in (family + suffix_sum, family + suffix_sum + "_total"):
                sums[k] = sums.get(k, 0.0) + s.value
            elif s.name in (family + suffix_count, family + suffix_count + "_total"):
                counts[k] = counts.get(k, 0.0) + s.value
    return {k: (sums.get(k, 0.0), counts[k]) for k in counts}


def _labels(model: str, version: str | None = None) -> Callable[[dict], Key | None]:
    def key(labels: dict) -> Key | None:
        if model not in labels:
            return None
        v = labels.get(version) if version else None
        return labels[model], None if v in (None, "None", "default") else v

    return key


# framework -> (models, latency family, sum suffix, count suffix, unit, key, mean range s,
#               has quantiles)
CASES = {
    "vllm": (
        {("meta-llama/Llama-3.1-8B-Instruct", None)},
        "vllm:e2e_request_latency_seconds", "_sum", "_count", 1.0,
        _labels("model_name"), (0.5, 60), True,
    ),
    "sglang": (
        {("Qwen/Qwen2.5-7B-Instruct", None)},
        "sglang:e2e_request_latency_seconds", "_sum", "_count", 1.0,
        _labels("model_name"), (0.5, 60), True,
    ),
    "triton": (
        {("resnet50_trt", "1"), ("bert_onnx", "1"), ("preprocess_py", "1")},
        "nv_inference_request", "_duration_us", "_success", 1e-6,
        _labels("model", "version"), (0.0005, 0.1), False,
    ),
    "torchserve": (
        {("resnet18", None), ("bert_seq_clf", None)},
        "ts_inference_", "latency_microseconds", "requests_total", 1e-6,
        _labels("model_name", "model_version"), (0.001, 0.1), False,
    ),
    "bentoml": (
        {("summarization", "x4tnqwgtg2mbrgxs")},
        "bentoml_service_request_duration_seconds", "_sum", "_count", 1.0,
        _labels("service_name", "service_version"), (0.05, 5), True,
    ),
    "ray_serve": (
        {("llm_app", None)},
        "ray_serve_http_request_latency_ms", "_sum", "_count", 1e-3,
        _labels("application"), (0.05, 10), True,
    ),
    "tgi": (
        {("unknown", None)},
        "tgi_request_duration", "_sum", "_count", 1.0,
        lambda labels: ("unknown", None), (0.5, 60), True,
    ),
    "mlserver": (
        {("iris-sklearn", None), ("fraud-xgb", "v3")},
        "model_infer_request_duration", "_sum", "_count", 1.0,
        _labels("model", "version"), (0.0002, 0.1), True,
    ),
    "kserve": (
        {("sklearn-iris", None), ("resnet-ts", None)},
        "request_predict_seconds", "_sum", "_count", 1.0,
        _labels("model_name"), (0.0002, 0.5), True,
    ),
    "tfserving": (
        {("resnet", None)},
        ":tensorflow:serving:request_latency", "_sum", "_count", 1e-6,
        _labels("model_name"), (0.001, 0.1), True,
    ),
}  # fmt: skip


def _texts(framework: str) -> tuple[str, str]:
    return (
        (SERVING_FIXTURES / f"{framework}.prom").read_text(encoding="utf-8"),
        (SERVING_FIXTURES / f"{framework}.later.prom").read_text(encoding="utf-8"),
    )


@pytest.mark.parametrize("framework", sorted(CASES))
def test_fixture_pair_gives_windowed_latency(framework):
    models, family, s_sum, s_count, unit, key, (low, high), quantiles = CASES[framework]
    first, later = _texts(framework)
    a = read_exposition(parse_exposition(first))
    b = read_exposition(parse_exposition(later))
    assert a.framework == b.framework == framework
    assert set(b.models) == models
    ref_a = _reference(first, family, s_sum, s_count, key)
    ref_b = _reference(later, family, s_sum, s_count, key)
    for k in models:
        w = ModelWindow(60.0)
        w.observe(0.0, a.models[k])
        w.observe(SECONDS_APART, b.models[k])
        stats = w.stats()
        assert stats is not None
        d_sum = (ref_b[k][0] - ref_a[k][0]) * unit
        d_count = ref_b[k][1] - ref_a[k][1]
        assert d_count > 0
        assert stats.requests_per_second == pytest.approx(d_count / SECONDS_APART)
        assert stats.mean_seconds == pytest.approx(d_sum / d_count, rel=1e-6)
        assert low < stats.mean_seconds < high, (k, stats.mean_seconds)  # units are seconds
        qs = dict(stats.quantiles)
        if quantiles:
            assert set(qs) == {0.5, 0.9, 0.99}
            assert qs[0.5] <= qs[0.9] <= qs[0.99]
            assert low / 10 < qs[0.5] < high * 10
        else:
            assert qs == {}


def test_error_ratios_where_frameworks_count_errors():
    def ratio(framework: str, key: Key) -> float | None:
        first, later = _texts(framework)
        w = ModelWindow(60.0)
        w.observe(0.0, read_exposition(parse_exposition(first)).models[key])
        w.observe(SECONDS_APART, read_exposition(parse_exposition(later)).models[key])
        stats = w.stats()
        assert stats is not None
        return stats.error_ratio

    # Triton: failures / (successes + failures), summed over GPUs and reasons.
    assert ratio("triton", ("resnet50_trt", "1")) == pytest.approx(1 / 1801, rel=1e-3)
    assert ratio("tfserving", ("resnet", None)) == pytest.approx(1 / 138, rel=1e-3)
    assert ratio("vllm", ("meta-llama/Llama-3.1-8B-Instruct", None)) == 0.0
    assert ratio("kserve", ("sklearn-iris", None)) is None  # KServe counts no errors
    assert ratio("torchserve", ("resnet18", None)) is None  # per-host counters only


def test_the_port_does_not_decide_the_framework():
    # 8082 serves TorchServe and MLServer, 3000 TGI and BentoML: content decides.
    for framework in CASES:
        first, _ = _texts(framework)
        assert identify(parse_exposition(first)).name == framework


def test_generic_rule_reads_the_recorded_server():
    text = "\n".join(
        [
            "# TYPE worker_queue_duration_seconds histogram",
            'worker_queue_duration_seconds_bucket{le="1"} 5',
            'worker_queue_duration_seconds_bucket{le="+Inf"} 5',
            "worker_queue_duration_seconds_sum 1",
            "worker_queue_duration_seconds_count 5",
            "# TYPE predict_latency_ms histogram",
            'predict_latency_ms_bucket{le="10",model_id="m"} 3',
            'predict_latency_ms_bucket{le="+Inf",model_id="m"} 4',
            'predict_latency_ms_sum{model_id="m"} 60',
            'predict_latency_ms_count{model_id="m"} 4',
            "# TYPE predict_errors_total counter",
            'predict_errors_total{model_id="m"} 1',
        ]
    )
    reading = read_exposition(parse_exposition(text))
    assert reading.framework == "generic"
    m = reading.models[("m", None)]
    assert m.sum_seconds == pytest.approx(0.060)
    assert m.histogram is not None
    assert m.histogram.bounds == (0.010, math.inf)
    assert m.errors == 1.0


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("x_seconds", 1.0),
        ("x_ms", 1e-3),
        ("x_latency_microseconds", 1e-6),
        ("nv_inference_request_duration_us", 1e-6),
        ("graph_run_time_usecs", 1e-6),
        ("tgi_request_duration", 1.0),
    ],
)
def test_unit_from_name(name, unit):
    assert unit_of(name) == unit


# --- the same pairs through the collector, over HTTP ------------------------------------------


@pytest.fixture(autouse=True)
def no_blocking() -> Iterator[None]:
    with blockbuster_ctx("node_exporter_ml"):
        yield


async def test_collector_scrapes_every_framework(aiohttp_server):
    texts = {fw: _texts(fw) for fw in CASES}
    phase = {"i": 0}

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            text=texts[request.match_info["fw"]][phase["i"]], content_type="text/plain"
        )

    async def info(request: web.Request) -> web.Response:
        return web.json_response({"model_id": "bigscience/bloom-560m", "max_batch_size": 8})

    app = web.Application()
    app.router.add_get("/{fw}/metrics", metrics)
    app.router.add_get("/info", info)
    server = await aiohttp_server(app)
    targets = tuple(
        ServingTarget(url=str(server.make_url(f"/{fw}/metrics")), name=fw, pid=1000 + i)
        for i, fw in enumerate(sorted(CASES))
    )
    config = make_config(serving_targets=targets)
    clock = {"t": 100.0}
    collector = ServingCollector(CollectContext(config), clock=lambda: clock["t"])
    try:
        await collector.update(None)
        phase["i"], clock["t"] = 1, 110.0
        data = await collector.update(None)
    finally:
        await collector.stop()
    assert isinstance(data, ServingData)
    by_name = {t.name: t for t in data.targets}
    for fw, case in CASES.items():
        t = by_name[fw]
        assert t.up, (fw, t.reason)
        assert t.framework == fw
        models = {(m.model, m.version) for m in t.models}
        expected = {("bigscience/bloom-560m", None)} if fw == "tgi" else case[0]
        assert models == expected, fw
    families = {f.name: f for f in collector.families(data, Snapshot(taken_at=0.0, results={}))}
    quantiles = families["nodeml_serving_request_latency_seconds"]
    assert {s.labels["target"] for s in quantiles.samples} == {
        fw for fw, case in CASES.items() if case[-1]
    }
    mean = families["nodeml_serving_request_latency_mean_seconds"]
    triton = {
        (s.labels["model"], s.labels.get("version"))
        for s in mean.samples
        if s.labels["target"] == "triton"
    }
    assert triton == CASES["triton"][0]


@pytest.mark.parametrize("framework", sorted(CASES))
def test_reading_only_the_profiles_families_changes_nothing(framework):
    from node_exporter_ml.serving.scrape import parse_body

    for text in _texts(framework):
        full = read_exposition(parse_exposition(text))
        partial = parse_body(text.encode(), {})
        assert partial == full


# MLServer 1.7: the REST histogram's `path` is the route template, not the model's path.
MLSERVER_17 = """\
# TYPE model_infer_request_duration summary
{summaries}\
# TYPE rest_server_request_duration_seconds histogram
rest_server_request_duration_seconds_bucket{{le="0.1",method="POST",path="/v2/models/{{model_name}}/infer",status_code="200"}} 4
rest_server_request_duration_seconds_bucket{{le="+Inf",method="POST",path="/v2/models/{{model_name}}/infer",status_code="200"}} 6
rest_server_request_duration_seconds_count{{method="POST",path="/v2/models/{{model_name}}/infer",status_code="200"}} 6
rest_server_request_duration_seconds_sum{{method="POST",path="/v2/models/{{model_name}}/infer",status_code="200"}} 0.9
rest_server_request_duration_seconds_bucket{{le="0.1",method="GET",path="/v2/health/ready",status_code="200"}} 9
rest_server_request_duration_seconds_bucket{{le="+Inf",method="GET",path="/v2/health/ready",status_code="200"}} 9
rest_server_request_duration_seconds_count{{method="GET",path="/v2/health/ready",status_code="200"}} 9
rest_server_request_duration_seconds_sum{{method="GET",path="/v2/health/ready",status_code="200"}} 0.01
"""  # noqa: E501


def _mlserver_summary(model: str, count: int) -> str:
    return (
        f'model_infer_request_duration_count{{model="{model}",version="None"}} {count}\n'
        f'model_infer_request_duration_sum{{model="{model}",version="None"}} {count * 0.15}\n'
    )


def test_mlserver_route_template_histogram_is_the_one_models_quantiles():
    text = MLSERVER_17.format(summaries=_mlserver_summary("sleep", 6))
    reading = read_exposition(parse_exposition(text))
    assert reading.framework == "mlserver"
    m = reading.models[("sleep", None)]
    assert m.count == 6
    assert m.sum_seconds == pytest.approx(0.9)
    assert m.histogram is not None
    assert list(m.histogram.counts) == [4, 6]  # the health route is not the model's


def test_mlserver_with_several_models_has_no_per_model_quantiles():
    text = MLSERVER_17.format(summaries=_mlserver_summary("a", 2) + _mlserver_summary("b", 4))
    reading = read_exposition(parse_exposition(text))
    assert sorted(reading.models) == [("a", None), ("b", None)]
    for key, count in ((("a", None), 2), (("b", None), 4)):
        m = reading.models[key]
        assert m.count == count  # the mean from the summary
        assert m.histogram is None  # the template names no model: no quantiles


BENTOML_PROBED = """\
# TYPE bentoml_service_request_duration_seconds histogram
{series}\
# TYPE bentoml_service_request counter
bentoml_service_request_total{{endpoint="/predict",http_response_code="200",service_name="Svc",service_version="not available"}} 5
bentoml_service_request_total{{endpoint="/predict",http_response_code="500",service_name="Svc",service_version="not available"}} 1
bentoml_service_request_total{{endpoint="/readyz",http_response_code="200",service_name="Svc",service_version="not available"}} 40
bentoml_service_request_total{{endpoint="/livez",http_response_code="503",service_name="Svc",service_version="not available"}} 7
"""  # noqa: E501


def test_bentoml_probes_are_no_model_traffic_and_not_available_is_unversioned():
    series = ""
    for endpoint, fast, total, total_sum in (
        ("/predict", 2, 6, 1.2), ("/readyz", 40, 40, 0.04), ("/livez", 7, 7, 0.01),
    ):  # fmt: skip
        labels = f'endpoint="{endpoint}",service_name="Svc",service_version="not available"'
        series += (
            f'bentoml_service_request_duration_seconds_bucket{{{labels},le="0.1"}} {fast}\n'
            f'bentoml_service_request_duration_seconds_bucket{{{labels},le="+Inf"}} {total}\n'
            f"bentoml_service_request_duration_seconds_count{{{labels}}} {total}\n"
            f"bentoml_service_request_duration_seconds_sum{{{labels}}} {total_sum}\n"
        )
    reading = read_exposition(parse_exposition(BENTOML_PROBED.format(series=series)))
    assert reading.framework == "bentoml"
    assert list(reading.models) == [("Svc", None)]
    m = reading.models[("Svc", None)]
    assert m.count == 6
    assert m.sum_seconds == pytest.approx(1.2)
    assert m.histogram is not None
    assert list(m.histogram.counts) == [2, 6]
    assert m.requests == 6
    assert m.errors == 1
