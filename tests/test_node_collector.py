"""The node collector: psutil over a fixture /proc (a real host's meminfo, vmstat, loadavg)."""

from __future__ import annotations

import os
import time

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.node import NodeCollector, read_node
from node_exporter_ml.exposition import Renderer
from node_exporter_ml.host import ParseError
from node_exporter_ml.host.procfs import parse_loadavg
from node_exporter_ml.snapshot import CollectorResult, Snapshot
from tests.helpers import config
from tools.host_trees import BTIME, write_proc

CLK_TCK = os.sysconf("SC_CLK_TCK")
STAT = (
    "cpu  4705 356 584 3699176 23060 0 277 0 0 0\n"
    "cpu0 1393 280 219 923755 5765 0 154 0 0 0\n"
    "cpu1 1056 15 127 925170 5814 0 38 0 0 0\n"
    "cpu2 1184 42 113 925203 5751 0 48 0 0 0\n"
    "cpu3 1072 19 125 925048 5730 0 37 0 0 0\n"
    f"intr 1462898 0 0\nctxt 3066720\nbtime {BTIME}\nprocesses 6013\n"
    "procs_running 1\nprocs_blocked 0\nsoftirq 1245226 0 306862 17 59853 0 0 43 421543 0\n"
)


@pytest.fixture
def proc(tmp_path):
    root = write_proc(tmp_path / "proc", [])
    (root / "stat").write_text(STAT)
    return root


def _families(procfs) -> dict[str, list]:
    collector = NodeCollector(CollectContext(config("node", procfs=str(procfs))))
    data = collector.update(None)
    snap = Snapshot(taken_at=1.0, results={"node": CollectorResult("node", True, 0.01, data)})
    text = Renderer([collector], 5.0, process_metrics=False).render(snap).text.decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_node_families_from_the_fixture_host(proc):
    fams = _families(proc)
    cpu = {s.labels["mode"]: s.value for s in fams["nodeml_node_cpu_seconds"]}
    assert list(cpu) == ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    assert cpu["user"] == pytest.approx(4705 / CLK_TCK)
    assert cpu["idle"] == pytest.approx(3699176 / CLK_TCK)
    assert fams["nodeml_node_cpus"][0].value == 4
    assert [fams[f"nodeml_node_load{w}"][0].value for w in (1, 5, 15)] == [11.52, 9.11, 4.76]
    assert fams["nodeml_node_memory_total_bytes"][0].value == 24683664 * 1024
    assert fams["nodeml_node_memory_available_bytes"][0].value == 22338360 * 1024
    assert fams["nodeml_node_swap_total_bytes"][0].value == 8388604 * 1024
    assert fams["nodeml_node_swap_free_bytes"][0].value == 8122876 * 1024
    assert fams["nodeml_node_boot_time_seconds"][0].value == BTIME
    assert fams["nodeml_node_uptime_seconds"][0].value == pytest.approx(time.time() - BTIME, abs=5)
    node = [n for n in fams if n.startswith("nodeml_node_")]
    assert len(node) == 11  # under a dozen, as the issue asks


def test_this_host_agrees_with_psutil_and_the_kernel():
    """On the real /proc the figures are psutil's own and /proc/loadavg's."""
    sample = read_node("/proc")
    assert sample.memory_total_bytes == psutil.virtual_memory().total
    assert sample.cpus == len(psutil.cpu_times(percpu=True))
    assert sample.boot_time_seconds == psutil.boot_time()
    assert all(abs(a - b) < 5 for a, b in zip(sample.load, os.getloadavg(), strict=True))
    assert psutil.PROCFS_PATH == "/proc"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("meminfo", ""),
        ("meminfo", "MemTotal: lots kB\n"),
        ("meminfo", "\x00\xff garbage\n"),
        ("stat", "cpu  a b c\n"),
        ("stat", "cpu  1 2 3 4 5 6 7 0 0 0\n"),  # no btime
        ("loadavg", "high\n"),
        ("loadavg", "nan 1 2 3/4 5\n"),
        ("loadavg", ""),
    ],
)
def test_malformed_kernel_text_is_a_parse_error(proc, name, text):
    (proc / name).write_text(text, encoding="latin-1")
    with pytest.raises(ParseError):
        read_node(str(proc))


@pytest.mark.parametrize("name", ["meminfo", "stat", "loadavg"])
def test_a_missing_file_fails_the_tick(proc, name):
    (proc / name).unlink()
    with pytest.raises(OSError, match=name):
        read_node(str(proc))


def test_no_vmstat_costs_nothing_we_report(proc):
    (proc / "vmstat").unlink()
    assert read_node(str(proc)).swap_free_bytes == 8122876 * 1024  # and no warning (=error)


@pytest.mark.parametrize(
    ("text", "want"),
    [("0.52 0.58 0.59 2/1184 9127\n", (0.52, 0.58, 0.59)), ("0.00 0.00 0.00 1/1 1", (0, 0, 0))],
)
def test_parse_loadavg(text, want):
    assert parse_loadavg(text) == want


def test_two_roots_in_one_process_do_not_mix(proc, tmp_path):
    other = write_proc(tmp_path / "other", [])
    (other / "meminfo").write_text("MemTotal: 1 kB\nMemFree: 1 kB\nMemAvailable: 1 kB\n"
                                   "SwapTotal: 0 kB\nSwapFree: 0 kB\n")  # fmt: skip
    assert read_node(str(other)).memory_total_bytes == 1024
    assert read_node(str(proc)).memory_total_bytes == 24683664 * 1024
