"""Boundaries of host/cgroup_path.py that mutation testing found untested (issue 19).

`identify` ranks the lines of /proc/<pid>/cgroup: a path naming a pod (4) over one naming a
container (3) over the v2 or name=systemd path (2) over any other controller's own cgroup (1)
over the root (0); on equal rank the FIRST line wins. Each test puts the weaker line first,
so only the rank, not the order, can pick the answer.

Below: the Slurm directories above a task (a step, a job, the stepd scope, the v1 roots),
parse_slurm's "-1 when no job" contract, and a unit above a pod or container that is dropped.
"""

from __future__ import annotations

import pytest

from node_exporter_ml.host.cgroup_path import (
    CgroupIdentity,
    identify,
    parse_cgroup_path,
    parse_slurm,
)
from node_exporter_ml.host.procfs import parse_cgroup_file
from tools.host_trees import CID, UID

POD = f"/kubepods/burstable/pod{UID}/{CID}"
CONTAINER = f"/system.slice/docker-{CID}.scope"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"4:memory:{CONTAINER}\n7:cpu:{POD}\n", POD),  # pod beats a container
        (f"1:name=systemd:/user.slice/a.service\n4:memory:{CONTAINER}\n", CONTAINER),
        ("4:memory:/batch/job1\n1:name=systemd:/user.slice/a.service\n", "/user.slice/a.service"),
        ("4:memory:/batch/job1\n0::/system.slice/b.service\n", "/system.slice/b.service"),
        (f"7:cpu:{POD}\n4:memory:/kubepods/besteffort/pod{UID.replace('0', '1')}\n", POD),
        ("4:memory:/batch/job1\n5:cpu:/batch/job2\n", "/batch/job1"),  # equal rank: first
    ],
    ids=[
        "pod over container",
        "container over systemd",
        "systemd over controller",
        "v2 over controller",
        "first pod line wins",
        "first controller line wins",
    ],
)
def test_identify_rank_not_order(text: str, expected: str) -> None:
    path, _ = identify(parse_cgroup_file(text))
    assert path == expected


def test_unit_at_the_top_of_the_path_is_kept() -> None:
    # no pod, no container above it: the unit is the workload (Slurm/systemd hosts)
    assert parse_cgroup_path("/train.service").unit == "train.service"


def test_unit_right_below_a_pod_slice_is_kept() -> None:
    # the unit is deeper than the pod (index 1 against 0) and no container came after the pod
    ident = parse_cgroup_path(f"/kubepods-pod{UID.replace('-', '_')}.slice/sidecar.service")
    assert (ident.pod_uid, ident.container_id, ident.unit) == (UID, None, "sidecar.service")


# Slurm (reference/gpu-health-and-hpc.md section 4, docs/slurm.md): the directories above and
# at a task, each of which the cgroup tree holds (the cgroup collector reads them too).
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            "/system.slice/slurmstepd.scope",
            CgroupIdentity(unit="slurmstepd.scope"),
            id="v2 stepd scope itself, no job below",
        ),
        pytest.param(
            "/system.slice/slurmstepd.scope/job_4242",
            CgroupIdentity(slurm_job="4242"),
            id="v2 job directory, no step yet",
        ),
        pytest.param(
            "/system.slice/slurmstepd.scope/s5K1KKYAYG5D00/step_batch",
            CgroupIdentity(slurm_job="s5K1KKYAYG5D00", slurm_step="batch"),
            id="v2 26.05 step directory",
        ),
        pytest.param(
            "/slurm/uid_1000/job_4242/step_extern",
            CgroupIdentity(slurm_job="4242", slurm_step="extern"),
            id="v1 step directory",
        ),
        pytest.param("/slurm", CgroupIdentity(), id="v1 slurm root, no uid below"),
        pytest.param("/slurm_node07", CgroupIdentity(), id="v1 per-node slurm root"),
        pytest.param(
            "/user.slice/uid_1000/job_4242/step_0/task_0",
            CgroupIdentity(),
            id="uid_ below anything but slurm is no job",
        ),
    ],
)
def test_slurm_directories_above_the_task(path: str, expected: CgroupIdentity) -> None:
    assert parse_cgroup_path(path) == expected


# parse_slurm's first value is the index of the job component, or -1 when there is none
@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            ["system.slice", "slurmstepd.scope", "job_4242", "step_0", "user", "task_0"],
            (2, "4242", "0"),
        ),
        (["slurm_node07", "uid_1000", "job_9", "step_batch", "task_0"], (2, "9", "batch")),
        (["system.slice", "slurmstepd.scope"], (-1, None, None)),
        (["system.slice", "slurmstepd.scope", "system"], (-1, None, None)),
        (["system.slice", "slurmstepd.scope", "job_4242", "step_0", "slurm"], (-1, None, None)),
        (["system.slice", "containerd.service"], (-1, None, None)),
        ([], (-1, None, None)),
    ],
    ids=[
        "v2 task",
        "v1 task",
        "scope without job",
        "waiting stepds",
        "slurmstepd leaf",
        "no slurm at all",
        "root",
    ],
)
def test_parse_slurm_index(parts: list[str], expected: tuple[int, str | None, str | None]) -> None:
    assert parse_slurm(parts) == expected


def test_unit_above_a_pod_level_cgroup_is_not_kept() -> None:
    # the pod-level parent of the reference's v1 + systemd leaf (containerd.service above the pod)
    path = f"/system.slice/containerd.service/kubepods-besteffort-pod{UID.replace('-', '_')}.slice"
    assert parse_cgroup_path(path) == CgroupIdentity(UID, qos="besteffort")


def test_unit_above_a_container_without_pod_is_not_kept() -> None:
    # rootless Podman: the container scope sits below the user's systemd manager
    path = f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope"
    assert parse_cgroup_path(path) == CgroupIdentity(None, CID, "podman")
