"""PodStore: a full list, then watch events, into one node's indexed pods (no network)."""

from __future__ import annotations

import json

import pytest

from node_exporter_ml.kube.pods import PodMeta, WatchEvent, parse_pod, parse_watch_event
from node_exporter_ml.kube.store import PodStore
from tools.fake_kube import pod_json
from tools.host_trees import CID, STATIC_UID, UID

UID2 = "11111111-2222-4333-8444-555555555555"
CID2 = "e" * 64
SCRAPE = {"nodeml.io/scrape": "true", "nodeml.io/port": "8000"}


def pod(uid: str, name: str, **kw: object) -> PodMeta:
    return parse_pod(pod_json(uid, name, **kw))  # type: ignore[arg-type]


def event(kind: str, obj: dict[str, object]) -> WatchEvent:
    return parse_watch_event(json.dumps({"type": kind, "object": obj}))


@pytest.fixture
def store() -> PodStore:
    s = PodStore(node_name="node-a", source="apiserver")
    s.replace(
        [
            pod(UID, "vllm-0", containers={CID: "server"}, annotations=SCRAPE),
            pod(UID2, "triton-0", containers={CID2: "triton"}, ip="10.244.1.8"),
        ],
        at=100.0,
    )
    return s


def test_an_empty_store_has_never_synced() -> None:
    s = PodStore()
    assert (dict(s.pods), s.synced_at, s.version) == ({}, None, 0)
    assert s.data().pods == {}


def test_a_list_replaces_every_pod(store: PodStore) -> None:
    assert {p.name for p in store.pods.values()} == {"vllm-0", "triton-0"}
    store.replace([pod(UID2, "triton-0")], at=130.0)
    assert list(store.pods) == [UID2]
    assert (store.synced_at, store.version) == (130.0, 2)


def test_data_indexes_pods_by_uid_container_and_name(store: PodStore) -> None:
    data = store.data()
    assert data.pod(UID) is store.pods[UID]
    assert data.by_container[CID2] == (store.pods[UID2], "triton")
    assert data.by_name["ml/vllm-0"].uid == UID
    assert [t.url for t in data.targets] == ["http://10.244.1.7:8000/metrics"]
    assert (data.source, data.synced_at) == ("apiserver", 100.0)


def test_targets_are_only_this_nodes() -> None:
    s = PodStore(node_name="node-b")
    s.replace([pod(UID, "vllm-0", annotations=SCRAPE)], at=1.0)
    assert s.data().targets == ()


def test_watch_events_add_modify_and_delete(store: PodStore) -> None:
    third = pod_json("33333333-2222-4333-8444-555555555555", "tgi-0", containers={"a" * 64: "tgi"})
    assert store.apply(event("ADDED", third), 101.0)
    assert len(store.pods) == 3
    assert store.data().by_container["a" * 64][1] == "tgi"
    modified = pod_json(UID, "vllm-0", containers={CID: "server", CID2: "sidecar"})
    assert store.apply(event("MODIFIED", modified), 102.0)
    assert store.pods[UID].containers == {CID: "server", CID2: "sidecar"}
    assert store.data().targets == ()  # the modified pod dropped its annotations
    assert store.apply(event("DELETED", third), 103.0)
    assert set(store.pods) == {UID, UID2}
    assert (store.synced_at, store.version) == (103.0, 4)


def test_deleting_an_unknown_pod_is_still_a_change(store: PodStore) -> None:
    gone = pod_json("77777777-2222-4333-8444-555555555555", "gone-0")
    assert store.apply(event("DELETED", gone), 104.0)
    assert len(store.pods) == 2
    assert (store.synced_at, store.version) == (104.0, 2)


def test_bookmarks_and_errors_change_nothing(store: PodStore) -> None:
    before = store.data()
    bookmark = {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "9"}}}
    error = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
    for line in (bookmark, error):
        assert not store.apply(parse_watch_event(json.dumps(line)), 200.0)
    assert (store.synced_at, store.version) == (100.0, 1)
    assert store.data() is before


def test_data_is_built_again_only_after_a_change(store: PodStore) -> None:
    first = store.data()
    assert store.data() is first
    store.replace(store.pods.values(), at=101.0)
    second = store.data()
    assert second is not first
    assert second.pods == first.pods


def test_a_static_pod_is_found_by_its_kubelet_hash() -> None:
    s = PodStore()
    mirror = pod(
        "mirror-uid",
        "etcd-node-a",
        namespace="kube-system",
        annotations={"kubernetes.io/config.mirror": STATIC_UID},
    )
    s.replace([mirror], at=1.0)
    assert s.data().pod(STATIC_UID) is s.pods["mirror-uid"]
