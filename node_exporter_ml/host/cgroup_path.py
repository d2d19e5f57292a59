"""Pure parsing of a cgroup path into pod UID, container id, QoS class and systemd unit.

Components are matched anywhere in the path, never by a fixed prefix: kubelet roots
nested in other slices (kind, `--cgroup-root`), private cgroup namespaces (`/../..`) and
runc's v1 "slice:prefix:name" form all parse. The deepest container component wins
(Kepler's rule), so a container nested in a container (kind) yields the inner one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from node_exporter_ml.host.procfs import CgroupLine

_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
# `pod<uid>` (cgroupfs driver) or `<parents>-pod<uid_with_underscores>.slice` (systemd driver).
_POD = re.compile(rf"^(?:[a-z0-9_-]+-)?pod({_UID})(?:\.slice)?$")
_RUNTIME_PREFIX = {
    "cri-containerd": "containerd",
    "crio": "cri-o",
    "docker": "docker",
    "libpod": "podman",
}
_SCOPED = re.compile(r"^(cri-containerd|crio|docker|libpod)-([0-9a-f]{64})(?:\.scope)?$")
_CONMON = re.compile(r"^crio-conmon-[0-9a-f]{64}(?:\.scope)?$")
_BARE = re.compile(r"^[0-9a-f]{64}$")
_UNIT = re.compile(r"^[^/]+\.(?:service|scope)$")
_QOS = {"burstable", "besteffort"}


@dataclass(frozen=True, slots=True)
class CgroupIdentity:
    """What a cgroup path says about its workload (every field None when it says nothing).

    `container_id` is the container below the pod (or a plain Docker/Podman container
    outside Kubernetes); `unit` is a systemd unit only when it is deeper than any pod or
    container component; `conmon` marks CRI-O's container monitor scope, not a container.
    """

    pod_uid: str | None = None
    container_id: str | None = None
    runtime: str | None = None
    qos: str | None = None
    unit: str | None = None
    conmon: bool = False


def _components(path: str) -> list[str]:
    parts: list[str] = []
    for component in path.split("/"):
        parts.extend(c for c in component.split(":") if c and c != "..")
    return parts


def _qos_of(component: str) -> str | None:
    for qos in _QOS:
        if component == qos or f"-{qos}" in component:
            return qos
    return None


def parse_cgroup_path(path: str) -> CgroupIdentity:
    """Parse one cgroup path (as /proc/<pid>/cgroup shows it) into a CgroupIdentity."""
    parts = _components(path)
    pod_at = container_at = unit_at = -1
    pod_uid = container_id = runtime = unit = qos = None
    conmon = False
    for i, part in enumerate(parts):
        if m := _POD.match(part):
            pod_at, pod_uid = i, m.group(1).replace("_", "-")
            container_at, container_id, runtime, conmon = -1, None, None, False
            qos = next((q for q in map(_qos_of, parts[: i + 1]) if q), "guaranteed")
        elif m := _SCOPED.match(part):
            container_at, container_id, runtime = i, m.group(2), _RUNTIME_PREFIX[m.group(1)]
            conmon = False
        elif _CONMON.match(part):
            container_at, container_id, runtime, conmon = i, None, "cri-o", True
        elif _BARE.match(part):
            container_at, container_id, conmon = i, part, False
            previous = parts[i - 1] if i else ""
            runtime = _RUNTIME_PREFIX.get(previous)
        elif _UNIT.match(part):
            unit_at, unit = i, part
    if unit_at < max(pod_at, container_at):
        unit = None
    return CgroupIdentity(pod_uid, container_id, runtime, qos, unit, conmon)


def identify(lines: Sequence[CgroupLine]) -> tuple[str | None, CgroupIdentity]:
    """The path that best identifies a process's workload, and what it says.

    On v1 and hybrid hosts the hierarchies may disagree (a controller left at `/`); the
    first path naming a pod wins, else one naming a container, else the v2 (`0::`) or
    `name=systemd` path, else any controller's path that is not the root.
    """
    best: tuple[int, str | None, CgroupIdentity] = (-1, None, CgroupIdentity())
    for line in lines:
        ident = parse_cgroup_path(line.path)
        if ident.pod_uid:
            rank = 4
        elif ident.container_id:
            rank = 3
        elif not line.path.strip("/"):
            rank = 0  # the root says nothing; any controller's own cgroup says more
        elif not line.controllers or "name=systemd" in line.controllers:
            rank = 2
        else:
            rank = 1
        if rank > best[0]:
            best = (rank, line.path, ident)
    return best[1], best[2]
