"""Boundaries of host/cgroup_path.py that mutation testing found untested (issue 19).

`identify` ranks the lines of /proc/<pid>/cgroup: a path naming a pod (4) over one naming a
container (3) over the v2 or name=systemd path (2) over any other controller's own cgroup (1)
over the root (0); on equal rank the FIRST line wins. Each test puts the weaker line first,
so only the rank, not the order, can pick the answer.
"""

from __future__ import annotations

import pytest

from node_exporter_ml.host.cgroup_path import identify, parse_cgroup_path
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
