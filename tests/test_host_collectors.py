"""The process and cgroup collectors and the workload enricher over fixture trees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node_exporter_ml.collectors.cgroup import CgroupCollector
from node_exporter_ml.collectors.process import ProcessCollector, ProcessMatch
from node_exporter_ml.correlation import attribute_workloads
from node_exporter_ml.kube.pods import KubeData, PodMeta
from node_exporter_ml.serving.options import ServingTarget
from node_exporter_ml.snapshot import (
    CGROUP,
    PROCESS,
    CollectorResult,
    ProcessData,
    Snapshot,
)
from tests.host_helpers import GPU, ctx, nvml, snap, tick
from tests.host_variants import VARIANTS, Variant
from tools.host_trees import (
    BTIME,
    CID,
    STATIC_UID,
    UID,
    CgroupStats,
    FakeProc,
    build_cgroup_tree,
    sample_values,
    value,
    write_proc,
)


def pods() -> KubeData:
    return KubeData.build(
        {
            UID: PodMeta(
                UID, "ml", "vllm-0", "node-a", "10.244.1.7", "Running", containers={CID: "server"}
            ),
            "mirror-uid": PodMeta(
                "mirror-uid",
                "kube-system",
                "triton-node-a",
                "node-a",
                annotations={"kubernetes.io/config.mirror": STATIC_UID},
                config_hash=STATIC_UID,
            ),
        }
    )


@pytest.mark.parametrize("v", VARIANTS, ids=[v.id for v in VARIANTS])
def test_every_path_variant_end_to_end(tmp_path: Path, v: Variant) -> None:
    stats = CgroupStats()
    write_proc(tmp_path / "proc", [FakeProc(pid=415, cgroup=v.cgroup)])
    build_cgroup_tree(tmp_path / "cg", v.layout, v.cgroup, v.host_path, stats)
    c = ctx(tmp_path)
    s = tick(c, snap(nvml=nvml(415)), pods())

    p = s[PROCESS].processes[415]  # type: ignore[union-attr]
    assert (p.pod_uid, p.container_id, p.runtime, p.qos, p.unit, p.slurm_job, p.slurm_step) == (
        v.pod_uid,
        v.container_id,
        v.runtime,
        v.qos,
        v.unit,
        v.slurm_job,
        v.slurm_step,
    )
    assert p.reasons == {"gpu"}
    cgroups = s[CGROUP]
    assert cgroups is not None
    [sample] = cgroups.cgroups.values()
    assert sample.pids == (415,)
    assert sample.cpu_throttled_seconds_total == pytest.approx(3.1)
    assert sample.memory_working_set_bytes == stats.memory_current - stats.inactive_file

    expected = {}
    if v.pod_uid == UID:
        expected = {
            "namespace": "ml",
            "pod": "vllm-0",
            "container": "server" if v.container_id == CID else "",
        }
    elif v.pod_uid == STATIC_UID:
        expected = {"namespace": "kube-system", "pod": "triton-node-a", "container": ""}
    elif v.slurm_job:
        expected = {"slurm_job": v.slurm_job, "slurm_step": v.slurm_step or ""}
    elif v.unit:
        expected = {"unit": v.unit}
    elif v.container_id:
        expected = {"container_id": v.container_id}
    assert s.workload_labels(415) == expected

    values = sample_values(CgroupCollector(c).families(cgroups, s))
    labels = expected or {"cgroup": sample.path}
    assert value(values, "nodeml_container_cpu_throttled_seconds_total", **labels) == pytest.approx(
        3.1
    )
    assert value(values, "nodeml_container_memory_working_set_bytes", **labels) == 3 * 2**30


def test_process_values_and_families(tmp_path: Path) -> None:
    v = VARIANTS[0]
    write_proc(
        tmp_path / "proc",
        [
            FakeProc(
                pid=415,
                cgroup=v.cgroup,
                utime=81_240,
                stime=680,
                threads=42,
                rss_kb=1_048_576,
                starttime=360_000,
                voluntary=9,
                involuntary=3,
                fds=7,
            )
        ],
    )
    build_cgroup_tree(tmp_path / "cg", "v2", v.cgroup, None, CgroupStats())
    c = ctx(tmp_path)
    s = tick(c, snap(nvml=nvml(415)), pods())
    p = s[PROCESS].processes[415]  # type: ignore[union-attr]
    assert p.cpu_user_seconds_total == pytest.approx(812.4)
    assert p.start_time_seconds == pytest.approx(BTIME + 3600)
    values = sample_values(ProcessCollector(c).families(s[PROCESS], s))
    wl = {
        "pid": "415",
        "comm": "python3",
        "namespace": "ml",
        "pod": "vllm-0",
        "container": "server",
    }
    assert value(values, "nodeml_process_cpu_seconds_total", mode="user", **wl) == pytest.approx(
        812.4
    )
    assert value(values, "nodeml_process_cpu_seconds_total", mode="system", **wl) == pytest.approx(
        6.8
    )
    assert value(values, "nodeml_process_resident_memory_bytes", **wl) == 2**30
    assert value(values, "nodeml_process_threads", **wl) == 42
    assert value(values, "nodeml_process_open_fds", **wl) == 7
    assert value(values, "nodeml_process_context_switches_total", kind="voluntary", **wl) == 9
    assert value(values, "nodeml_process_start_time_seconds", **wl) == BTIME + 3600
    assert value(values, "nodeml_workload_info", uuid=GPU, **wl) == 1


def test_selection_by_match_rules_targets_and_pods(tmp_path: Path) -> None:
    other_uid = "11111111-2222-3333-4444-555555555555"
    procs = [
        FakeProc(pid=100, comm="bash", cmdline=("bash",)),
        FakeProc(pid=200, comm="tritonserver", cmdline=("tritonserver", "--model-repository=/m")),
        FakeProc(pid=300, comm="python3", cmdline=("python3", "-m", "vllm.entrypoints.api_server")),
        FakeProc(pid=400, comm="python3", cmdline=("python3", "app.py")),
        FakeProc(
            pid=500,
            comm="torchserve",
            cgroup=f"0::/kubepods/besteffort/pod{other_uid}/{'e' * 64}\n",
        ),
        FakeProc(pid=600, comm="listener", sockets=(98765,)),
        FakeProc(pid=700, comm="gpu-user"),
    ]
    write_proc(tmp_path / "proc", procs, tcp=[("0A", 8000, 98765)])
    file = {
        "serving_targets": (
            ServingTarget("http://127.0.0.1:9000/metrics", pid=400),
            ServingTarget("http://localhost:8000/metrics"),
            ServingTarget("http://10.0.0.9:8080/metrics", pod="ml/torch-0"),
        ),
        "process_match": (
            ProcessMatch(comm=re.compile("^tritonserver$")),
            ProcessMatch(cmdline=re.compile(r"vllm\.entrypoints")),
        ),
    }
    kube = KubeData.build({other_uid: PodMeta(other_uid, "ml", "torch-0")})
    c = ctx(tmp_path, **file)
    collector = ProcessCollector(c)
    data = collector.update(snap(nvml=nvml(700, 999), kube=kube))
    reasons = {pid: set(p.reasons) for pid, p in data.processes.items()}
    assert reasons == {
        200: {"match"},
        300: {"match"},
        400: {"serving"},
        500: {"serving"},
        600: {"serving"},
        700: {"gpu"},
    }  # 999 vanished: skipped silently
    # a second tick uses the cached facts and sees a pid reused by another program
    (tmp_path / "proc" / "200" / "stat").write_text(
        (tmp_path / "proc" / "200" / "stat")
        .read_text()
        .replace("(tritonserver)", "(sh)")
        .replace(" 4200 ", " 9999 ")
    )
    (tmp_path / "proc" / "200" / "comm").write_text("sh\n")
    data = collector.update(snap(nvml=nvml(700), kube=kube))
    assert 200 not in data.processes


def test_no_rules_means_no_walk_of_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_proc(tmp_path / "proc", [FakeProc(pid=415), FakeProc(pid=416)])
    collector = ProcessCollector(ctx(tmp_path))
    monkeypatch.setattr(collector.fs, "pids", lambda: pytest.fail("listed every pid"))
    assert set(collector.update(snap(nvml=nvml(415))).processes) == {415}


def test_vanished_and_unreadable_pids(tmp_path: Path) -> None:
    write_proc(tmp_path / "proc", [FakeProc(pid=415), FakeProc(pid=416)])
    (tmp_path / "proc" / "416" / "status").unlink()  # exited between reads
    data = ProcessCollector(ctx(tmp_path)).update(snap(nvml=nvml(415, 416, 417)))
    assert set(data.processes) == {415}


def test_cgroup_collector_skips_root_and_gone_cgroups(tmp_path: Path) -> None:
    write_proc(
        tmp_path / "proc",
        [
            FakeProc(pid=1, cgroup="0::/\n"),
            FakeProc(pid=2, cgroup="0::/system.slice/gone.service\n"),
        ],
    )
    build_cgroup_tree(
        tmp_path / "cg", "v2", "0::/system.slice/other.service\n", None, CgroupStats()
    )
    data = CgroupCollector(ctx(tmp_path)).update(snap(nvml=nvml(1, 2, 3)))
    assert data.cgroups == {}


def test_first_tick_without_previous_snapshot(tmp_path: Path) -> None:
    write_proc(tmp_path / "proc", [FakeProc(pid=1)])
    (tmp_path / "cg").mkdir()
    assert ProcessCollector(ctx(tmp_path)).update(None).processes == {}
    assert CgroupCollector(ctx(tmp_path)).update(None).cgroups == {}


def test_enricher_keeps_existing_workloads_and_uses_stale_kube() -> None:
    from node_exporter_ml.snapshot import ProcessSample

    proc = ProcessData({415: ProcessSample(415, "python3", pod_uid=UID, container_id=CID)})
    s = Snapshot(
        0.0,
        {
            "process": CollectorResult("process", True, 0, proc),
            "kube": CollectorResult("kube", False, 0, pods(), "api down"),
        },
        workloads={9: {"unit": "x.service"}},
    )
    out = attribute_workloads(s)
    assert out.workload_labels(415) == {"namespace": "ml", "pod": "vllm-0", "container": "server"}
    assert out.workload_labels(9) == {"unit": "x.service"}
    unknown = attribute_workloads(s.replace(results={"process": s.results["process"]}))
    assert unknown.workload_labels(415) == {"container_id": CID}
