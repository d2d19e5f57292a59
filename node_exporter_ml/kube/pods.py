"""Pods as the agent sees them, and the serving targets pods declare by annotation (pure).

`PodMeta` is what we keep of one pod; the parse_* helpers turn the API's JSON (a Pod, a
PodList, a watch line) into it; `annotation_targets` reads `nodeml.io/*` annotations;
`KubeData`, the kube collector's data, indexes one node's pods by UID, container id and
name. No I/O here: kube/store.py keeps the pods, kube/apiserver.py and kube/kubelet.py
fetch them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from node_exporter_ml.serving.options import ServingTarget
from node_exporter_ml.snapshot import DataKey, Snapshot

SCRAPE_ANNOTATION = "nodeml.io/scrape"
PORT_ANNOTATION = "nodeml.io/port"
PATH_ANNOTATION = "nodeml.io/path"
SCHEME_ANNOTATION = "nodeml.io/scheme"
# Static pods: the kubelet names their cgroups after its own UID (an md5 hash), which the
# API server's mirror pod carries in an annotation; its metadata.uid differs.
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
HASH_ANNOTATION = "kubernetes.io/config.hash"


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


KUBE = DataKey("kube", KubeData)


def kube_data(snapshot: Snapshot | None) -> KubeData | None:
    """The kube collector's data in `snapshot`, also while the API is down (last known)."""
    if snapshot is None:
        return None
    return snapshot.last_known(KUBE)


def kube_targets(snapshot: Snapshot | None) -> tuple[ServingTarget, ...]:
    """The annotation-declared serving targets of `snapshot` (for the serving collector)."""
    data = kube_data(snapshot)
    return data.targets if data is not None else ()
