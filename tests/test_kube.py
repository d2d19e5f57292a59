"""Pod metadata: parsers, annotation targets, and list+watch against a fake API server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from blockbuster import BlockBuster, blockbuster_ctx

from node_exporter_ml.collectors.base import CollectContext, NoDataError, StaleDataError
from node_exporter_ml.collectors.kube import NOT_IN_CLUSTER, KubeCollector, label_name
from node_exporter_ml.kube.apiserver import ApiServerSource, in_cluster_api_url
from node_exporter_ml.kube.kubelet import KubeletSource
from node_exporter_ml.kube.pods import (
    KubeData,
    KubeFormatError,
    PodMeta,
    annotation_problem,
    annotation_targets,
    kube_targets,
    parse_container_id,
    parse_pod,
    parse_pod_list,
    parse_watch_event,
)
from node_exporter_ml.snapshot import CollectorResult, Snapshot
from tests.helpers import make_config
from tools.fake_kube import TOKEN, FakeApi, pod_json
from tools.host_trees import CID, STATIC_UID, UID, sample_values, value

UID2 = "11111111-2222-4333-8444-555555555555"
CID2 = "e" * 64


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx() as bb:
        yield bb


# --- parsers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cid"),
    [
        (f"containerd://{CID}", CID),
        (f"cri-o://{CID}", CID),
        (f"docker://{CID}", CID),
        ("containerd://", None),
        ("", None),
    ],
    ids=["containerd", "cri-o", "docker", "empty id", "not started"],
)
def test_parse_container_id(text: str, cid: str | None) -> None:
    assert parse_container_id(text) == cid


def test_parse_pod_real_shape() -> None:
    raw = pod_json(
        UID,
        "vllm-0",
        containers={CID: "server", CID2: "sidecar"},
        annotations={"nodeml.io/scrape": "true"},
    )
    raw["status"]["initContainerStatuses"] = [
        {"name": "init", "containerID": f"containerd://{'1' * 64}"}
    ]
    pod = parse_pod(raw)
    assert (pod.uid, pod.namespace, pod.name, pod.node_name) == (UID, "ml", "vllm-0", "node-a")
    assert (pod.pod_ip, pod.phase) == ("10.244.1.7", "Running")
    assert pod.containers == {CID: "server", CID2: "sidecar", "1" * 64: "init"}
    assert pod.labels == {"app": "vllm"}


def test_parse_static_mirror_pod() -> None:
    raw = pod_json(
        "mirror-uid",
        "etcd-node-a",
        "kube-system",
        annotations={
            "kubernetes.io/config.mirror": STATIC_UID,
            "kubernetes.io/config.hash": STATIC_UID,
        },
    )
    pod = parse_pod(raw)
    data = KubeData.build({pod.uid: pod})
    assert data.pod(STATIC_UID) is pod
    assert data.pod("mirror-uid") is pod


@pytest.mark.parametrize(
    "raw",
    [[], {"metadata": {"name": "x"}}, {"metadata": "x"}],
    ids=["not an object", "no uid", "metadata not an object"],
)
def test_parse_pod_rejects(raw: object) -> None:
    with pytest.raises(KubeFormatError):
        parse_pod(raw)


def test_parse_pod_list() -> None:
    page = parse_pod_list(
        {
            "kind": "PodList",
            "metadata": {"resourceVersion": "7", "continue": "c"},
            "items": [pod_json(UID, "a-0")],
        }
    )
    assert (len(page.pods), page.resource_version, page.continue_token) == (1, "7", "c")
    with pytest.raises(KubeFormatError):
        parse_pod_list({"items": "nope"})


@pytest.mark.parametrize(
    ("line", "kind", "rv", "code"),
    [
        (json.dumps({"type": "ADDED", "object": pod_json(UID, "a-0")}), "ADDED", "1", None),
        (
            json.dumps(
                {
                    "type": "BOOKMARK",
                    "object": {"kind": "Pod", "metadata": {"resourceVersion": "9"}},
                }
            ),
            "BOOKMARK",
            "9",
            None,
        ),
        (
            json.dumps(
                {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "code": 410,
                        "reason": "Expired",
                        "message": "too old resource version",
                    },
                }
            ),
            "ERROR",
            None,
            410,
        ),
    ],
    ids=["added", "bookmark", "410 gone"],
)
def test_parse_watch_event(line: str, kind: str, rv: str | None, code: int | None) -> None:
    event = parse_watch_event(line)
    assert (event.type, event.resource_version, event.code) == (kind, rv, code)


@pytest.mark.parametrize(
    "line",
    ["{not json", '{"type": "ADDED"}', '{"type": "RENAMED", "object": {}}'],
    ids=["not json", "no object", "unknown type"],
)
def test_parse_watch_event_rejects(line: str) -> None:
    with pytest.raises(KubeFormatError):
        parse_watch_event(line)


# --- annotation targets -------------------------------------------------------------------------


def _pod(annotations: dict[str, str], **kw: object) -> PodMeta:
    return parse_pod(pod_json(UID, "vllm-0", annotations=annotations, **kw))  # type: ignore[arg-type]


SCRAPE = {"nodeml.io/scrape": "true", "nodeml.io/port": "8000"}


@pytest.mark.parametrize(
    ("pod", "url"),
    [
        (_pod(SCRAPE), "http://10.244.1.7:8000/metrics"),
        (
            _pod({**SCRAPE, "nodeml.io/path": "/prom", "nodeml.io/scheme": "https"}),
            "https://10.244.1.7:8000/prom",
        ),
        (_pod(SCRAPE, ip="fd00::7"), "http://[fd00::7]:8000/metrics"),
        (_pod({**SCRAPE, "nodeml.io/scrape": "false"}), None),
        (_pod({"nodeml.io/scrape": "true"}), None),
        (_pod({**SCRAPE, "nodeml.io/port": "http"}), None),
        (_pod({**SCRAPE, "nodeml.io/port": "70000"}), None),
        (_pod({**SCRAPE, "nodeml.io/scheme": "ftp"}), None),
        (_pod({**SCRAPE, "nodeml.io/path": "metrics"}), None),
        (_pod(SCRAPE, node="node-b"), None),
        (_pod(SCRAPE, ip=None), None),
        (_pod(SCRAPE, phase="Pending"), None),
        (_pod(SCRAPE, ip="not-an-ip"), None),
    ],
    ids=[
        "defaults",
        "path and scheme",
        "ipv6 pod",
        "scrape false",
        "no port",
        "named port",
        "port out of range",
        "bad scheme",
        "relative path",
        "other node",
        "no pod ip",
        "pending",
        "bad pod ip",
    ],
)
def test_annotation_targets(pod: PodMeta, url: str | None) -> None:
    targets = annotation_targets([pod], "node-a")
    assert [t.url for t in targets] == ([url] if url else [])
    for t in targets:
        assert t.pod == "ml/vllm-0"
        assert t.name is None  # unnamed: the target label is host:port (DESIGN.md)
        assert t.label == url.split("/")[2]


def test_annotation_problem_says_why() -> None:
    assert annotation_problem(_pod({**SCRAPE, "nodeml.io/port": "http"})) == (
        "nodeml.io/port: expected a port number 1-65535, got 'http'"
    )
    assert annotation_problem(_pod(SCRAPE)) is None
    assert annotation_problem(_pod({})) is None


def test_in_cluster_api_url() -> None:
    assert in_cluster_api_url({}) is None
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_api_url(env) == "https://10.96.0.1:443"
    assert in_cluster_api_url({"KUBERNETES_SERVICE_HOST": "fd00::1"}) == "https://[fd00::1]:443"


# --- the background source against the fake API server ------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    fake = FakeApi()
    fake.add(pod_json(UID, "vllm-0", containers={CID: "server"}, annotations=SCRAPE))
    fake.add(pod_json(UID2, "triton-0", containers={CID2: "triton"}, ip="10.244.1.8"))
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return str(path)


def source_for(api: FakeApi, token_file: str, **kw: object) -> ApiServerSource:
    return ApiServerSource(
        url=api.url, node_name="node-a", token_file=token_file, backoff=(0.02, 0.1), **kw
    )  # type: ignore[arg-type]


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling state owned by the code under test
            await asyncio.sleep(0.01)


@pytest.fixture
async def running(api: FakeApi, token_file: str) -> AsyncIterator[ApiServerSource]:
    source = source_for(api, token_file, page_size=1)
    task = asyncio.create_task(source.run())
    await until(lambda: source.watches == 1)
    yield source
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_list_is_paged_and_scoped_to_the_node(api: FakeApi, running: ApiServerSource) -> None:
    assert {p.name for p in running.pods.values()} == {"vllm-0", "triton-0"}
    lists = [q for q in api.requests if "watch" not in q]
    assert [q.get("continue") for q in lists] == [None, "1"]  # two pages of one pod
    assert all(q["fieldSelector"] == "spec.nodeName=node-a" for q in api.requests)
    assert set(api.auth) == {f"Bearer {TOKEN}"}
    watch = api.requests[-1]
    assert (watch["watch"], watch["resourceVersion"], watch["allowWatchBookmarks"]) == (
        "1",
        "102",
        "true",
    )
    assert running.healthy


async def test_watch_applies_added_modified_deleted(api: FakeApi, running: ApiServerSource) -> None:
    third = pod_json("33333333-2222-4333-8444-555555555555", "tgi-0", containers={"a" * 64: "tgi"})
    api.add(third)
    await until(lambda: len(running.pods) == 3)
    api.add(pod_json(UID, "vllm-0", containers={CID: "server", CID2: "sidecar"}), "MODIFIED")
    await until(lambda: len(running.pods[UID].containers) == 2)
    api.add(third, "DELETED")
    await until(lambda: len(running.pods) == 2)
    data = running.data()
    assert data.by_container[CID2][1] == "sidecar"
    assert data.targets == ()  # the modified pod dropped its annotations
    assert running.lists == 1


async def test_watch_end_resumes_from_last_resource_version(
    api: FakeApi, running: ApiServerSource
) -> None:
    api.add(pod_json(UID, "vllm-0", containers={CID: "server"}), "MODIFIED")
    await until(lambda: running.pods[UID].annotations == {})
    api.end_watches()
    await until(lambda: running.watches == 2)
    assert api.requests[-1]["resourceVersion"] == "103"
    assert running.lists == 1  # resumed, not listed again
    assert running.healthy


async def test_broken_watch_is_resumed(api: FakeApi, running: ApiServerSource) -> None:
    api.break_watches()
    await until(lambda: running.watches == 2)
    assert running.lists == 1
    assert api.requests[-1]["resourceVersion"] == "102"
    api.add(pod_json("44444444-2222-4333-8444-555555555555", "late-0"))
    await until(lambda: len(running.pods) == 3)
    assert running.healthy


async def test_410_gone_lists_again(api: FakeApi, running: ApiServerSource) -> None:
    api.compact()
    api.add(pod_json("55555555-2222-4333-8444-555555555555", "new-0"))
    api.break_watches()  # the resumed watch asks for rv 102, which is gone now
    await until(lambda: running.lists == 2 and running.watches >= 3)
    assert {p.name for p in running.pods.values()} == {"vllm-0", "triton-0", "new-0"}
    assert running.healthy


async def test_api_down_keeps_pods_then_recovers(api: FakeApi, running: ApiServerSource) -> None:
    await api.stop()
    await until(lambda: not running.healthy)
    assert running.last_error
    assert {p.name for p in running.pods.values()} == {"vllm-0", "triton-0"}
    api.add(pod_json("66666666-2222-4333-8444-555555555555", "while-down-0"))
    await api.start()
    await until(lambda: running.healthy and len(running.pods) == 3)


async def test_garbage_answer_is_retried(api: FakeApi, token_file: str) -> None:
    api.garbage_lists = 2
    source = source_for(api, token_file)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.healthy)
        assert len(source.pods) == 2
        assert len([q for q in api.requests if "watch" not in q]) == 3
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
def bad_token_file(tmp_path: Path) -> str:
    path = tmp_path / "bad-token"
    path.write_text("wrong")
    return str(path)


async def test_unauthorized_is_a_failure(api: FakeApi, bad_token_file: str) -> None:
    source = source_for(api, bad_token_file)
    task = asyncio.create_task(source.run())
    await until(lambda: source.last_error is not None and "401" in source.last_error)
    assert not source.healthy
    assert source.synced_at is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_kubelet_pods_endpoint(tmp_path: Path, token_file: str) -> None:
    body = {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": [
            pod_json(UID, "vllm-0", containers={CID: "server"}),
            pod_json(UID2, "elsewhere-0", node="node-b"),
        ],
    }
    seen: list[str | None] = []

    async def pods(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/pods", pods)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    source = KubeletSource(
        url=f"http://127.0.0.1:{port}",
        node_name="node-a",
        token_file=token_file,
        poll_interval=0.05,
    )
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.lists >= 2)
        assert [p.name for p in source.pods.values()] == ["vllm-0"]
        assert seen[0] == f"Bearer {TOKEN}"
        assert source.source == "kubelet"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await runner.cleanup()


# --- the collector --------------------------------------------------------------------------------


def kube_ctx(api_url: str | None, token_file: str = "", **file: object) -> CollectContext:
    return CollectContext(
        make_config(
            kube_api_url=api_url,
            kube_node_name="node-a",
            kube_token_file=token_file,
            **file,
        )
    )


async def test_not_in_a_cluster(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    collector = KubeCollector(kube_ctx(None))
    with caplog.at_level("INFO"):
        await collector.start()
    assert [r.getMessage() for r in caplog.records] == [
        f"kube: {NOT_IN_CLUSTER}; pod metadata is off"
    ]
    with pytest.raises(NoDataError, match="not in a cluster"):
        await collector.update(None)
    await collector.stop()


async def test_collector_stale_while_down(api: FakeApi, token_file: str) -> None:
    collector = KubeCollector(
        kube_ctx(api.url, token_file, kube_pod_labels=("app", "team.io/owner"))
    )
    assert collector.source is not None
    collector.source.backoff = (0.02, 0.1)
    with pytest.raises(NoDataError):
        await collector.update(None)  # not started
    await collector.start()
    try:
        await until(lambda: collector.source is not None and collector.source.healthy)
        data = await collector.update(None)
        assert {p.name for p in data.pods.values()} == {"vllm-0", "triton-0"}
        assert [t.url for t in data.targets] == ["http://10.244.1.7:8000/metrics"]
        snap = Snapshot(0, {"kube": CollectorResult("kube", True, 0, data)})
        values = sample_values(collector.families(data, snap))
        assert (
            value(
                values,
                "nodeml_kube_pod_info",
                pod="vllm-0",
                label_app="vllm",
                label_team_io_owner="",
            )
            == 1
        )
        assert value(values, "nodeml_kube_pods") == 2
        await api.stop()
        await until(lambda: collector.source is not None and not collector.source.healthy)
        with pytest.raises(StaleDataError) as err:
            await collector.update(None)
        assert err.value.data is data
        failed = Snapshot(0, {"kube": CollectorResult("kube", False, 0, err.value.data, "down")})
        assert kube_targets(failed) == data.targets
    finally:
        await collector.stop()


async def test_bad_annotation_logged_once(
    api: FakeApi, token_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    api.add(
        pod_json(UID2, "triton-0", annotations={**SCRAPE, "nodeml.io/port": "grpc"}), "MODIFIED"
    )
    collector = KubeCollector(kube_ctx(api.url, token_file))
    await collector.start()
    try:
        await until(lambda: collector.source is not None and collector.source.healthy)
        with caplog.at_level("WARNING"):
            for _ in range(3):
                data = await collector.update(None)
        warnings = [r.getMessage() for r in caplog.records if r.name.endswith("kube")]
        assert warnings == [
            "kube: pod ml/triton-0: nodeml.io/port: expected a port number 1-65535, got 'grpc'"
        ]
        assert [t.pod for t in data.targets] == ["ml/vllm-0"]
    finally:
        await collector.stop()


async def test_no_node_name() -> None:
    collector = KubeCollector(CollectContext(make_config(kube_api_url="http://127.0.0.1:1")))
    await collector.start()
    with pytest.raises(NoDataError, match="no node name"):
        await collector.update(None)


def test_label_name() -> None:
    assert label_name("app.kubernetes.io/name") == "label_app_kubernetes_io_name"
