"""Typed data keys: what `snapshot[KEY]` and `snapshot.last_known(KEY)` return."""

from __future__ import annotations

from node_exporter_ml.kube.pods import KUBE, KubeData, kube_data
from node_exporter_ml.serving.data import SERVING_CAUSES, ServingCauses
from node_exporter_ml.snapshot import (
    NVML,
    PROCESS,
    CollectorResult,
    NvmlData,
    ProcessData,
    Snapshot,
)


def snap(*results: CollectorResult) -> Snapshot:
    return Snapshot(taken_at=0.0, results={r.name: r for r in results})


def test_a_key_finds_the_data_of_its_collector_when_it_succeeded():
    data = ProcessData()
    s = snap(CollectorResult("process", True, 0.0, data))
    assert s[PROCESS] is data
    assert s.last_known(PROCESS) is data
    assert s[NVML] is None


def test_failed_data_is_only_last_known():
    data = KubeData()
    s = snap(CollectorResult("kube", False, 0.0, data, "API server unreachable"))
    assert s[KUBE] is None
    assert s.last_known(KUBE) is data
    assert kube_data(s) is data


def test_data_of_another_type_is_none():
    s = snap(CollectorResult("nvml", True, 0.0, ProcessData()))
    assert s[NVML] is None
    assert s.last_known(NVML) is None
    assert snap(CollectorResult("nvml", True, 0.0, NvmlData()))[NVML] == NvmlData()


def test_keys_name_their_collector_and_type():
    assert (PROCESS.name, PROCESS.type) == ("process", ProcessData)
    assert (KUBE.name, KUBE.type) == ("kube", KubeData)


def test_a_correlation_step_result_is_read_by_its_key():
    causes = ServingCauses({}, 60.0)
    s = snap().replace(derived={"other": 1})
    assert s.derived_data(SERVING_CAUSES) is None
    out = s.with_derived(SERVING_CAUSES, causes)
    assert out.derived == {"other": 1, "serving": causes}
    assert out.derived_data(SERVING_CAUSES) is causes
    assert s.derived == {"other": 1}  # snapshots are never mutated
    assert out.replace(derived={"serving": "not causes"}).derived_data(SERVING_CAUSES) is None
