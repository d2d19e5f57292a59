"""The operator's cardinality policy: config parsing (hostile input) and its effect on families."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from node_exporter_ml.agent import Agent
from node_exporter_ml.cardinality import (
    CardinalityLimiter,
    MetricsPolicy,
    apply_policy,
    series_per_scope,
)
from node_exporter_ml.cli import main
from node_exporter_ml.config import Config, ConfigError, load_config_file, parse_config_file
from node_exporter_ml.exposition import Renderer
from node_exporter_ml.snapshot import Snapshot
from tests.golden_agent import scrape_agent
from tests.nvml_helpers import Clock, make_collector, run_to, scenario, snapshot_of, values

WORKLOADS = {
    5001: {"namespace": "ml", "pod": "a-0", "container": "srv"},
    5002: {"namespace": "ml", "pod": "a-0", "container": "srv"},
    5003: {"slurm_job": "4242", "slurm_step": "0"},
}


# --- config ----------------------------------------------------------------------------------


def test_metrics_section_parses():
    got = parse_config_file(
        "metrics:\n  drop_labels: [comm]\n  drop_families: ['nodeml_gpu_clock_*']\n"
        "  per_process: both\n  max_processes: 64\n",
        "c.yaml",
    ).metrics
    assert got == MetricsPolicy(("comm",), ("nodeml_gpu_clock_*",), "both", 64)
    assert parse_config_file("{}", "c.yaml").metrics == MetricsPolicy()
    assert MetricsPolicy().max_processes == 256


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics: [1]", "c.yaml: metrics: expected a mapping, got list"),
        ("metrics:\n  drop_label: [comm]", "c.yaml: metrics.drop_label: unknown key"),
        ("metrics:\n  drop_labels: comm", "metrics.drop_labels: expected a list, got 'comm'"),
        ("metrics:\n  drop_labels: ['a-b']", "metrics.drop_labels[0]: expected a label name"),
        ("metrics:\n  drop_labels: [{x: 1}]", "metrics.drop_labels[0]: expected a non-empty"),
        ("metrics:\n  drop_families: ['']", "metrics.drop_families[0]: expected a non-empty"),
        ("metrics:\n  per_process: all", "metrics.per_process: expected series or workload or"),
        ("metrics:\n  max_processes: 0", "metrics.max_processes: expected an integer >= 1"),
        ("metrics:\n  max_processes: true", "metrics.max_processes: expected an integer >= 1"),
        ("metrics:\n  max_processes: 1e9", "metrics.max_processes: expected an integer >= 1"),
    ],
)
def test_metrics_section_errors_are_one_line(text, message):
    with pytest.raises(ConfigError) as err:
        parse_config_file(text, "c.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_metrics_section_exits_2(tmp_path, capsys):
    path = tmp_path / "agent.yaml"
    path.write_text("metrics:\n  per_process: sometimes\n")
    assert main([f"--config.file={path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "metrics.per_process" in err


# --- families ---------------------------------------------------------------------------------


def mps_families() -> list[Metric]:
    """The nvml collector's families over the MPS recording: 4 processes on one H100."""
    clock = Clock()
    collector = make_collector(scenario("mps"), clock)
    data = run_to(collector, clock, 3)
    return list(collector.families(data, snapshot_of(data, WORKLOADS)))


def flat(families: list[Metric]) -> dict:
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def total(families: list[Metric], name: str) -> float:
    return sum(v for (n, _), v in flat(families).items() if n == name)


def pids(families: list[Metric], name: str) -> set[str]:
    return {dict(k).get("pid", "") for (n, k) in flat(families) if n == name}


def test_defaults_change_nothing():
    families = mps_families()
    out, folded = apply_policy(families, MetricsPolicy())
    assert flat(out) == flat(families)
    assert folded == 0


def test_max_processes_folds_the_smallest_into_other():
    families = mps_families()
    assert pids(families, "nodeml_process_gpu_memory_bytes") == {"5000", "5001", "5002", "5003"}
    out, folded = apply_policy(families, MetricsPolicy(max_processes=2))
    # The two biggest GPU memory holders keep their series; the rest is one "other" series.
    assert pids(out, "nodeml_process_gpu_memory_bytes") == {"5001", "5002", "other"}
    other = [dict(k) for (n, k) in flat(out) if n == "nodeml_process_gpu_memory_bytes"
             and dict(k)["pid"] == "other"]  # fmt: skip
    assert other == [{"gpu": "0", "uuid": other[0]["uuid"], "pid": "other"}]
    name = "nodeml_process_gpu_memory_bytes"
    assert total(out, name) == total(families, name)  # nothing lost, only summed
    sm = "nodeml_process_gpu_sm_seconds_total"
    assert total(out, sm) == pytest.approx(total(families, sm))
    assert folded == sum(1 for (n, k) in flat(families) if dict(k).get("pid") in {"5000", "5003"})
    assert "other" not in pids(out, "nodeml_workload_info")


def test_per_workload_sums_replace_or_join_per_process_series():
    families = mps_families()
    name = "nodeml_process_gpu_memory_bytes"
    out, _ = apply_policy(families, MetricsPolicy(per_process="workload"))
    assert not any(n.startswith("nodeml_process_") for (n, _) in flat(out))
    summed = {
        tuple(sorted((k, v) for k, v in lbls if k not in ("gpu", "uuid"))): v
        for (n, lbls), v in flat(out).items()
        if n == "nodeml_workload_gpu_memory_bytes"
    }
    by_pid = {dict(k)["pid"]: v for (n, k), v in flat(families).items() if n == name}
    pod = (("container", "srv"), ("namespace", "ml"), ("pod", "a-0"))
    assert summed[pod] == by_pid["5001"] + by_pid["5002"]
    assert summed[(("slurm_job", "4242"), ("slurm_step", "0"))] == by_pid["5003"]
    assert summed[()] == by_pid["5000"]  # unattributed: the GPU's own label set
    assert total(out, "nodeml_workload_gpu_memory_bytes") == total(families, name)

    both, _ = apply_policy(families, MetricsPolicy(per_process="both"))
    assert flat(families).items() <= flat(both).items()
    assert total(both, "nodeml_workload_gpu_memory_bytes") == total(families, name)


def test_drop_labels_and_families():
    families = mps_families()
    out, _ = apply_policy(families, MetricsPolicy(drop_labels=("comm",)))
    assert not any("comm" in dict(k) for (_, k) in flat(out))
    assert len(flat(out)) == len(flat(families))  # pids keep the series apart
    out, _ = apply_policy(
        families, MetricsPolicy(drop_families=("nodeml_process_*", "nodeml_gpu_ecc_errors_total"))
    )
    names = {n for (n, _) in flat(out)}
    assert not any(n.startswith("nodeml_process_") for n in names)
    assert "nodeml_gpu_ecc_errors_total" not in names
    assert "nodeml_gpu_power_watts" in names


def test_start_times_are_not_summed():
    start = GaugeMetricFamily("nodeml_process_start_time_seconds", "Start.")
    for pid in (1, 2):
        start.add_sample(start.name, {"pid": str(pid), "comm": "x", "pod": "p"}, 1e9 + pid)
    out, _ = apply_policy([start], MetricsPolicy(per_process="workload"))
    assert out == []
    out, _ = apply_policy([start], MetricsPolicy(drop_labels=("comm",)))
    assert len(out[0].samples) == 2


def test_quantiles_and_info_merge_by_maximum():
    info = GaugeMetricFamily("nodeml_x_info", "Info.")
    lat = GaugeMetricFamily("nodeml_serving_request_latency_seconds", "Latency.")
    for target, v in (("a", 0.1), ("b", 0.3)):
        info.add_sample(info.name, {"target": target, "model": "m"}, 1)
        lat.add_sample(lat.name, {"target": target, "model": "m", "quantile": "0.9"}, v)
    out, _ = apply_policy([info, lat], MetricsPolicy(drop_labels=("target",)))
    assert [s.value for f in out for s in f.samples] == [1, 0.3]


def fork_bomb(n: int) -> list[Metric]:
    mem = GaugeMetricFamily("nodeml_process_gpu_memory_bytes", "Memory.")
    cpu = CounterMetricFamily("nodeml_process_cpu_seconds", "CPU.")
    info = GaugeMetricFamily("nodeml_workload_info", "Info.")
    for pid in range(1000, 1000 + n):
        gpu = {"gpu": "0", "uuid": "GPU-x", "pid": str(pid), "comm": "bomb"}
        mem.add_sample(mem.name, gpu, 1 << 20)
        cpu.add_sample(cpu.name + "_total", {**gpu, "mode": "user"}, 1.0)
        info.add_sample(info.name, {"pid": str(pid), "comm": "bomb", "uuid": "GPU-x"}, 1)
    return [mem, cpu, info]


def test_a_fork_bomb_is_capped_and_counted():
    limiter = CardinalityLimiter(MetricsPolicy(max_processes=256))
    started = time.perf_counter()
    out = limiter.apply(fork_bomb(20_000))
    elapsed = time.perf_counter() - started
    series = flat(out)
    assert len(pids(out, "nodeml_process_gpu_memory_bytes")) == 257  # 256 + other
    assert total(out, "nodeml_process_gpu_memory_bytes") == 20_000 * (1 << 20)
    assert len(series) == 256 * 3 + 2 + 1  # kept, two "other" series, the counter
    dropped = ("nodeml_series_dropped_total", frozenset({("reason", "max_processes")}))
    assert series[dropped] == (20_000 - 256) * 3
    limiter.apply(fork_bomb(300))
    assert flat(limiter.apply(fork_bomb(10)))[dropped] == (20_000 - 256) * 3 + 44 * 3
    assert elapsed < 2.0, elapsed


def test_renderer_applies_the_policy_and_exports_the_counter():
    collector = make_collector(scenario("mps"), clock := Clock())
    data = run_to(collector, clock, 3)
    renderer = Renderer(
        [collector], 1.0, process_metrics=False, policy=MetricsPolicy(per_process="workload")
    )
    snapshot: Snapshot = snapshot_of(data, WORKLOADS)
    text = renderer.render(snapshot).text
    got = values(text)
    assert ("nodeml_series_dropped_total", frozenset({("reason", "max_processes")})) in got
    assert not any(n.startswith("nodeml_process_") for (n, _) in got)
    assert any(n == "nodeml_workload_gpu_memory_bytes" for (n, _) in got)


# --- the documented series count ------------------------------------------------------------

DOC = Path(__file__).parent.parent / "docs" / "cardinality.md"


@pytest.mark.timeout(60)
async def test_documented_series_count_is_measured(aiohttp_client, inputs):
    """docs/cardinality.md's table is what the whole agent exposes at the defaults over the
    e2e fixtures (one H100, two GPU processes in pods, one model-server target)."""
    text = await scrape_agent(aiohttp_client, inputs)
    got = series_per_scope(text)
    rows = dict(re.findall(r"^\| (per \w+) \| ([\d.]+) \|", DOC.read_text(), re.MULTILINE))
    assert rows == {f"per {k}": f"{n / owners:g}" for k, (n, owners) in got.items()}, got


def test_policy_follows_a_config_reload(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("metrics:\n  max_processes: 8\n")
    config = Config(config_file=str(path), file=load_config_file(str(path)))
    agent = Agent(config, registry={}, process_metrics=False)
    assert agent.renderer.source.limiter.policy.max_processes == 8
    path.write_text("metrics:\n  per_process: workload\n")
    agent.reload()
    assert agent.renderer.source.limiter.policy == MetricsPolicy(per_process="workload")
    path.write_text("metrics:\n  max_processes: -1\n")
    with pytest.raises(ConfigError):
        agent.reload()
    assert agent.renderer.source.limiter.policy == MetricsPolicy(per_process="workload")
