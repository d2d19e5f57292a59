"""Pure joins: pid -> cgroup identity -> container -> pod, filling `Snapshot.workloads`.

`attribute_workloads` is the first correlation step; the process collector registers it
(as the `workloads` enricher) with the keys it reads: PROCESS, CGROUP and KUBE.
"""

from __future__ import annotations

from collections.abc import Mapping

from node_exporter_ml.host.cgroup_path import CgroupIdentity, parse_cgroup_path
from node_exporter_ml.kube.pods import KubeData, kube_data
from node_exporter_ml.snapshot import CGROUP, PROCESS, Snapshot


def workload_of(ident: CgroupIdentity, kube: KubeData | None) -> dict[str, str]:
    """The labels of one process's workload, from its cgroup identity and the pods.

    - a pod the API knows (by UID, a static pod's hash, or the container id): namespace,
      pod and container (container "" for a pod-level process such as CRI-O's conmon),
      and the Slurm job and step too when the pod runs slurmd;
    - else a Slurm job: slurm_job and slurm_step (from the cgroup path or the environment);
    - else a systemd unit: unit (a cgroup path only names one deeper than any container);
    - else a container: container_id (a pod the API does not know, or plain Docker);
    - else nothing.
    """
    slurm: dict[str, str] = {}
    if ident.slurm_job:
        slurm = {"slurm_job": ident.slurm_job, "slurm_step": ident.slurm_step or ""}
    pod = kube.pod(ident.pod_uid) if kube is not None and ident.pod_uid else None
    container = ""
    if kube is not None and ident.container_id:
        found = kube.by_container.get(ident.container_id)
        if found is not None and (pod is None or found[0].uid == pod.uid):
            pod, container = found
    if pod is not None:  # a job of a slurmd that runs in a pod (Slinky, soperator) has both
        return {"namespace": pod.namespace, "pod": pod.name, "container": container, **slurm}
    if slurm:
        return slurm
    if ident.unit:  # set only when deeper than any container (a unit inside a kind node)
        return {"unit": ident.unit}
    if ident.container_id:
        return {"container_id": ident.container_id}
    return {}


def attribute_workloads(snapshot: Snapshot) -> Snapshot:
    """Enricher: fill `workloads` for every pid the process or cgroup collector saw.

    Uses the process collector's cgroup identity of each pid, and the cgroup collector's
    pids (GPU holders the process collector has not read yet); pod metadata is the kube
    collector's, also its last known pods while the API server is unreachable. Existing
    entries in `workloads` are kept.
    """
    kube = kube_data(snapshot)
    idents: dict[int, CgroupIdentity] = {}
    cgroups = snapshot[CGROUP]
    if cgroups is not None:
        for key, sample in cgroups.cgroups.items():
            ident = parse_cgroup_path(key)
            for pid in sample.pids:
                idents[pid] = ident
    processes = snapshot[PROCESS]
    if processes is not None:
        for pid, p in processes.processes.items():
            idents[pid] = CgroupIdentity(
                pod_uid=p.pod_uid,
                container_id=p.container_id,
                runtime=p.runtime,
                qos=p.qos,
                unit=p.unit,
                slurm_job=p.slurm_job,
                slurm_step=p.slurm_step,
            )
    workloads: dict[int, Mapping[str, str]] = {}
    for pid, ident in idents.items():
        labels = workload_of(ident, kube)
        if labels:
            workloads[pid] = labels
    workloads.update(snapshot.workloads)
    return snapshot.replace(workloads=workloads)
