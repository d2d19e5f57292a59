"""node_exporter's habits: --help, exporter metrics, collect[], socket activation, --path.sysfs."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.core import GaugeMetricFamily

from node_exporter_ml.agent import Agent
from node_exporter_ml.cardinality import MetricsPolicy
from node_exporter_ml.cli import systemd_sockets
from node_exporter_ml.config import ConfigError, build_parser, parse_args, parse_duration
from node_exporter_ml.exposition import MAX_COLLECT_PARAMS, Renderer
from node_exporter_ml.snapshot import CollectorResult, Snapshot
from node_exporter_ml.web import build_app
from tests.helpers import CountingCollector, FailingCollector, config, registry, wait_ready
from tools.ports import free_port

COLLECTORS = {"alpha": True, "beta": False}


def test_every_flag_has_help_and_its_default():
    parser = build_parser(COLLECTORS)
    text = parser.format_help()
    blocks = re.split(r"\n  (?=--)", text.split("options:", 1)[1])
    flags = [a for a in parser._actions if a.option_strings and a.dest not in ("help", "version")]
    assert len(blocks) - 2 == len(flags)  # -h and --version have no default to show
    for block in blocks:
        if block.lstrip().startswith(("-h", "--version")):
            continue
        flag, block = block.split()[0], " ".join(block.split())
        assert "(default: " in block, f"{flag}: no default in --help"
        assert len(block.split()) > 3, f"{flag}: no help text"


def test_a_duration_default_in_help_is_the_default_written_as_the_flag_takes_it():
    parser = build_parser(COLLECTORS)
    text = " ".join(parser.format_help().split())
    durations = [a for a in parser._actions if a.metavar == "DURATION" and a.default is not None]
    assert durations
    shown = {}
    for action in durations:
        flag = action.option_strings[0]
        m = re.search(re.escape(flag) + r" DURATION .*?\(default: ([0-9.]+[a-z]+)\)", text)
        assert m, f"{flag}: no duration default in --help"
        assert parse_duration(m[1]) == action.default, flag
        shown[flag] = m[1]
    assert shown["--serving.baseline"] == "15m"
    assert shown["--sampler.interval"] == "5s"


def test_sysfs_roots_cgroupfs_unless_given(tmp_path):
    (tmp_path / "fs" / "cgroup").mkdir(parents=True)
    cfg = parse_args([f"--path.sysfs={tmp_path}"], COLLECTORS)
    assert cfg.sysfs == str(tmp_path)
    assert cfg.cgroupfs == str(tmp_path / "fs" / "cgroup")
    other = tmp_path / "elsewhere"
    other.mkdir()
    cfg = parse_args([f"--path.sysfs={tmp_path}", f"--path.cgroupfs={other}"], COLLECTORS)
    assert cfg.cgroupfs == str(other)
    (tmp_path / "nocg").mkdir()
    with pytest.raises(ConfigError, match=r"--path.cgroupfs: .*nocg/fs/cgroup"):
        parse_args([f"--path.sysfs={tmp_path / 'nocg'}"], COLLECTORS)


async def test_disable_exporter_metrics_leaves_out_process_and_python(aiohttp_client):
    for disabled in (False, True):
        cfg = config("counting", disable_exporter_metrics=disabled)
        agent = Agent(cfg, registry=registry(CountingCollector))
        client = await aiohttp_client(build_app(agent))
        await wait_ready(client)
        text = await (await client.get("/metrics")).text()
        assert "nodeml_test_thing_value" in text
        assert ("process_cpu_seconds_total" in text) is not disabled
        assert ("python_info" in text) is not disabled
        await client.close()


async def test_collect_param_scrapes_a_subset(aiohttp_client):
    agent = Agent(
        config("counting", "failing"), registry=registry(CountingCollector, FailingCollector)
    )
    client = await aiohttp_client(build_app(agent))
    await wait_ready(client)
    full = await (await client.get("/metrics")).text()
    assert 'collector="failing"' in full
    resp = await client.get("/metrics", params=[("collect[]", "failing")])
    text = await resp.text()
    assert resp.status == 200
    assert "nodeml_test_thing_value" not in text
    assert 'nodeml_collector_success{collector="failing"} 0.0' in text
    assert 'collector="counting"' not in text
    assert "nodeml_snapshot_timestamp_seconds" in text
    assert "process_cpu_seconds_total" in text  # the exporter's own, as node_exporter keeps
    both = await client.get("/metrics?collect[]=counting&collect[]=failing&collect[]=counting")
    assert "nodeml_test_thing_value" in await both.text()
    gz = await client.get(
        "/metrics",
        params=[("collect[]", "counting")],
        headers={"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"},
    )
    assert gz.headers["Content-Encoding"] == "gzip"
    body = await gz.text()  # aiohttp's client inflates it
    assert body.endswith("# EOF\n")
    assert 'collector="failing"' not in body


@pytest.mark.parametrize(
    "query",
    [
        "collect[]=nope",
        "collect[]=",
        "collect[]=COUNTING",
        "collect[]=counting&collect[]=%22%0Aforged%201",
        "collect[]=" + "x" * 4000,
        "&".join(["collect[]=counting"] * (MAX_COLLECT_PARAMS + 1)),
    ],
)
async def test_collect_param_refuses_what_is_not_an_enabled_collector(aiohttp_client, query):
    agent = Agent(config("counting"), registry=registry(CountingCollector), process_metrics=False)
    client = await aiohttp_client(build_app(agent))
    await wait_ready(client)
    resp = await client.get(f"/metrics?{query}")
    text = await resp.text()
    assert resp.status == 400, text
    assert text.startswith("collect[]: ")
    assert text.count("\n") == 1
    assert len(text) < 300
    assert (await client.get("/metrics?collect[]=counting")).status == 200


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({}, "LISTEN_PID"),
        ({"LISTEN_PID": "1", "LISTEN_FDS": "1"}, "LISTEN_PID"),
        ({"LISTEN_PID": "{pid}"}, "LISTEN_FDS"),
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "0"}, "LISTEN_FDS"),
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "-1"}, "LISTEN_FDS"),
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "99999"}, "LISTEN_FDS"),
    ],
)
def test_systemd_sockets_refuses_a_missing_or_bad_handover(env, match):
    env = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    with pytest.raises(ConfigError, match=match):
        systemd_sockets(env, os.getpid())


def test_systemd_socket_activation_with_the_real_tool(tmp_path):
    """systemd-socket-activate listens and hands the socket over as systemd does."""
    exe = "/usr/bin/systemd-socket-activate"
    assert os.path.exists(exe), "systemd-socket-activate comes with Debian's systemd package"
    port = free_port()
    args = [
        exe, "-l", f"127.0.0.1:{port}", sys.executable, "-m", "node_exporter_ml",
        "--web.systemd-socket", f"--state.dir={tmp_path}/state", "--sampler.interval=0.5s",
        "--collector.disable-defaults", "--collector.process",
    ]  # fmt: skip
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        body = b""
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read()
                    break
            except (urllib.error.HTTPError, OSError):
                time.sleep(0.1)  # 503 before the first snapshot; connection refused at first
        assert b'nodeml_collector_success{collector="process"} 1.0' in body
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    out = (tmp_path / "agent.log").read_text()
    assert f"listening on http://127.0.0.1:{port}" in out


def test_systemd_socket_flag_without_a_socket_is_a_startup_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "node_exporter_ml", "--web.systemd-socket",
         f"--state.dir={tmp_path}", "--collector.disable-defaults"],
        capture_output=True, text=True, timeout=30, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("node-exporter-ml: error: --web.systemd-socket:")
    assert proc.stderr.count("\n") == 1


def test_systemd_sockets_refuses_a_datagram_socket():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    saved = os.dup(3) if _fd_open(3) else None
    try:
        os.dup2(udp.fileno(), 3)
        with pytest.raises(ConfigError, match="listening stream socket"):
            systemd_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}, os.getpid())
    finally:
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        else:
            os.close(3)
        udp.close()


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class _Families:
    """A collector stand-in whose families are fixed (name and families() are all used)."""

    def __init__(self, name, *families):
        self.name = name
        self._families = families

    def families(self, data, snapshot):
        return self._families


def test_collect_param_keeps_renamed_workload_families_with_their_collector():
    process = GaugeMetricFamily("nodeml_process_gpu_memory_bytes", "Per pid.", labels=["pid"])
    process.add_metric(["1"], 1.0)
    other = GaugeMetricFamily("nodeml_test_thing_value", "A thing.")
    other.add_metric([], 2.0)
    collectors = [_Families("procs", process), _Families("things", other)]
    renderer = Renderer(
        collectors, 1.0, process_metrics=False, policy=MetricsPolicy(per_process="workload")
    )
    results = {c.name: CollectorResult(c.name, True, 0.1) for c in collectors}
    rendered = renderer.render(Snapshot(taken_at=1.0, results=results))
    assert b"nodeml_workload_gpu_memory_bytes" in rendered.text
    things = rendered.ensure((False, False), frozenset({"things"}))
    assert b"nodeml_workload_gpu_memory_bytes" not in things
    assert b"nodeml_test_thing_value" in things
    assert b"nodeml_series_dropped_total" in things  # the agent's own
    procs = rendered.ensure((False, False), frozenset({"procs"}))
    assert b"nodeml_workload_gpu_memory_bytes" in procs
    assert rendered.get((False, False), frozenset({"procs"})) is procs  # served from the loop
