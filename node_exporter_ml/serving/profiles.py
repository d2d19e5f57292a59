"""Framework profiles: which families of a model server's exposition hold its latency.

A framework is identified from the content of the scrape (its metric-name prefixes),
never from the port: 8080, 8082, 3000 and 8000 are each shared by two frameworks. Each
profile reads the framework's own model label, aggregates the other labels away (engine,
GPU, HTTP status, worker) and normalises units to seconds. What comes out are cumulative
readings; windows are made from their deltas in `window.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from node_exporter_ml.serving.parse import Exposition, Labels

ModelKey = tuple[str, str | None]
"""(model, version); version None when the server reports none."""

KeyFn = Callable[[Labels], "ModelKey | None"]

UNKNOWN_MODEL = "unknown"
# BentoML says "not available" for a service without a version.
_NO_VERSION = frozenset({"", "None", "none", "null", "default", "not available"})
# Health and metrics endpoints BentoML counts in the same families as the model's traffic.
_PROBE_ENDPOINTS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})
_LATENCY_WORDS = ("latency", "duration")
_UNIT_SUFFIXES = (
    (("_seconds", "_secs", "_s"), 1.0),
    (("_milliseconds", "_ms"), 1e-3),
    (("_microseconds", "_us", "_usecs"), 1e-6),
    (("_nanoseconds", "_ns"), 1e-9),
)
_MODEL_LABELS = ("model", "model_name", "model_id", "served_model_name", "name", "service_name")
_VERSION_LABELS = ("version", "model_version", "service_version")
_MLSERVER_PATH = re.compile(r"^/v2/models/([^/{}]+)(?:/versions/([^/{}]+))?/infer$")
_MLSERVER_TEMPLATE = re.compile(
    r"^/v2/models/\{model_name\}(?:/versions/\{model_version\})?/infer$"
)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A cumulative histogram: ascending upper bounds (seconds, the last +Inf) and counts."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ModelReading:
    """One model's cumulative counters in one scrape (None: the framework has no such figure).

    `count`/`sum_seconds` give mean latency and request rate; `histogram` gives
    quantiles (it may come from another family, e.g. MLServer's REST histogram);
    `requests`/`errors` give the error ratio; `in_flight` is a gauge of running plus
    queued requests (the framework's own load signal).
    """

    count: float | None = None
    sum_seconds: float | None = None
    histogram: Histogram | None = None
    requests: float | None = None
    errors: float | None = None
    in_flight: float | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """What one scrape of a target says: its framework and a reading per model."""

    framework: str
    models: Mapping[ModelKey, ModelReading]
    start_time: float | None = None
    info_url_path: str | None = None


def _version(labels: Labels, names: Iterable[str]) -> str | None:
    for n in names:
        v = labels.get(n)
        if v is not None:
            return None if v in _NO_VERSION else v
    return None


def label_key(model_label: str | tuple[str, ...], version_label: str | None = None) -> KeyFn:
    """A key function reading the model (first label present) and an optional version."""
    models = (model_label,) if isinstance(model_label, str) else model_label

    def key(labels: Labels) -> ModelKey | None:
        for m in models:
            model = labels.get(m)
            if model:
                version = _version(labels, (version_label,)) if version_label else None
                return model, version
        return None

    return key


def fixed_key(model: str) -> KeyFn:
    """Every series belongs to one model (TGI: one model per server, none in labels)."""
    return lambda labels: (model, None)


def sum_by(
    exp: Exposition,
    family: str,
    key: KeyFn,
    suffix: str = "",
    where: Callable[[Labels], bool] | None = None,
) -> dict[ModelKey, float]:
    """Sum the samples of `family + suffix` by model key (NaN samples skipped)."""
    out: dict[ModelKey, float] = {}
    fam = exp.get(family)
    if fam is None:
        return out
    for name, labels, value in fam.samples:
        if name != fam.name + suffix and not (
            suffix == "" and fam.type == "counter" and name == fam.name + "_total"
        ):
            continue
        if math.isnan(value) or (where is not None and not where(labels)):
            continue
        k = key(labels)
        if k is not None:
            out[k] = out.get(k, 0.0) + value
    return out


def histograms_by(
    exp: Exposition,
    family: str,
    key: KeyFn,
    unit: float = 1.0,
    where: Callable[[Labels], bool] | None = None,
) -> dict[ModelKey, tuple[Histogram | None, float, float]]:
    """Aggregate a histogram (or summary) family by model: (buckets, sum seconds, count).

    Series with different bucket layouts are merged on the bounds they share.
    """
    fam = exp.get(family)
    if fam is None:
        return {}
    base = fam.name
    per_series: dict[ModelKey, dict[tuple[tuple[str, str], ...], dict[float, float]]] = {}
    sums: dict[ModelKey, float] = {}
    counts: dict[ModelKey, float] = {}
    for name, labels, value in fam.samples:
        if math.isnan(value) or (where is not None and not where(labels)):
            continue
        k = key(labels)
        if k is None:
            continue
        if name == base + "_bucket":
            le = labels.get("le")
            if le is None:
                continue
            try:
                bound = float(le)
            except ValueError:
                continue
            ident = tuple(sorted((a, b) for a, b in labels.items() if a != "le"))
            per_series.setdefault(k, {}).setdefault(ident, {})[bound] = value
        elif name == base + "_sum":
            sums[k] = sums.get(k, 0.0) + value
        elif name == base + "_count":
            counts[k] = counts.get(k, 0.0) + value
    out: dict[ModelKey, tuple[Histogram | None, float, float]] = {}
    for k in counts.keys() | per_series.keys():
        hist = None
        series = per_series.get(k)
        if series:
            shared = set.intersection(*(set(s) for s in series.values()))
            if math.inf in shared and len(shared) >= 2:
                bounds = sorted(shared)
                hist = Histogram(
                    tuple(b * unit if math.isfinite(b) else b for b in bounds),
                    tuple(sum(s[b] for s in series.values()) for b in bounds),
                )
        count = counts.get(k)
        if count is None and hist is not None:
            count = hist.counts[-1]
        out[k] = (hist, sums.get(k, 0.0) * unit, count or 0.0)
    return out


def _merge(
    latency: Mapping[ModelKey, tuple[Histogram | None, float, float]],
    requests: Mapping[ModelKey, float] | None = None,
    errors: Mapping[ModelKey, float] | None = None,
    in_flight: Mapping[ModelKey, float] | None = None,
    quantiles: Mapping[ModelKey, tuple[Histogram | None, float, float]] | None = None,
) -> dict[ModelKey, ModelReading]:
    out: dict[ModelKey, ModelReading] = {}
    for k, (hist, total, count) in latency.items():
        if quantiles is not None:
            hist = quantiles[k][0] if k in quantiles else None
        out[k] = ModelReading(
            count=count,
            sum_seconds=total,
            histogram=hist,
            requests=requests.get(k) if requests is not None else None,
            errors=(errors.get(k, 0.0) if errors is not None else None),
            in_flight=in_flight.get(k) if in_flight is not None else None,
        )
    return out


def _add(*maps: Mapping[ModelKey, float]) -> dict[ModelKey, float]:
    out: dict[ModelKey, float] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _status_5xx(label: str) -> Callable[[Labels], bool]:
    return lambda labels: labels.get(label, "").startswith("5")


# --- the frameworks ---------------------------------------------------------------------------


def read_vllm(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """vLLM: `vllm:e2e_request_latency_seconds` by `model_name` (summed over engines)."""
    key = label_key("model_name")
    return _merge(
        histograms_by(exp, "vllm:e2e_request_latency_seconds", key),
        requests=sum_by(exp, "vllm:request_success", key),
        errors=sum_by(
            exp, "vllm:request_success", key, where=lambda x: x.get("finished_reason") == "error"
        ),
        in_flight=_add(
            sum_by(exp, "vllm:num_requests_running", key),
            sum_by(exp, "vllm:num_requests_waiting", key),
        ),
    )


def read_sglang(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """SGLang: `sglang:e2e_request_latency_seconds` by `model_name` (`name` in late 2024)."""
    key = label_key(("model_name", "name"))
    return _merge(
        histograms_by(exp, "sglang:e2e_request_latency_seconds", key),
        requests=sum_by(exp, "sglang:num_requests", key) or None,
        errors=sum_by(exp, "sglang:num_aborted_requests", key),
        in_flight=_add(
            sum_by(exp, "sglang:num_running_reqs", key),
            sum_by(exp, "sglang:num_queue_reqs", key),
        ),
    )


def read_triton(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """Triton: cumulative `nv_inference_request_duration_us` / `nv_inference_request_success`.

    Only a mean comes out: the opt-in summaries hold quantiles over Triton's own
    window, and the histogram is time to first response, not end to end.
    """
    key = label_key("model", "version")
    success = sum_by(exp, "nv_inference_request_success", key)
    failure = sum_by(exp, "nv_inference_request_failure", key)
    duration = sum_by(exp, "nv_inference_request_duration_us", key)
    latency = {k: (None, duration.get(k, 0.0) * 1e-6, n) for k, n in success.items()}
    return _merge(
        latency,
        requests=_add(success, failure),
        errors=failure,
        in_flight=sum_by(exp, "nv_inference_pending_request_count", key),
    )


def read_torchserve(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """TorchServe: cumulative `ts_inference_latency_microseconds` / `ts_inference_requests_total`.

    Its error counters (Requests4XX/5XX) are per host, not per model: no error ratio.
    """
    key = label_key("model_name", "model_version")
    count = sum_by(exp, "ts_inference_requests_total", key)
    total = sum_by(exp, "ts_inference_latency_microseconds", key)
    return _merge({k: (None, total.get(k, 0.0) * 1e-6, n) for k, n in count.items()})


def read_bentoml(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """BentoML: `bentoml_service_request_duration_seconds` by `service_name` (>=1.2).

    BentoML before 1.2 names it `bentoml_api_server_request_duration_seconds`. Its
    `/readyz`, `/livez` probes (and `/metrics` scrapes) count in the same families:
    they are left out of the model's latency and rate.
    """
    key = label_key("service_name", "service_version")
    prefix = "bentoml_service" if exp.get("bentoml_service_request_duration_seconds") else None
    prefix = prefix or "bentoml_api_server"
    error = _status_5xx("http_response_code")
    return _merge(
        histograms_by(exp, f"{prefix}_request_duration_seconds", key, where=_not_probe),
        requests=sum_by(exp, f"{prefix}_request", key, where=_not_probe),
        errors=sum_by(exp, f"{prefix}_request", key, where=lambda x: _not_probe(x) and error(x)),
        in_flight=sum_by(exp, f"{prefix}_request_in_progress", key, where=_not_probe),
    )


def _not_probe(labels: Labels) -> bool:
    """False for BentoML's health probes and metrics endpoint, which are not model traffic."""
    return labels.get("endpoint") not in _PROBE_ENDPOINTS


def read_ray_serve(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """Ray Serve: `ray_serve_http_request_latency_ms` (the proxy's end to end) by `application`.

    Falls back to the replicas' `ray_serve_deployment_processing_latency_ms` when the
    proxy histogram is absent (handle-only apps). Ray's `Version` label is Ray's own.
    """
    key = label_key("application")
    latency = histograms_by(exp, "ray_serve_http_request_latency_ms", key, unit=1e-3)
    requests = errors = None
    if latency:
        requests = sum_by(exp, "ray_serve_num_http_requests", key)
        errors = sum_by(exp, "ray_serve_num_http_requests", key, where=_status_5xx("status_code"))
    else:
        latency = histograms_by(
            exp,
            "ray_serve_deployment_processing_latency_ms",
            key,
            unit=1e-3,
            where=lambda x: "Router" not in x.get("deployment", ""),
        )
    return _merge(
        latency,
        requests=requests,
        errors=errors,
        in_flight=_add(
            sum_by(exp, "ray_serve_deployment_queued_queries", key),
            sum_by(exp, "ray_serve_replica_processing_queries", key),
        ),
    )


def read_tgi(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """TGI: `tgi_request_duration` (s); no model label, so the model comes from `GET /info`."""
    key = fixed_key(model or UNKNOWN_MODEL)
    return _merge(
        histograms_by(exp, "tgi_request_duration", key),
        requests=sum_by(exp, "tgi_request_count", key),
        errors=sum_by(exp, "tgi_request_failure", key),
        in_flight=_add(
            sum_by(exp, "tgi_queue_size", key), sum_by(exp, "tgi_batch_current_size", key)
        ),
    )


def _mlserver_path_key(labels: Labels) -> ModelKey | None:
    m = _MLSERVER_PATH.match(labels.get("path", ""))
    if m is None:
        return None
    version = m.group(2)
    return m.group(1), None if version is None or version in _NO_VERSION else version


def read_mlserver(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """MLServer: `model_infer_request_duration` (summary, s) by `model`/`version`.

    Quantiles come from the REST histogram `rest_server_request_duration_seconds`.
    MLServer 1.7 labels it with the route template (`/v2/models/{model_name}/infer`,
    starlette_exporter's grouped paths), which names no model: it is that model's only
    when the server serves one model; with several, MLServer offers no per-model
    quantiles and only the mean is shown. Older servers put the model's own path there
    (`/v2/models/<model>[/versions/<v>]/infer`). gRPC calls count in the mean and rate,
    not in the quantiles.
    """
    key = label_key("model", "version")
    success = sum_by(exp, "model_infer_request_success", key)
    failure = sum_by(exp, "model_infer_request_failure", key)
    latency = histograms_by(exp, "model_infer_request_duration", key)
    only = next(iter(latency)) if len(latency) == 1 else None

    def rest_key(labels: Labels) -> ModelKey | None:
        if "{" in labels.get("path", ""):
            return only if _MLSERVER_TEMPLATE.match(labels["path"]) else None
        return _mlserver_path_key(labels)

    return _merge(
        latency,
        requests=_add(success, failure) if success or failure else None,
        errors=failure if success or failure else None,
        quantiles=histograms_by(exp, "rest_server_request_duration_seconds", rest_key),
    )


def read_kserve(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """KServe's Python ModelServer: `request_predict_seconds` by `model_name`."""
    return _merge(histograms_by(exp, "request_predict_seconds", label_key("model_name")))


def read_tfserving(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """TF Serving: `:tensorflow:serving:request_latency` (µs) by `model_name`."""
    key = label_key("model_name")
    return _merge(
        histograms_by(exp, ":tensorflow:serving:request_latency", key, unit=1e-6),
        requests=sum_by(exp, ":tensorflow:serving:request_count", key),
        errors=sum_by(
            exp, ":tensorflow:serving:request_count", key, where=lambda x: x.get("status") != "OK"
        ),
    )


def unit_of(name: str) -> float:
    """Seconds per unit, from a metric name's unit suffix (seconds when it names none)."""
    base = name.removesuffix("_total")
    for suffixes, factor in _UNIT_SUFFIXES:
        if base.endswith(suffixes):
            return factor
    return 1.0


def _generic_rank(name: str) -> int:
    lowered = name.lower()
    rank = 0
    if "request" in lowered or "inference" in lowered or "predict" in lowered:
        rank += 2
    if "e2e" in lowered or "end_to_end" in lowered:
        rank += 1
    for partial in ("queue", "first", "token", "prefill", "decode", "preprocess", "postprocess"):
        if partial in lowered:
            rank -= 3
    return rank


def generic_latency_family(exp: Exposition) -> str | None:
    """The best histogram/summary whose name says latency or duration (None if none)."""
    candidates = [
        f.name
        for f in exp.families.values()
        if f.type in ("histogram", "summary")
        and f.samples
        and any(w in f.name.lower() for w in _LATENCY_WORDS)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda n: (_generic_rank(n), -candidates.index(n)))


def read_generic(exp: Exposition, model: str | None = None) -> dict[ModelKey, ModelReading]:
    """Any server: the best latency histogram/summary, the model from a usual label.

    Units come from the name's suffix; errors from a counter in the same namespace
    whose name says fail or error.
    """
    family = generic_latency_family(exp)
    if family is None:
        return {}
    fallback = model or UNKNOWN_MODEL

    def key(labels: Labels) -> ModelKey:
        for m in _MODEL_LABELS:
            if labels.get(m):
                return labels[m], _version(labels, _VERSION_LABELS)
        return fallback, None

    latency = histograms_by(exp, family, key, unit=unit_of(family))
    errors = None
    prefix = family.split("_", 1)[0]
    for f in exp.families.values():
        if (
            f.type == "counter"
            and f.name.startswith(prefix)
            and any(w in f.name for w in ("fail", "error"))
        ):
            errors = _add(errors or {}, sum_by(exp, f.name, key))
    if errors is not None:
        errors = {k: errors.get(k, 0.0) for k in latency}
    return _merge(latency, errors=errors)


@dataclass(frozen=True, slots=True)
class Profile:
    """A framework: the family prefixes that identify it, its reader, the families it reads."""

    name: str
    markers: tuple[str, ...]
    read: Callable[[Exposition, str | None], dict[ModelKey, ModelReading]]
    families: frozenset[str] | None = None  # None: any family may matter
    info_path: str | None = None

    def wants(self, family: str) -> bool:
        """Whether the reader needs `family` (either counter spelling)."""
        if self.families is None or family == START_TIME:
            return True
        return family in self.families or family.removesuffix("_total") in self.families


START_TIME = "process_start_time_seconds"
PROFILES: tuple[Profile, ...] = (
    Profile("vllm", ("vllm:",), read_vllm, frozenset({
        "vllm:e2e_request_latency_seconds", "vllm:request_success",
        "vllm:num_requests_running", "vllm:num_requests_waiting"})),
    Profile("sglang", ("sglang:",), read_sglang, frozenset({
        "sglang:e2e_request_latency_seconds", "sglang:num_requests",
        "sglang:num_aborted_requests", "sglang:num_running_reqs", "sglang:num_queue_reqs"})),
    Profile("triton", ("nv_inference_",), read_triton, frozenset({
        "nv_inference_request_success", "nv_inference_request_failure",
        "nv_inference_request_duration_us", "nv_inference_pending_request_count"})),
    Profile("torchserve", ("ts_inference_",), read_torchserve, frozenset({
        "ts_inference_requests", "ts_inference_latency_microseconds"})),
    Profile("bentoml", ("bentoml_service_", "bentoml_api_server_"), read_bentoml, frozenset({
        f"{prefix}_{family}"
        for prefix in ("bentoml_service", "bentoml_api_server")
        for family in ("request_duration_seconds", "request", "request_in_progress")})),
    Profile("ray_serve", ("ray_serve_",), read_ray_serve, frozenset({
        "ray_serve_http_request_latency_ms", "ray_serve_num_http_requests",
        "ray_serve_deployment_processing_latency_ms", "ray_serve_deployment_queued_queries",
        "ray_serve_replica_processing_queries"})),
    Profile("tgi", ("tgi_request_",), read_tgi, frozenset({
        "tgi_request_duration", "tgi_request_count", "tgi_request_failure", "tgi_queue_size",
        "tgi_batch_current_size"}), info_path="/info"),
    Profile("mlserver", ("model_infer_request_",), read_mlserver, frozenset({
        "model_infer_request_duration", "model_infer_request_success",
        "model_infer_request_failure", "rest_server_request_duration_seconds"})),
    Profile("kserve", ("request_predict_seconds",), read_kserve, frozenset({
        "request_predict_seconds"})),
    Profile("tfserving", (":tensorflow:serving:",), read_tfserving, frozenset({
        ":tensorflow:serving:request_latency", ":tensorflow:serving:request_count"})),
)  # fmt: skip
GENERIC = Profile("generic", (), read_generic)


def identify_names(names: Iterable[str]) -> Profile:
    """The profile whose marker prefixes start one of `names`, else the generic one."""
    listed = list(names)
    for profile in PROFILES:
        if any(n.startswith(profile.markers) for n in listed):
            return profile
    return GENERIC


def identify(exp: Exposition) -> Profile:
    """The profile whose marker prefixes appear among the family names, else the generic one."""
    return identify_names(exp.names())


def read_exposition(
    exp: Exposition, model: str | None = None, profile: Profile | None = None
) -> Reading:
    """Identify the framework (unless given) and read every model's cumulative counters.

    Args:
        exp: the parsed scrape.
        model: the model name for servers that expose none in labels (TGI's `/info`).
        profile: the framework, when already identified from the scrape's TYPE lines.
    """
    profile = profile or identify(exp)
    start = None
    fam = exp.get(START_TIME)
    if fam is not None and fam.samples:
        start = fam.samples[0][2]
    return Reading(profile.name, profile.read(exp, model), start, profile.info_path)
