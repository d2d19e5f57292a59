"""Pod metadata of this node's pods, and the serving targets pods declare by annotation.

Pods come from a list + watch of the API server (or the kubelet's /pods), off the scrape
path. The parse_* helpers and `annotation_targets` are pure; `PodSource` is the background task
that keeps the last known pods (it keeps them when the API server goes away).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp

from node_exporter_ml.config import ConfigError
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.serving.options import ServingTarget
from node_exporter_ml.snapshot import Snapshot

log = logging.getLogger(__name__)

SCRAPE_ANNOTATION = "nodeml.io/scrape"
PORT_ANNOTATION = "nodeml.io/port"
PATH_ANNOTATION = "nodeml.io/path"
SCHEME_ANNOTATION = "nodeml.io/scheme"
# Static pods: the kubelet names their cgroups after its own UID (an md5 hash), which the
# API server's mirror pod carries in an annotation; its metadata.uid differs.
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
HASH_ANNOTATION = "kubernetes.io/config.hash"
MAX_EVENT_BYTES = 32 * 1024 * 1024


class KubeFormatError(ValueError):
    """A Kubernetes API answer that is not in the shape the API documents."""


@dataclass(frozen=True, slots=True)
class PodMeta:
    """What we keep of one pod: identity, where it runs, and container id -> name."""

    uid: str
    namespace: str
    name: str
    node_name: str | None = None
    pod_ip: str | None = None
    phase: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    containers: Mapping[str, str] = field(default_factory=dict)
    config_hash: str | None = None


def parse_container_id(text: str) -> str | None:
    """The bare id of a containerStatuses[].containerID ("containerd://<id>", "cri-o://<id>")."""
    _, sep, cid = text.partition("://")
    return cid or None if sep else (text or None)


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def parse_pod(obj: object) -> PodMeta:
    """A Pod object (API JSON) -> PodMeta.

    Raises:
        KubeFormatError: the object has no metadata.uid / namespace / name.
    """
    if not isinstance(obj, Mapping):
        raise KubeFormatError("expected a Pod object")
    meta, spec, status = (obj.get(k) or {} for k in ("metadata", "spec", "status"))
    if not all(isinstance(x, Mapping) for x in (meta, spec, status)):
        raise KubeFormatError("Pod metadata/spec/status must be objects")
    uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
    if not (isinstance(uid, str) and isinstance(namespace, str) and isinstance(name, str)):
        raise KubeFormatError("Pod without metadata.uid, namespace and name")
    containers = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or ():
            if isinstance(cs, Mapping) and isinstance(cs.get("containerID"), str):
                cid = parse_container_id(cs["containerID"])
                if cid and isinstance(cs.get("name"), str):
                    containers[cid] = cs["name"]
    annotations = _str_map(meta.get("annotations"))
    config_hash = annotations.get(MIRROR_ANNOTATION) or annotations.get(HASH_ANNOTATION)
    return PodMeta(
        uid=uid,
        namespace=namespace,
        name=name,
        node_name=spec.get("nodeName") if isinstance(spec.get("nodeName"), str) else None,
        pod_ip=status.get("podIP") if isinstance(status.get("podIP"), str) else None,
        phase=status.get("phase") if isinstance(status.get("phase"), str) else None,
        labels=_str_map(meta.get("labels")),
        annotations=annotations,
        containers=containers,
        config_hash=config_hash,
    )


@dataclass(frozen=True, slots=True)
class PodList:
    """One page of a PodList."""

    pods: list[PodMeta]
    resource_version: str
    continue_token: str | None


def parse_pod_list(obj: object) -> PodList:
    """A PodList (API JSON, or the kubelet's /pods) -> pods, resourceVersion and continue.

    Raises:
        KubeFormatError: it is not a PodList.
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get("items", []), list):
        raise KubeFormatError("expected a PodList with items")
    meta = obj.get("metadata") or {}
    pods = [parse_pod(item) for item in obj.get("items") or ()]
    return PodList(pods, str(meta.get("resourceVersion") or ""), meta.get("continue") or None)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One line of a watch stream: ADDED/MODIFIED/DELETED/BOOKMARK/ERROR."""

    type: str
    pod: PodMeta | None = None
    resource_version: str | None = None
    code: int | None = None
    message: str = ""


def parse_watch_event(line: bytes | str) -> WatchEvent:
    """Parse one JSON line of a watch stream (`{"type": ..., "object": ...}`).

    Raises:
        KubeFormatError: the line is not a watch event.
    """
    try:
        obj = json.loads(line)
    except ValueError as err:
        raise KubeFormatError(f"watch event is not JSON ({err})") from err
    if not isinstance(obj, Mapping) or not isinstance(obj.get("object"), Mapping):
        raise KubeFormatError("expected a watch event with type and object")
    kind, body = str(obj.get("type")), obj["object"]
    rv = (body.get("metadata") or {}).get("resourceVersion")
    if kind == "ERROR":
        code = body.get("code")
        return WatchEvent(
            kind, code=code if isinstance(code, int) else None, message=str(body.get("message", ""))
        )
    if kind == "BOOKMARK":
        return WatchEvent(kind, resource_version=rv)
    if kind not in ("ADDED", "MODIFIED", "DELETED"):
        raise KubeFormatError(f"unknown watch event type {kind!r}")
    return WatchEvent(kind, parse_pod(body), rv)


def annotation_problem(pod: PodMeta) -> str | None:
    """Why a pod asking to be scraped cannot be (None when it is fine or does not ask)."""
    a = pod.annotations
    if a.get(SCRAPE_ANNOTATION) != "true":
        return None
    port = a.get(PORT_ANNOTATION, "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"{PORT_ANNOTATION}: expected a port number 1-65535, got {port!r}"
    if a.get(SCHEME_ANNOTATION, "http") not in ("http", "https"):
        return f"{SCHEME_ANNOTATION}: expected http or https, got {a[SCHEME_ANNOTATION]!r}"
    if not a.get(PATH_ANNOTATION, "/metrics").startswith("/"):
        return f"{PATH_ANNOTATION}: expected a path starting with /, got {a[PATH_ANNOTATION]!r}"
    return None


def annotation_targets(
    pods: Iterable[PodMeta], node_name: str | None = None
) -> list[ServingTarget]:
    """Serving targets declared by pod annotations, owned by their pod.

    Only running pods on `node_name` (when given) with a pod IP count, and only their own
    pod IP is ever used: the annotations choose port, path and scheme, never the host.
    The target's name is `namespace/pod:port`, stable across pod IP changes.
    """
    targets = []
    for pod in sorted(pods, key=lambda p: (p.namespace, p.name)):
        if pod.annotations.get(SCRAPE_ANNOTATION) != "true" or annotation_problem(pod):
            continue
        if node_name and pod.node_name != node_name:
            continue
        if pod.phase not in (None, "Running") or not pod.pod_ip:
            continue
        try:
            ip = ipaddress.ip_address(pod.pod_ip)
        except ValueError:
            continue
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        a = pod.annotations
        port = int(a[PORT_ANNOTATION])
        scheme, path = a.get(SCHEME_ANNOTATION, "http"), a.get(PATH_ANNOTATION, "/metrics")
        owner = f"{pod.namespace}/{pod.name}"
        targets.append(
            # No name: the `target` label is host:port, as DESIGN.md says for unnamed targets;
            # the series also carry the pod's namespace/pod/container labels.
            ServingTarget(url=f"{scheme}://{host}:{port}{path}", pod=owner)
        )
    return targets


@dataclass(frozen=True, slots=True)
class KubeData:
    """What the kube collector returns: the pods on this node and their declared targets."""

    pods: Mapping[str, PodMeta] = field(default_factory=dict)
    targets: tuple[ServingTarget, ...] = ()
    synced_at: float | None = None
    source: str = "apiserver"
    by_uid: Mapping[str, PodMeta] = field(default_factory=dict)
    by_container: Mapping[str, tuple[PodMeta, str]] = field(default_factory=dict)
    by_name: Mapping[str, PodMeta] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        pods: Mapping[str, PodMeta],
        *,
        node_name: str | None = None,
        synced_at: float | None = None,
        source: str = "apiserver",
    ) -> KubeData:
        """Index pods by UID (and static pods' kubelet hash), container id, namespace/name."""
        by_uid, by_container, by_name = {}, {}, {}
        for pod in pods.values():
            by_uid[pod.uid] = pod
            if pod.config_hash:
                by_uid[pod.config_hash] = pod
            by_name[f"{pod.namespace}/{pod.name}"] = pod
            for cid, cname in pod.containers.items():
                by_container[cid] = (pod, cname)
        return cls(
            pods=dict(pods),
            targets=tuple(annotation_targets(pods.values(), node_name)),
            synced_at=synced_at,
            source=source,
            by_uid=by_uid,
            by_container=by_container,
            by_name=by_name,
        )

    def pod(self, uid: str) -> PodMeta | None:
        """The pod with this UID as a cgroup path shows it (dashes, or a static pod's hash)."""
        return self.by_uid.get(uid) or self.by_uid.get(uid.replace("-", ""))


def kube_data(snapshot: Snapshot | None) -> KubeData | None:
    """The kube collector's data in `snapshot`, also while the API is down (last known)."""
    if snapshot is None:
        return None
    return snapshot.stale_data("kube", KubeData)


def kube_targets(snapshot: Snapshot | None) -> tuple[ServingTarget, ...]:
    """The annotation-declared serving targets of `snapshot` (for the serving collector)."""
    data = kube_data(snapshot)
    return data.targets if data is not None else ()


# --- the background source ------------------------------------------------------------------


class _GoneError(Exception):
    """The watch's resourceVersion is too old (HTTP 410 / ERROR 410): list again."""


def in_cluster_api_url(environ: Mapping[str, str] = os.environ) -> str | None:
    """https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, or None outside a cluster."""
    host = environ.get("KUBERNETES_SERVICE_HOST")
    if not host:
        return None
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _read_optional(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    if ca_file and os.path.isfile(ca_file):
        return ssl.create_default_context(cafile=ca_file)
    return ssl.create_default_context()


async def _read_pod_list(resp: aiohttp.ClientResponse) -> PodList:
    """Read a pod list and decode it off the loop (a node's full pod specs run to megabytes).

    Raises:
        ValueError: the body is not JSON, or not a pod list (KubeFormatError).
    """
    body = await resp.read()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: parse_pod_list(json.loads(body)))


class PodSource:
    """Keeps the pods of one node current, in the background.

    API server mode: list (paged) then watch from the list's resourceVersion; a watch that
    ends or breaks resumes from the last resourceVersion seen; 410 Gone lists again; an
    unreachable API is retried with backoff while the last known pods stay. Kubelet mode:
    poll `<kubelet>/pods` every `poll_interval`. The bearer token is re-read for every
    request (projected service-account tokens rotate).
    """

    def __init__(
        self,
        *,
        api_url: str | None,
        node_name: str | None,
        token_file: str | None = None,
        ca_file: str | None = None,
        kubelet_url: str | None = None,
        token: str | None = None,
        tls: Callable[[], ssl.SSLContext] | None = None,
        poll_interval: float = 15.0,
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (1.0, 30.0),
        page_size: int = 500,
    ) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        self.kubelet_url = kubelet_url.rstrip("/") if kubelet_url else None
        self.node_name = node_name
        self.token_file = token_file
        self.ca_file = ca_file
        self.token = token  # a kubeconfig's inline token, used when token_file gives none
        self.tls = tls or functools.partial(_ssl_context, ca_file)
        self.poll_interval = poll_interval
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.page_size = page_size
        self.pods: dict[str, PodMeta] = {}
        self.synced_at: float | None = None
        self.healthy = False
        self.last_error: str | None = "not synced yet"
        self.version = 0
        self.lists = 0
        self.watches = 0
        self._once = OnceLogger(log)
        self._ssl: ssl.SSLContext | None = None
        self._data: tuple[int, KubeData] | None = None

    @property
    def source(self) -> str:
        """Where pods come from: kubelet or apiserver."""
        return "kubelet" if self.kubelet_url else "apiserver"

    def _set_healthy(self) -> None:
        if not self.healthy and self._once.forget("kube-down"):
            log.info("kube: %s reachable again", self.source)
        self.healthy, self.last_error = True, None

    def _set_failed(self, err: BaseException | str) -> None:
        msg = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
        self.healthy, self.last_error = False, msg
        self._once.log(
            logging.WARNING,
            "kube-down",
            "kube: %s unavailable: %s (keeping %d known pods, retrying)",
            self.source,
            msg,
            len(self.pods),
        )

    def _replace_all(self, pods: Iterable[PodMeta]) -> None:
        self.pods = {p.uid: p for p in pods}
        self.synced_at = time.time()
        self.version += 1

    async def _headers(self) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        token = await loop.run_in_executor(None, _read_optional, self.token_file) or self.token
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _get(self, session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
        resp = await session.get(url, headers=await self._headers(), ssl=self._ssl or True)
        if resp.status == 410:
            resp.release()
            raise _GoneError()
        if resp.status != 200:
            text = (await resp.text())[:200]
            resp.release()
            raise aiohttp.ClientResponseError(
                resp.request_info, (), status=resp.status, message=text.strip()
            )
        return resp

    def _pods_url(self, **params: str) -> str:
        query = {"fieldSelector": f"spec.nodeName={self.node_name}"} if self.node_name else {}
        query.update(params)
        return f"{self.api_url}/api/v1/pods?{urlencode(query)}"

    async def list_pods(self, session: aiohttp.ClientSession) -> str:
        """List this node's pods (all pages) into the store; returns the resourceVersion."""
        pods: list[PodMeta] = []
        cont: str | None = None
        while True:
            params = {"limit": str(self.page_size)}
            if cont:
                params["continue"] = cont
            resp = await self._get(session, self._pods_url(**params))
            async with resp:
                page = await _read_pod_list(resp)
            pods += page.pods
            cont = page.continue_token
            if not cont:
                break
        self._replace_all(pods)
        self.lists += 1
        self._set_healthy()
        return page.resource_version

    async def _lines(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        buffer = b""
        async for chunk in resp.content.iter_any():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
            if len(buffer) > MAX_EVENT_BYTES:
                raise KubeFormatError(f"watch event larger than {MAX_EVENT_BYTES} bytes")

    async def watch_pods(self, session: aiohttp.ClientSession, resource_version: str) -> str:
        """Follow the watch from `resource_version` until it ends; returns the last seen.

        Raises:
            _GoneError: the resourceVersion expired (list again).
        """
        url = self._pods_url(
            watch="1",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(self.watch_timeout),
        )
        resp = await self._get(session, url)
        self.watches += 1
        self._set_healthy()
        async with resp:
            async for line in self._lines(resp):
                event = parse_watch_event(line)
                if event.type == "ERROR":
                    if event.code == 410:
                        raise _GoneError()
                    raise KubeFormatError(f"watch error {event.code}: {event.message}")
                if event.pod is not None:
                    if event.type == "DELETED":
                        self.pods.pop(event.pod.uid, None)
                    else:
                        self.pods[event.pod.uid] = event.pod
                    self.synced_at = time.time()
                    self.version += 1
                if event.resource_version:
                    resource_version = event.resource_version
        return resource_version

    async def poll_kubelet(self, session: aiohttp.ClientSession) -> None:
        """One read of the kubelet's /pods into the store."""
        resp = await self._get(session, f"{self.kubelet_url}/pods")
        async with resp:
            page = await _read_pod_list(resp)
        pods = [p for p in page.pods if not self.node_name or p.node_name in (None, self.node_name)]
        self._replace_all(pods)
        self.lists += 1
        self._set_healthy()

    async def run(self) -> None:
        """Run until cancelled, keeping `pods` current."""
        loop = asyncio.get_running_loop()
        try:
            self._ssl = await loop.run_in_executor(None, self.tls)
        except (ConfigError, ssl.SSLError, OSError) as err:  # a kubeconfig's files changed
            self._set_failed(err)
            return
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=self.watch_timeout + 30)
        delay = self.backoff[0]
        rv: str | None = None
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    if self.kubelet_url:
                        await self.poll_kubelet(session)
                        delay = self.backoff[0]
                        await asyncio.sleep(self.poll_interval)
                        continue
                    if rv is None:
                        rv = await self.list_pods(session)
                    started = time.monotonic()
                    rv = await self.watch_pods(session, rv)
                    delay = self.backoff[0]
                    if time.monotonic() - started < 1.0:  # never spin on a server that hangs up
                        await asyncio.sleep(delay)
                except _GoneError:
                    log.debug("kube: resourceVersion %s expired, listing again", rv)
                    rv = None
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
                    # ValueError: not JSON, or not the shape of a PodList / watch event.
                    self._set_failed(err)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff[1])

    def data(self) -> KubeData:
        """The current pods as KubeData (built anew only when something changed)."""
        if self._data is not None and self._data[0] == self.version:
            return self._data[1]
        data = KubeData.build(
            self.pods, node_name=self.node_name, synced_at=self.synced_at, source=self.source
        )
        self._data = (self.version, data)
        return data
