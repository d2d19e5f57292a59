"""Table tests: /proc/<pid>/cgroup text -> pod UID, container id, runtime, QoS, unit."""

from __future__ import annotations

import pytest

from node_exporter_ml.host.cgroup_path import CgroupIdentity, identify, parse_cgroup_path
from node_exporter_ml.host.procfs import parse_cgroup_file
from tests.host_variants import VARIANTS, Variant
from tools.host_trees import CID, UID


@pytest.mark.parametrize("v", VARIANTS, ids=[v.id for v in VARIANTS])
def test_identity_of_every_variant(v: Variant) -> None:
    _, ident = identify(parse_cgroup_file(v.cgroup))
    assert ident == CgroupIdentity(
        v.pod_uid, v.container_id, v.runtime, v.qos, v.unit, v.conmon, v.slurm_job, v.slurm_step
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/", CgroupIdentity(), id="root says nothing"),
        pytest.param("/..", CgroupIdentity(), id="cgroupns root seen from inside"),
        pytest.param(
            "/kubepods.slice/kubepods-burstable.slice", CgroupIdentity(), id="qos slice without pod"
        ),
        pytest.param(
            f"/kubepods/burstable/pod{UID}",
            CgroupIdentity(UID, qos="burstable"),
            id="pod level process",
        ),
        pytest.param(
            f"/kubepods/burstable/pod{UID}/{CID[:63]}",
            CgroupIdentity(UID, qos="burstable"),
            id="63 hex is not a container id",
        ),
        pytest.param(
            "/kubepods/burstable/pod1234/abc", CgroupIdentity(), id="short uid is not a pod"
        ),
        pytest.param(
            "/system.slice/containerd.service",
            CgroupIdentity(unit="containerd.service"),
            id="runtime daemon unit",
        ),
        pytest.param(
            f"/system.slice/docker-{CID}.scope/init.scope",
            CgroupIdentity(None, CID, "docker", unit="init.scope"),
            id="unit inside a container is deeper",
        ),
        pytest.param(
            f"/kubepods/pod{UID}/{CID}/sub:group",
            CgroupIdentity(UID, CID, None, "guaranteed"),
            id="path containing colons",
        ),
    ],
)
def test_parse_cgroup_path(path: str, expected: CgroupIdentity) -> None:
    assert parse_cgroup_path(path) == expected


def test_identify_prefers_the_line_naming_a_pod() -> None:
    text = f"4:memory:/kubepods/besteffort/pod{UID}/{CID}\n2:cpu,cpuacct:/\n0::/\n"
    path, ident = identify(parse_cgroup_file(text))
    assert path == f"/kubepods/besteffort/pod{UID}/{CID}"
    assert ident.pod_uid == UID


def test_identify_prefers_a_controller_cgroup_over_the_root() -> None:
    text = "9:name=systemd:/\n4:memory:/process_api/1ff83af68ed6e51c\n2:cpuacct:/\n0::/\n"
    assert identify(parse_cgroup_file(text)) == ("/process_api/1ff83af68ed6e51c", CgroupIdentity())


def test_identify_with_no_lines() -> None:
    assert identify(()) == (None, CgroupIdentity())
