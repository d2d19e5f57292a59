"""Slurm jobs as workloads: environ parsing (table, hostile input) and the collectors over it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from node_exporter_ml.collectors.process import ProcessCollector
from node_exporter_ml.host.procfs import ProcFS
from node_exporter_ml.host.slurm import (
    ENVIRON_LIMIT,
    VALUE_LIMIT,
    SlurmEnviron,
    parse_slurm_environ,
)
from node_exporter_ml.snapshot import PROCESS, ProcessData
from tests.host_helpers import GPU, ctx, nvml, snap, tick
from tools.host_trees import FakeProc, sample_values, value, write_proc

JOB_ENV = (
    b"PATH=/usr/bin\0SLURM_JOB_ID=4242\0SLURM_JOB_NAME=train-llama\0SLURM_JOB_USER=alice\0"
    b"SLURM_STEP_ID=0\0CUDA_VISIBLE_DEVICES=0\0"
)
STEP_0 = "0::/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0\n"
SLUID_STEP = "0::/system.slice/slurmstepd.scope/s5K1KKYAYG5D00/step_0/user/task_0\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(JOB_ENV, SlurmEnviron("4242", "train-llama", "alice", "0"), id="srun task"),
        pytest.param(b"", SlurmEnviron(), id="empty (kernel thread, zombie)"),
        pytest.param(b"PATH=/bin\0HOME=/root\0", SlurmEnviron(), id="not a slurm task"),
        pytest.param(
            b"SLURM_JOB_ID=7\0SLURM_STEP_ID=4294967291\0",
            SlurmEnviron("7"),
            id="batch step's special id left out",
        ),
        pytest.param(b"SLURM_JOB_ID=12abc\0", SlurmEnviron(), id="job id not a number"),
        pytest.param(b"SLURM_JOB_ID=\0", SlurmEnviron(), id="empty value"),
        pytest.param(
            b"SLURM_JOB_ID\0SLURM_JOB_USER=bob",
            SlurmEnviron(user="bob"),
            id="entry without = and no final NUL",
        ),
        pytest.param(b"SLURM_JOB_ID=1\0SLURM_JOB_ID=2\0", SlurmEnviron("1"), id="first wins"),
        pytest.param(
            b"SLURM_JOB_NAME=a\nb\tc\x1b[31m\0",
            SlurmEnviron(job_name="abc[31m"),
            id="control characters stripped",
        ),
        pytest.param(
            b"SLURM_JOB_NAME=\xff\xfejob\0",
            SlurmEnviron(job_name="\ufffd\ufffdjob"),
            id="invalid utf-8 replaced",
        ),
        pytest.param(
            b"SLURM_JOB_NAME=" + b"x" * 100_000 + b"\0",
            SlurmEnviron(job_name="x" * VALUE_LIMIT),
            id="huge value bounded",
        ),
        pytest.param(
            b"A=" + b"y" * ENVIRON_LIMIT + b"\0SLURM_JOB_ID=5\0",
            SlurmEnviron(),
            id="past the read limit is not seen",
        ),
    ],
)
def test_parse_slurm_environ(data: bytes, expected: SlurmEnviron) -> None:
    assert parse_slurm_environ(data) == expected


def test_read_environ_is_bounded(tmp_path: Path) -> None:
    write_proc(tmp_path, [FakeProc(pid=7, environ=b"A=" + b"z" * 300_000)])
    assert len(ProcFS(str(tmp_path)).read_environ(7, 1000)) == 1000


def _info(tmp_path: Path, procs: list[FakeProc]) -> tuple[ProcessData, dict]:
    write_proc(tmp_path / "proc", procs)
    (tmp_path / "cg").mkdir()
    c = ctx(tmp_path)
    s = tick(c, snap(nvml=nvml(*(p.pid for p in procs))))
    data = s[PROCESS]
    assert data is not None
    return data, sample_values(ProcessCollector(c).families(data, s))


def test_job_name_and_user_on_workload_info_only(tmp_path: Path) -> None:
    data, values = _info(tmp_path, [FakeProc(pid=415, cgroup=STEP_0, environ=JOB_ENV)])
    labels = {"pid": "415", "comm": "python3", "slurm_job": "4242", "slurm_step": "0"}
    info = {**labels, "namespace": "", "pod": "", "container": "", "uuid": GPU}
    assert value(values, "nodeml_workload_info", **info,
                 slurm_job_name="train-llama", user="alice") == 1  # fmt: skip
    cpu = [lbls for name, lbls in values if name == "nodeml_process_cpu_seconds_total"]
    assert cpu, "no cpu series"
    for lbls in cpu:
        assert dict(lbls).keys() == {*labels, "mode"}  # no job name, no user per series
    assert data.processes[415].slurm_job_name == "train-llama"


def test_sluid_path_wins_over_the_environment_job_id(tmp_path: Path) -> None:
    data, _values = _info(tmp_path, [FakeProc(pid=415, cgroup=SLUID_STEP, environ=JOB_ENV)])
    p = data.processes[415]
    assert (p.slurm_job, p.slurm_step, p.slurm_user) == ("s5K1KKYAYG5D00", "0", "alice")


def test_environment_alone_attributes_a_job(tmp_path: Path) -> None:
    """proctrack/linuxproc: no Slurm cgroups, the task's environment still names the job."""
    env = b"SLURM_JOB_ID=99\0SLURM_STEP_ID=2\0SLURM_JOB_USER=bob\0"
    cgroup = "0::/user.slice/user-1000.slice/session-3.scope\n"
    _data, values = _info(tmp_path, [FakeProc(pid=415, cgroup=cgroup, environ=env)])
    assert value(values, "nodeml_process_threads", pid="415", comm="python3",
                 slurm_job="99", slurm_step="2") == 17  # fmt: skip


def test_unreadable_environ_keeps_the_cgroup_attribution(tmp_path, monkeypatch, caplog) -> None:
    def denied(self: ProcFS, pid: int, limit: int) -> bytes:
        raise PermissionError(13, "Permission denied", self.path(pid, "environ"))

    monkeypatch.setattr(ProcFS, "read_environ", denied)
    with caplog.at_level(logging.WARNING):
        data, values = _info(
            tmp_path,
            [FakeProc(pid=415, cgroup=STEP_0), FakeProc(pid=416, cgroup=STEP_0, starttime=9)],
        )
    assert {(p.slurm_job, p.slurm_user) for p in data.processes.values()} == {("4242", None)}
    assert value(values, "nodeml_workload_info", pid="415", slurm_job="4242", user="") == 1
    assert sum("CAP_SYS_PTRACE" in r.getMessage() for r in caplog.records) == 1
