"""Joins of a target to its owner, GPUs, co-tenants and cgroup; the enricher and rendering."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from node_exporter_ml.collectors.serving import render_families
from node_exporter_ml.config import Config
from node_exporter_ml.serving.causes import CAUSES
from node_exporter_ml.serving.data import ModelStats, ServingCauses, ServingData, TargetStatus
from node_exporter_ml.serving.enrich import LatencyCauses, cgroup_signals
from node_exporter_ml.serving.join import gpu_shares, owner_cgroups, owner_gpus, owner_pids
from node_exporter_ml.serving.window import WindowStats
from node_exporter_ml.snapshot import (
    NVML,
    CgroupData,
    CgroupSample,
    CollectorResult,
    CpuQuota,
    GpuProcessSample,
    GpuSample,
    NvmlData,
    ProcessData,
    ProcessSample,
    Snapshot,
)
from tests.helpers import make_config

POD_CGROUP = "/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc123.scope"
PROCS = {
    10: ProcessSample(pid=10, comm="vllm", cgroup_path=POD_CGROUP, container_id="abc123def"),
    11: ProcessSample(
        pid=11, comm="EngineCore_0", cgroup_path=POD_CGROUP, container_id="abc123def"
    ),
    20: ProcessSample(pid=20, comm="python", cgroup_path="/system.slice/train.service"),
}
GPU = GpuSample(
    index=0,
    uuid="GPU-1",
    sm_clock_hertz=1.5e9,
    max_sm_clock_hertz=2.0e9,
    sm_active_ratio=0.9,
    clock_events=frozenset({"sw_power_cap"}),
    processes=(
        GpuProcessSample(pid=11, sm_ratio=0.25),
        GpuProcessSample(pid=20, sm_ratio=0.6),
    ),
)
OTHER_GPU = GpuSample(index=1, uuid="GPU-2", processes=(GpuProcessSample(pid=99, sm_ratio=0.9),))


def snapshot(t: float = 0.0, cgroup: CgroupSample | None = None, serving=None) -> Snapshot:
    cg = cgroup or CgroupSample(path=POD_CGROUP)
    results = {
        "process": CollectorResult("process", True, 0.0, ProcessData(PROCS)),
        "cgroup": CollectorResult("cgroup", True, 0.0, CgroupData({POD_CGROUP: cg})),
        "nvml": CollectorResult("nvml", True, 0.0, NvmlData("580", (GPU, OTHER_GPU))),
    }
    if serving is not None:
        results["serving"] = CollectorResult("serving", True, 0.0, serving)
    return Snapshot(
        taken_at=t,
        results=results,
        workloads={
            10: {"namespace": "ml", "pod": "vllm-0", "container": "vllm"},
            11: {"namespace": "ml", "pod": "vllm-0", "container": "vllm"},
        },
    )


def target(**kw) -> TargetStatus:
    return TargetStatus(
        name="vllm", url="http://10.0.0.1:8000/metrics", source="config", up=True, **kw
    )


@pytest.mark.parametrize(
    ("owner", "pids"),
    [
        ({"pid": 20}, (20,)),
        ({"container_id": "containerd://abc123def"}, (10, 11)),
        ({"container_id": "abc123"}, (10, 11)),
        ({"pod": "ml/vllm-0"}, (10, 11)),
        ({"pod": "ml/other"}, ()),
        ({"socket_pid": 10}, (10, 11)),  # the API server and its engine share a cgroup
        ({"socket_pid": 20}, (20,)),
        ({}, ()),
    ],
    ids=["pid", "container id with runtime prefix", "short container id", "pod", "other pod",
         "socket owner and cgroup siblings", "socket owner alone", "unknown"],
)  # fmt: skip
def test_owner_pids(owner, pids):
    assert owner_pids(target(**owner), snapshot()) == pids


def test_gpus_cotenants_and_clocks():
    pids = (10, 11)
    gpus = owner_gpus(pids, snapshot()[NVML])
    assert [g.uuid for g in gpus] == ["GPU-1"]
    shares = gpu_shares(pids, gpus)
    assert shares.owner_sm == pytest.approx(0.25)
    assert shares.cotenant_sm == pytest.approx(0.6)
    assert shares.cotenant_pids == (20,)
    assert shares.device_sm_active == pytest.approx(0.9)
    assert shares.power_thermal == 1.0
    assert shares.clock_ratio == pytest.approx(0.75)
    assert [c.path for c in owner_cgroups(pids, snapshot())] == [POD_CGROUP]


def test_joins_degrade_when_collectors_are_missing():
    bare = Snapshot(taken_at=0.0, results={})
    assert owner_pids(target(socket_pid=10), bare) == (10,)
    assert owner_gpus((10,), None) == ()
    assert owner_cgroups((10,), bare) == ()
    shares = gpu_shares((10,), ())
    assert shares.owner_sm is None
    assert shares.cotenant_sm is None


def test_cgroup_signals_between_ticks():
    a = CgroupSample(POD_CGROUP, cpu_periods_total=1000, cpu_throttled_periods_total=100,
                     pressure_memory_waiting_seconds_total=1.0, oom_kills_total=0,
                     memory_working_set_bytes=900, memory_limit_bytes=1000)  # fmt: skip
    b = replace(a, cpu_periods_total=1100, cpu_throttled_periods_total=150,
                pressure_memory_waiting_seconds_total=2.0, oom_kills_total=1)  # fmt: skip
    _, old = cgroup_signals({}, 0.0, (a,))
    got, _ = cgroup_signals(old, 5.0, (b,))
    assert got == {"cpu_throttled": 0.5, "memory_stall": 0.2, "memory_usage": 0.9, "oom_kills": 1.0}
    # Without periods, throttled seconds per second per allowed core.
    c = CgroupSample(POD_CGROUP, cpu_throttled_seconds_total=10.0, cpu_limit_cores=2.0)
    d = replace(c, cpu_throttled_seconds_total=15.0)
    got, _ = cgroup_signals(cgroup_signals({}, 0.0, (c,))[1], 5.0, (d,))
    assert got["cpu_throttled"] == pytest.approx(0.5)
    # A cgroup seen for the first time: levels only, no rates yet.
    first, _ = cgroup_signals({}, 5.0, (b,))
    assert first == {"cpu_throttled": None, "memory_stall": None, "memory_usage": 0.9,
                     "oom_kills": None}  # fmt: skip


def test_cgroup_signals_follow_the_quota_that_applies():
    pod = "/kubepods.slice/kubepods-pod1.slice"
    free = CgroupSample(POD_CGROUP, cpu_periods_total=0, cpu_quota=CpuQuota())
    assert cgroup_signals({}, 0.0, (free,))[0]["cpu_throttled"] == 0.0  # no quota: known 0
    a = replace(free, cpu_quota=CpuQuota(pod, 0.5, 100, 10, 1.0))
    b = replace(free, cpu_quota=CpuQuota(pod, 0.5, 200, 90, 9.0))
    assert cgroup_signals(cgroup_signals({}, 0.0, (a,))[1], 5.0, (b,))[0]["cpu_throttled"] == 0.8
    # The quota moved to the container itself (an in-place resize): no delta across sources.
    c = replace(free, cpu_quota=CpuQuota(POD_CGROUP, 0.2, 300, 95, 9.5))
    assert cgroup_signals(cgroup_signals({}, 0.0, (b,))[1], 5.0, (c,))[0]["cpu_throttled"] is None
    # A process moved to another cgroup: its deltas start afresh there.
    other = replace(b, path="/system.slice/x.service")
    assert (
        cgroup_signals(cgroup_signals({}, 0.0, (a,))[1], 5.0, (other,))[0]["cpu_throttled"] is None
    )


def test_socket_owner_is_the_first_owner_pid_among_cgroup_siblings():
    # Two servers in one cgroup (a bare host): the socket holder, not the lowest pid, owns.
    shared = {
        5: ProcessSample(pid=5, comm="other-server", cgroup_path="/user.slice"),
        9: ProcessSample(pid=9, comm="mlserver", cgroup_path="/user.slice"),
    }
    snap = Snapshot(
        taken_at=0.0,
        results={"process": CollectorResult("process", True, 0.0, ProcessData(shared))},
    )
    assert owner_pids(target(socket_pid=9), snap) == (9, 5)
    data = ServingData(targets=(target(socket_pid=9),))
    fams = {f.name: f for f in render_families(data, snap)}
    assert fams["nodeml_serving_target_info"].samples[0].labels["pid"] == "9"


def _serving(latency: float, rps: float = 100.0) -> ServingData:
    stats = WindowStats(
        seconds=60.0,
        requests=rps * 60,
        requests_per_second=rps,
        mean_seconds=latency,
        quantiles=((0.5, latency), (0.99, latency * 2)),
    )
    return ServingData(
        targets=(target(container_id="abc123", models=(ModelStats("llama", "v1", stats),)),),
        errors_total={("vllm", "timeout"): 3},
    )


def test_cpu_throttling_through_the_enricher():
    causes = LatencyCauses(make_config(serving_window=10.0, serving_baseline=900.0))
    throttled = 0
    out = None
    for i in range(40):
        slow = i >= 30
        throttled += 60 if slow else 0
        cg = CgroupSample(
            POD_CGROUP, cpu_periods_total=100 * i, cpu_throttled_periods_total=throttled
        )
        snap = snapshot(
            t=i * 5.0, cgroup=cg, serving=_serving(0.05 if slow else 0.01, 60 if slow else 100)
        )
        out = causes(snap)
    assert out is not None
    derived = out.derived["serving"]
    assert isinstance(derived, ServingCauses)
    report = derived.reports[("vllm", "llama", "v1")]
    assert report.top() == "cpu_throttling"
    assert report.scores["cpu_throttling"] == pytest.approx(1.0)
    # The co-tenant's steady 60 % is no movement: it was there in the baseline too.
    assert report.scores["noisy_neighbour"] == 0.0


def test_rendered_series_carry_model_version_and_workload_labels():
    causes = LatencyCauses(make_config(serving_window=10.0))
    out = None
    for i in range(10):
        out = causes(snapshot(t=i * 5.0, serving=_serving(0.01)))
    assert out is not None
    fams = {f.name: f for f in render_families(_serving(0.01), out)}
    mean = fams["nodeml_serving_request_latency_mean_seconds"].samples
    assert [s.labels for s in mean] == [
        {"target": "vllm", "model": "llama", "version": "v1", "namespace": "ml", "pod": "vllm-0",
         "container": "vllm"}
    ]  # fmt: skip
    quantiles = {
        s.labels["quantile"] for s in fams["nodeml_serving_request_latency_seconds"].samples
    }
    assert quantiles == {"0.5", "0.99"}
    info = fams["nodeml_serving_target_info"].samples[0].labels
    assert info["pid"] == "10"
    assert info["pod"] == "vllm-0"
    assert info["source"] == "config"
    causes_rendered = {s.labels["cause"] for s in fams["nodeml_serving_latency_cause"].samples}
    assert causes_rendered == set(CAUSES)
    ratio = fams["nodeml_serving_latency_regression_ratio"].samples[0].value
    assert ratio == pytest.approx(1.0)
    errors = fams["nodeml_serving_scrape_errors"].samples
    assert [(s.name, s.labels, s.value) for s in errors] == [
        ("nodeml_serving_scrape_errors_total", {"target": "vllm", "reason": "timeout"}, 3.0)
    ]


def test_enricher_without_serving_data_changes_nothing():
    snap = snapshot()
    assert LatencyCauses(Config())(snap) is snap


@dataclass
class _KubeTarget:
    url: str
    namespace: str | None = None
    pod: str | None = None
    name: str | None = None


@dataclass
class _KubeData:
    targets: tuple


def test_families_render_as_text_and_openmetrics():
    from prometheus_client.parser import text_string_to_metric_families

    from node_exporter_ml.collectors.base import CollectContext
    from node_exporter_ml.collectors.serving import ServingCollector
    from node_exporter_ml.exposition import Renderer

    causes = LatencyCauses(make_config(serving_window=10.0))
    snap = None
    for i in range(10):
        snap = causes(snapshot(t=i * 5.0, serving=_serving(0.01 if i < 8 else 0.05)))
    assert snap is not None
    collector = ServingCollector(CollectContext(Config()))
    rendered = Renderer([collector], 5.0, process_metrics=False).render(snap)
    text = rendered.text.decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert {
        "nodeml_serving_target_up",
        "nodeml_serving_scrape_errors_total",
        "nodeml_serving_target_info",
        "nodeml_serving_request_latency_seconds",
        "nodeml_serving_latency_cause",
        "nodeml_serving_latency_regression_ratio",
    } <= names
    assert rendered.openmetrics.endswith(b"# EOF\n")
    scores = {
        s.labels["cause"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "nodeml_serving_latency_cause"
    }
    # Latency rose 5x with nothing else moving at the same throughput: queueing.
    assert scores == {c: (1.0 if c == "load" else 0.0) for c in CAUSES}
