"""What collectors produce and read, the enrichers they register, and the startup check."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest
from prometheus_client.core import Metric

from node_exporter_ml import registry as registry_module
from node_exporter_ml.agent import Agent
from node_exporter_ml.collectors.base import BlockingCollector
from node_exporter_ml.correlation import attribute_workloads
from node_exporter_ml.kube.pods import KUBE
from node_exporter_ml.registry import (
    EnricherRegistration,
    Registration,
    active_enrichers,
    check_enabled,
    load_collectors,
    lost_features,
    register_collector,
)
from node_exporter_ml.serving.data import SERVING
from node_exporter_ml.serving.enrich import LatencyCauses
from node_exporter_ml.snapshot import CGROUP, NVML, PROCESS, DataKey, Snapshot
from tests.helpers import config

REGISTRY = load_collectors()
DEFAULT = frozenset(n for n, r in REGISTRY.items() if r.default_enabled)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def check(enabled: Iterable[str], caplog: pytest.LogCaptureFixture) -> list[str]:
    enabled = frozenset(enabled)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="node_exporter_ml.registry"):
        check_enabled(REGISTRY, enabled, active_enrichers(REGISTRY, enabled))
    return warnings_of(caplog)


def test_every_collector_produces_the_key_named_after_it():
    for name, reg in REGISTRY.items():
        assert reg.produces is not None
        assert reg.produces.name == name
    assert REGISTRY["process"].produces is PROCESS
    assert REGISTRY["cgroup"].produces is CGROUP
    assert REGISTRY["kube"].produces is KUBE
    assert REGISTRY["serving"].produces is SERVING


def test_readers_declare_what_they_read():
    assert PROCESS in REGISTRY["cgroup"].reads
    assert {PROCESS, NVML, KUBE} <= set(REGISTRY["serving"].reads)
    assert NVML in REGISTRY["process"].reads


def test_the_default_set_warns_nothing(caplog):
    assert check(DEFAULT, caplog) == []


def test_no_process_collector_warns_once_with_every_feature_lost(caplog):
    (warning,) = check(DEFAULT - {"process"}, caplog)
    assert warning.startswith("--no-collector.process takes away: ")
    for feature in ("cgroup selection", "serving owners", "workload labels"):
        assert feature in warning
    assert "--collector.process" in warning


def test_each_disabled_producer_gets_its_own_warning(caplog):
    warnings = check(DEFAULT - {"process", "nvml", "kube"}, caplog)
    assert [w.split()[0] for w in warnings] == [
        "--no-collector.kube",
        "--no-collector.nvml",
        "--no-collector.process",
    ]


def test_a_disabled_collector_nothing_reads_warns_nothing(caplog):
    assert check(DEFAULT - {"drift", "node", "podresources"}, caplog) == []


def test_readers_that_are_off_do_not_count(caplog):
    # Only the nvml collector: the reads of the other collectors and of the correlation
    # steps (which have no pids to work on) are no lost features.
    assert check({"nvml"}, caplog) == [
        "--no-collector.process takes away: /proc comm names on GPU process series "
        "(--collector.process turns it back on)"
    ]
    assert check((), caplog) == []


def test_a_feature_read_by_two_parts_is_named_once():
    lost = lost_features(
        REGISTRY, DEFAULT - {"process"}, active_enrichers(REGISTRY, DEFAULT - {"process"})
    )
    assert lost["process"].count("serving owners") == 1


def test_enrichers_run_workloads_first_then_latency_causes():
    steps = active_enrichers(REGISTRY, DEFAULT)
    assert [s.name for s in steps] == ["workloads", "latency_causes"]
    built = [s.factory(config(*DEFAULT)) for s in steps]
    assert built[0] is attribute_workloads
    assert isinstance(built[1], LatencyCauses)


def test_an_enricher_runs_while_one_of_its_owners_is_enabled():
    assert [s.name for s in active_enrichers(REGISTRY, DEFAULT - {"serving"})] == ["workloads"]
    assert [s.name for s in active_enrichers(REGISTRY, DEFAULT - {"process"})] == [
        "workloads",
        "latency_causes",
    ]
    assert [s.name for s in active_enrichers(REGISTRY, {"serving"})] == ["latency_causes"]
    assert active_enrichers(REGISTRY, {"nvml", "kube"}) == []
    assert active_enrichers({}, DEFAULT) == []


def _step(name: str, after: tuple[str, ...] = ()) -> EnricherRegistration:
    return EnricherRegistration(name, lambda _config: attribute_workloads, ("x",), after)


def test_enrichers_wait_for_the_steps_they_name(monkeypatch):
    steps = {s.name: s for s in (_step("c", ("b",)), _step("b", ("a", "gone")), _step("a"))}
    monkeypatch.setattr(registry_module, "_ENRICHERS", steps)
    reg = {"x": Registration("x", BlockingCollector, True, "")}
    assert [s.name for s in active_enrichers(reg, {"x"})] == ["a", "b", "c"]


def test_a_cycle_of_enrichers_is_refused(monkeypatch):
    steps = {s.name: s for s in (_step("a", ("b",)), _step("b", ("a",)))}
    monkeypatch.setattr(registry_module, "_ENRICHERS", steps)
    reg = {"x": Registration("x", BlockingCollector, True, "")}
    with pytest.raises(ValueError, match="a, b wait for each other"):
        active_enrichers(reg, {"x"})


def test_a_key_must_name_its_collector():
    with pytest.raises(ValueError, match="a key names its maker"):
        register_collector("cgroups", produces=CGROUP)


MADE = DataKey("maker", int)


class Maker(BlockingCollector[int]):
    name = "maker"

    def update(self, previous: Snapshot | None) -> int:
        return 1

    def families(self, data: int, snapshot: Snapshot) -> Iterable[Metric]:
        return []


class Reader(Maker):
    name = "reader"


def test_the_agent_checks_its_enabled_set(caplog):
    reg = {
        "maker": Registration("maker", Maker, True, "", MADE),
        "reader": Registration("reader", Reader, True, "", DataKey("reader", int), {MADE: "x"}),
    }
    with caplog.at_level(logging.WARNING):
        Agent(config("reader"), registry=reg, process_metrics=False)
        Agent(config("reader", "maker"), registry=reg, process_metrics=False)
    assert warnings_of(caplog) == [
        "--no-collector.maker takes away: x (--collector.maker turns it back on)"
    ]
