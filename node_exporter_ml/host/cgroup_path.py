"""Pure parsing of a cgroup path into pod UID, container id, QoS, systemd unit, Slurm job.

Components are matched anywhere in the path, never by a fixed prefix: kubelet roots
nested in other slices (kind, `--cgroup-root`), private cgroup namespaces (`/../..`) and
runc's v1 "slice:prefix:name" form all parse. The deepest container component wins
(Kepler's rule), so a container nested in a container (kind) yields the inner one.

Slurm (SchedMD cgroup/v2 and v1 plugins): v2 `<slice>/[<node>_]slurmstepd.scope/<JOB>/
step_<S>/{user/task_<n>|user/task_special|slurm}`, where `<JOB>` is `job_<id>` up to 25.11
and the SLUID (`s5K1KKYAYG5D00`) from 26.05; v1 `slurm[_<node>]/uid_<uid>/job_<id>/
step_<S>/task_<n>`. The `slurm` leaf holds slurmstepd itself and `slurmstepd.scope/system`
the stepds waiting for work: neither is the job's workload.
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
_STEPD_SCOPE = re.compile(r"^(?:[\w.-]+_)?slurmstepd\.scope$")
_V1_SLURM = re.compile(r"^slurm(?:_[\w.-]+)?$")
_V1_UID = re.compile(r"^uid_\d+$")
_JOB_ID = re.compile(r"^job_(\d{1,20})$")
_SLUID = re.compile(r"^s[0-9A-Z]{8,24}$")  # Crockford base32 after "s" (Slurm 26.05)
_STEP = re.compile(r"^step_(batch|extern|interactive|\d{1,10}(?:\+\d{1,10})?)$")


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
    slurm_job: str | None = None
    slurm_step: str | None = None


def parse_slurm(parts: list[str]) -> tuple[int, str | None, str | None]:
    """(index of the job component or -1, job, step) of a path's components.

    The job is `<id>` of `job_<id>` or the SLUID; the step is what follows `step_`
    (`batch`, `extern`, `interactive`, `0`, `0+1`). The slurmstepd leaf (`slurm`) and the
    waiting stepds (`system`) give (-1, None, None).
    """
    for i, part in enumerate(parts):
        if _STEPD_SCOPE.match(part):
            job_at = i + 1
        elif _V1_SLURM.match(part) and i + 1 < len(parts) and _V1_UID.match(parts[i + 1]):
            job_at = i + 2
        else:
            continue
        if job_at >= len(parts):
            return -1, None, None
        m = _JOB_ID.match(parts[job_at])
        if m is None and not _SLUID.match(parts[job_at]):
            return -1, None, None
        job = m.group(1) if m else parts[job_at]
        step = None
        if job_at + 1 < len(parts):
            if s := _STEP.match(parts[job_at + 1]):
                step = s.group(1)
            if parts[job_at + 2 : job_at + 3] == ["slurm"]:
                return -1, None, None
        return job_at, job, step
    return -1, None, None


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
    slurm_at, slurm_job, slurm_step = parse_slurm(parts)
    if unit_at < max(pod_at, container_at, slurm_at):
        unit = None
    return CgroupIdentity(pod_uid, container_id, runtime, qos, unit, conmon, slurm_job, slurm_step)


def identify(lines: Sequence[CgroupLine]) -> tuple[str | None, CgroupIdentity]:
    """The path that best identifies a process's workload, and what it says.

    On v1 and hybrid hosts the hierarchies may disagree (a controller left at `/`); the
    first path naming a pod wins, else one naming a container or a Slurm job, else the v2 (`0::`) or
    `name=systemd` path, else any controller's path that is not the root.
    """
    best: tuple[int, str | None, CgroupIdentity] = (-1, None, CgroupIdentity())
    for line in lines:
        ident = parse_cgroup_path(line.path)
        if ident.pod_uid:
            rank = 4
        elif ident.container_id or ident.slurm_job:
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
