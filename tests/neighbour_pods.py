"""The two pods of the H100 neighbour recording: pids, pod uids, container ids, cgroup paths and
container stats (a Burstable pod under the systemd driver, a BestEffort one under cgroupfs)."""

from __future__ import annotations

from pathlib import Path

from tools.fake_kube import TOKEN, FakeApi, pod_json
from tools.host_trees import (
    CgroupStats,
    FakeProc,
    build_cgroup_tree,
    make_v2_root,
    write_proc,
)

SERVER, NEIGHBOUR = 415, 476
SERVER_UID = "8b0c6a52-6f1e-4f7e-9d53-0c2f1a7e9b11"
NEIGHBOUR_UID = "c4f1d2e3-0a9b-4c8d-8e7f-6a5b4c3d2e1f"
SERVER_CID = "5e" * 32
NEIGHBOUR_CID = "7a" * 32
SERVER_CGROUP = (
    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
    f"{SERVER_UID.replace('-', '_')}.slice/cri-containerd-{SERVER_CID}.scope\n"
)
NEIGHBOUR_CGROUP = f"0::/kubepods/besteffort/pod{NEIGHBOUR_UID}/{NEIGHBOUR_CID}\n"
SERVER_STATS = CgroupStats(
    throttled_usec=3_100_000, nr_throttled=1_234, memory_current=4 << 30, inactive_file=1 << 30
)
NEIGHBOUR_STATS = CgroupStats(
    throttled_usec=12_500_000,
    nr_throttled=4_321,
    quota_us=None,
    memory_current=7 << 30,
    inactive_file=512 << 20,
    memory_max=None,
)


def write_host(root: Path, *extra: FakeProc) -> None:
    """The two pods' processes (and `extra` ones) under root/proc, their container cgroups
    under root/cg (cgroup v2), and the API server token at root/token."""
    write_proc(root / "proc", [
        FakeProc(pid=1, comm="systemd", cmdline=("/sbin/init",)),
        FakeProc(pid=SERVER, comm="python3", cmdline=("python3", "server.py"),
                 cgroup=SERVER_CGROUP),
        FakeProc(pid=NEIGHBOUR, comm="python3", cmdline=("python3", "matmul.py"),
                 cgroup=NEIGHBOUR_CGROUP, utime=99_000, threads=9),
        *extra,
    ])  # fmt: skip
    make_v2_root(root / "cg")
    build_cgroup_tree(root / "cg", "v2", SERVER_CGROUP, None, SERVER_STATS)
    build_cgroup_tree(root / "cg", "v2", NEIGHBOUR_CGROUP, None, NEIGHBOUR_STATS)
    (root / "token").write_text(TOKEN)


def add_pods(api: FakeApi) -> None:
    """The two pods, as the API server lists them for node-a."""
    api.add(pod_json(SERVER_UID, "mlp-server-0", "ml", containers={SERVER_CID: "server"}))
    api.add(pod_json(NEIGHBOUR_UID, "matmul-0", "batch", containers={NEIGHBOUR_CID: "trainer"},
                     runtime="docker", ip="10.244.1.9"))  # fmt: skip
