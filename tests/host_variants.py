"""Every cgroup path variant of reference/cgroups-and-pods.md, as /proc/<pid>/cgroup texts.

Each row: an id, the /proc/<pid>/cgroup text, what must be parsed from it, and where the
cgroup lives in the host's cgroupfs (layout, and the host path when the process sees a
relative `/..` path from a private cgroup namespace).
"""

from __future__ import annotations

from dataclasses import dataclass

from tools.host_trees import CID, DOCKER_CID, KIND_CID, STATIC_UID, UID, UID_, v1_cgroup_file


@dataclass(frozen=True)
class Variant:
    id: str
    cgroup: str
    pod_uid: str | None = None
    container_id: str | None = None
    runtime: str | None = None
    qos: str | None = None
    unit: str | None = None
    conmon: bool = False
    layout: str = "v2"  # v2, v1, hybrid
    host_path: str | None = None  # where the cgroup is in the host tree, if not as shown
    slurm_job: str | None = None
    slurm_step: str | None = None


SYSTEMD_POD = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
BESTEFFORT_POD = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"

VARIANTS = [
    Variant(
        "v2 containerd systemd burstable",
        f"0::{SYSTEMD_POD}/cri-containerd-{CID}.scope\n",
        UID,
        CID,
        "containerd",
        "burstable",
    ),
    Variant(
        "v2 containerd cgroupfs burstable",
        f"0::/kubepods/burstable/pod{UID}/{CID}\n",
        UID,
        CID,
        None,
        "burstable",
    ),
    Variant(
        "v2 cri-o systemd besteffort",
        f"0::{BESTEFFORT_POD}/crio-{CID}.scope\n",
        UID,
        CID,
        "cri-o",
        "besteffort",
    ),
    Variant(
        "v2 cri-o conmon scope is not a container",
        f"0::{BESTEFFORT_POD}/crio-conmon-{CID}.scope\n",
        UID,
        None,
        "cri-o",
        "besteffort",
        conmon=True,
    ),
    Variant(
        "v2 cri-o cgroupfs",
        f"0::/kubepods/burstable/pod{UID}/crio-{CID}\n",
        UID,
        CID,
        "cri-o",
        "burstable",
    ),
    Variant(
        "v2 cri-o sandbox without .scope",
        f"0::{SYSTEMD_POD}/crio-{CID}\n",
        UID,
        CID,
        "cri-o",
        "burstable",
    ),
    Variant(
        "v2 docker systemd",
        f"0::{SYSTEMD_POD}/docker-{CID}.scope\n",
        UID,
        CID,
        "docker",
        "burstable",
    ),
    Variant(
        "v2 guaranteed cgroupfs", f"0::/kubepods/pod{UID}/{CID}\n", UID, CID, None, "guaranteed"
    ),
    Variant(
        "v2 guaranteed systemd cri-o",
        f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope\n",
        UID,
        CID,
        "cri-o",
        "guaranteed",
    ),
    Variant(
        "v2 static pod systemd",
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{STATIC_UID}"
        f".slice/cri-containerd-{CID}.scope\n",
        STATIC_UID,
        CID,
        "containerd",
        "besteffort",
    ),
    Variant(
        "v2 static pod cgroupfs",
        f"0::/kubepods/besteffort/pod{STATIC_UID}/{CID}\n",
        STATIC_UID,
        CID,
        None,
        "besteffort",
    ),
    Variant(
        "v2 kind nested kubelet root",
        "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
        f"kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        UID,
        CID,
        "containerd",
        "burstable",
    ),
    Variant(
        "v2 kind node inside docker",
        f"0::/system.slice/docker-{KIND_CID}.scope/kubelet.slice/kubelet-kubepods.slice/"
        f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n",
        UID,
        CID,
        "containerd",
        "besteffort",
    ),
    Variant(
        "v2 private cgroupns relative path",
        f"0::/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        UID,
        CID,
        "containerd",
        "besteffort",
        host_path=f"{BESTEFFORT_POD}/cri-containerd-{CID}.scope",
    ),
    Variant(
        "v1 containerd systemd slice:prefix:name",
        v1_cgroup_file(
            f"/system.slice/containerd.service/kubepods-besteffort-pod{UID_}"
            f".slice:cri-containerd:{CID}"
        ),
        UID,
        CID,
        "containerd",
        "besteffort",
        layout="v1",
    ),
    Variant(
        "v1 docker cgroupfs",
        v1_cgroup_file(f"/kubepods/burstable/pod{UID}/{CID}"),
        UID,
        CID,
        None,
        "burstable",
        layout="v1",
    ),
    Variant(
        "hybrid containerd systemd",
        v1_cgroup_file(
            f"{SYSTEMD_POD}/cri-containerd-{CID}.scope",
            unified=f"{SYSTEMD_POD}/cri-containerd-{CID}.scope",
        ),
        UID,
        CID,
        "containerd",
        "burstable",
        layout="hybrid",
    ),
    Variant(
        "hybrid with unified at root",
        v1_cgroup_file(f"/kubepods/pod{UID}/{CID}", unified="/"),
        UID,
        CID,
        None,
        "guaranteed",
        layout="hybrid",
    ),
    Variant("v2 systemd unit", "0::/system.slice/vllm.service\n", unit="vllm.service"),
    Variant(
        "v2 docker outside kubernetes",
        f"0::/system.slice/docker-{DOCKER_CID}.scope\n",
        None,
        DOCKER_CID,
        "docker",
    ),
    Variant(
        "v1 docker outside kubernetes",
        v1_cgroup_file(f"/docker/{DOCKER_CID}"),
        None,
        DOCKER_CID,
        "docker",
        layout="v1",
    ),
    Variant(
        "v2 podman",
        f"0::/machine.slice/libpod-{DOCKER_CID}.scope/container\n",
        None,
        DOCKER_CID,
        "podman",
    ),
    Variant(
        "v2 kind node's own containerd",
        f"0::/system.slice/docker-{KIND_CID}.scope/system.slice/containerd.service\n",
        None,
        KIND_CID,
        "docker",
        unit="containerd.service",
    ),
    Variant(
        "v2 user session",
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        unit="session-3.scope",
    ),
    # Slurm (reference/gpu-health-and-hpc.md section 4): cgroup/v2 up to 25.11 and from
    # 26.05 (SLUID job directories), several slurmd per node, and cgroup/v1.
    Variant(
        "v2 slurm srun step task",
        "0::/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0\n",
        slurm_job="4242",
        slurm_step="0",
    ),
    Variant(
        "v2 slurm batch step",
        "0::/system.slice/slurmstepd.scope/job_4242/step_batch/user/task_0\n",
        slurm_job="4242",
        slurm_step="batch",
    ),
    Variant(
        "v2 slurm extern step (pam_slurm_adopt ssh)",
        "0::/system.slice/slurmstepd.scope/job_4242/step_extern/user/task_special\n",
        slurm_job="4242",
        slurm_step="extern",
    ),
    Variant(
        "v2 slurm interactive step (salloc)",
        "0::/system.slice/slurmstepd.scope/job_77/step_interactive/user/task_0\n",
        slurm_job="77",
        slurm_step="interactive",
    ),
    Variant(
        "v2 slurm heterogeneous step",
        "0::/system.slice/slurmstepd.scope/job_4242/step_3+1/user/task_2\n",
        slurm_job="4242",
        slurm_step="3+1",
    ),
    Variant(
        "v2 slurm 26.05 SLUID job directory",
        "0::/system.slice/slurmstepd.scope/s5K1KKYAYG5D00/step_0/user/task_0\n",
        slurm_job="s5K1KKYAYG5D00",
        slurm_step="0",
    ),
    Variant(
        "v2 slurm several slurmd per node",
        "0::/system.slice/node07_slurmstepd.scope/job_9/step_1/user/task_0\n",
        slurm_job="9",
        slurm_step="1",
    ),
    Variant(
        "v2 slurm custom CgroupSlice",
        "0::/slurm.slice/slurmstepd.scope/s5K1KKYAYG5D00/step_batch/user/task_0\n",
        slurm_job="s5K1KKYAYG5D00",
        slurm_step="batch",
    ),
    Variant(
        "v2 slurmstepd leaf is not the job",
        "0::/system.slice/slurmstepd.scope/job_4242/step_0/slurm\n",
        unit="slurmstepd.scope",
    ),
    Variant(
        "v2 slurmstepd waiting for work",
        "0::/system.slice/slurmstepd.scope/system\n",
        unit="slurmstepd.scope",
    ),
    Variant(
        "v1 slurm task",
        v1_cgroup_file(
            "/slurm/uid_1000/job_4242/step_0/task_0", systemd_path="/system.slice/slurmd.service"
        ),
        layout="v1",
        slurm_job="4242",
        slurm_step="0",
    ),
    Variant(
        "v1 slurm several slurmd per node",
        v1_cgroup_file(
            "/slurm_node07/uid_1000/job_4242/step_batch/task_0",
            systemd_path="/system.slice/slurmd.service",
        ),
        layout="v1",
        slurm_job="4242",
        slurm_step="batch",
    ),
]
