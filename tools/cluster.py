"""A GPU cluster on one machine: agents replaying NVML recordings, one real Prometheus.

Each node is a real agent process (`tools/agentproc.py`) with its own replay file, its own
procfs and cgroupfs trees holding the processes the replay names (`tools/host_trees.py`),
optionally a fake Kubernetes API with its pods (`tools/fake_kube.py`) and a model server
replayed frame by frame over HTTP. One Prometheus (`tools/promserver.py`) scrapes them all,
with `instance` set to the node name as the shipped scrape configs do, and loads the
shipped rules. The recordings are the suite's (tests/fixtures/nvml-recordings, nvml).
Used by tests/test_cluster.py, tests/test_dashboard.py and `make demo-cluster`
(`python -m tools.cluster`).
"""

from __future__ import annotations

import asyncio
import copy
import http.server
import json
import math
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.agentproc import AgentProcess
from tools.fake_kube import TOKEN, FakeApi, pod_json
from tools.host_trees import CgroupStats, FakeProc, build_cgroup_tree, make_v2_root, write_proc
from tools.promserver import PrometheusServer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
NVML_FIXTURES = FIXTURES / "nvml"
# The real H100 recording: NVML replay frames and the model server's /metrics at the same seconds.
NEIGHBOUR_NVML = FIXTURES / "nvml-recordings" / "h100-neighbour.nvml.json"
NEIGHBOUR_SERVING = FIXTURES / "nvml-recordings" / "h100-neighbour.serving.json"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
MODEL = "mlp-8x4096"
SERVER_PID, NEIGHBOUR_PID = 415, 476

COLLECTORS = ("nvml", "process", "cgroup", "kube", "serving", "drift", "node")

TextAt = Callable[[float], str]


# --- model servers ------------------------------------------------------------------------


def recorded_server(path: Path = NEIGHBOUR_SERVING) -> tuple[TextAt, float]:
    """The recorded model server: frame i's text from second i on, the last one after."""
    frames = json.loads(path.read_text())["frames"]
    period = frames[1]["t"] - frames[0]["t"]

    def text_at(elapsed: float) -> str:
        return str(frames[max(0, min(len(frames) - 1, math.floor(elapsed / period)))]["text"])

    return text_at, len(frames) * period


def steady_server(model: str = MODEL, rate: float = 400.0) -> TextAt:
    """A model server at a steady rate and latency (~1 ms), counters growing with time."""
    shares = ((0.001, 0.36), (0.0025, 0.98), (0.005, 0.997), (0.01, 1.0))

    def text_at(elapsed: float) -> str:
        n = int(rate * max(elapsed, 0.0))
        lines = [
            "# HELP inference_request_duration_seconds Time to serve one prediction",
            "# TYPE inference_request_duration_seconds histogram",
        ]
        lines += [
            f'inference_request_duration_seconds_bucket{{le="{le}",model="{model}"}} '
            f"{float(int(n * share))}"
            for le, share in shares
        ]
        lines += [
            f'inference_request_duration_seconds_bucket{{le="+Inf",model="{model}"}} {float(n)}',
            f'inference_request_duration_seconds_count{{model="{model}"}} {float(n)}',
            f'inference_request_duration_seconds_sum{{model="{model}"}} {n * 0.0012}',
        ]
        return "\n".join(lines) + "\n"

    return text_at


class FrameServer:
    """Serves GET /metrics with text_at(seconds since start()) from a thread."""

    def __init__(self, text_at: TextAt) -> None:
        self.text_at = text_at
        self.started = time.monotonic()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = server.text_at(time.monotonic() - server.started).encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FrameServer:
        """Serve from a thread; the frame clock starts now."""
        self.started = time.monotonic()
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        """The model server's /metrics URL."""
        return f"http://127.0.0.1:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()


# --- replay files -------------------------------------------------------------------------


def calm_replay(source: Path = NEIGHBOUR_NVML, seconds: int = 40) -> dict[str, Any]:
    """The neighbour recording's first 7 s (2 clients, no neighbour) repeated: a calm GPU.

    Energy is integrated again from power and process-utilisation timestamps follow the
    frame times, so counters stay monotonic as on real hardware.
    """
    rec: dict[str, Any] = json.loads(source.read_text())
    calm = rec["frames"][:7]
    frames = []
    energy = calm[0]["devices"][0]["energy_mj"]
    ts0 = calm[0]["devices"][0]["process_utilization"][0]["timestamp_us"]
    for j in range(seconds):
        frame = copy.deepcopy(calm[j % len(calm)])
        frame["t"] = float(j + 1)
        dev = frame["devices"][0]
        if j:
            energy += dev["power_mw"] * rec["frame_period_s"]
        dev["energy_mj"] = int(energy)
        for u in dev["process_utilization"]:
            u["timestamp_us"] = ts0 + j * 1_000_000
        frames.append(frame)
    rec["frames"] = frames
    rec["about"] = "Derived from h100-neighbour: its calm first 7 s, repeated."
    return rec


# --- nodes --------------------------------------------------------------------------------


def pod_cgroup(uid: str, cid: str) -> str:
    """/proc/<pid>/cgroup of a container in a Burstable pod (systemd driver, cgroup v2)."""
    return (
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
        f"{uid.replace('-', '_')}.slice/cri-containerd-{cid}.scope\n"
    )


@dataclass
class Pod:
    """A pod with one container holding one process."""

    namespace: str
    name: str
    uid: str
    container: str
    container_id: str
    proc: FakeProc
    stats: CgroupStats = field(default_factory=CgroupStats)


@dataclass
class NodeSpec:
    """One simulated GPU node."""

    name: str
    replay: dict[str, Any] | Path
    pods: list[Pod] = field(default_factory=list)
    procs: list[FakeProc] = field(default_factory=list)  # processes outside pods
    server: TextAt | None = None  # a model server, owned by `server_pid`
    server_pid: int = SERVER_PID
    extra_args: list[str] = field(default_factory=list)


@dataclass
class Node:
    """A running node: its agent and what it replays."""

    spec: NodeSpec
    agent: AgentProcess
    frames: FrameServer | None
    api: FakeApi | None = None

    @property
    def name(self) -> str:
        """The node's name (its `instance` label)."""
        return self.spec.name


def neighbour_node(name: str = "gpu-node-a") -> NodeSpec:
    """The recorded incident: a model server and a noisy neighbour on one H100."""
    server = Pod(
        "ml",
        "mlp-server-0",
        "8b0c6a52-6f1e-4f7e-9d53-0c2f1a7e9b11",
        "server",
        "5e" * 32,
        FakeProc(pid=SERVER_PID, comm="python3", cmdline=("python3", "server.py")),
        CgroupStats(throttled_usec=3_100_000, memory_current=4 << 30, inactive_file=1 << 30),
    )
    neighbour = Pod(
        "batch",
        "matmul-0",
        "c4f1d2e3-0a9b-4c8d-8e7f-6a5b4c3d2e1f",
        "trainer",
        "7a" * 32,
        FakeProc(pid=NEIGHBOUR_PID, comm="python3", cmdline=("python3", "matmul.py")),
        CgroupStats(quota_us=None, memory_max=None, memory_current=7 << 30),
    )
    text_at, _ = recorded_server()
    return NodeSpec(name, NEIGHBOUR_NVML, pods=[server, neighbour], server=text_at)


def calm_node(name: str, pod: str, uid: str) -> NodeSpec:
    """The same model served calmly on its own H100."""
    server = Pod(
        "ml",
        pod,
        uid,
        "server",
        uid.replace("-", "")[:32] * 2,
        FakeProc(pid=SERVER_PID, comm="python3", cmdline=("python3", "server.py")),
    )
    return NodeSpec(name, calm_replay(), pods=[server], server=steady_server())


def bare_metal_node(name: str, replay: Path, pids: tuple[int, ...]) -> NodeSpec:
    """A node outside Kubernetes: GPU processes in a systemd unit, no kube API."""
    procs = [
        FakeProc(
            pid=pid,
            comm="tritonserver",
            cmdline=("/opt/tritonserver/bin/tritonserver",),
            cgroup="0::/system.slice/triton.service\n",
        )
        for pid in pids
    ]
    return NodeSpec(name, replay, procs=procs, extra_args=["--no-collector.kube"])


def default_nodes() -> list[NodeSpec]:
    """Four nodes: the incident, a calm replica, a two-GPU node with XIDs, a lost GPU."""
    return [
        neighbour_node("gpu-node-a"),
        calm_node("gpu-node-b", "mlp-server-1", "1f2e3d4c-5b6a-4789-8a9b-0c1d2e3f4a5b"),
        bare_metal_node("gpu-node-c", NVML_FIXTURES / "multi-gpu.nvml.json", (1001, 1002, 2001)),
        bare_metal_node("gpu-node-d", NVML_FIXTURES / "lost-gpu.nvml.json", (1001, 1002, 2001)),
    ]


class _KubeLoop:
    """An event loop in a thread running the fake API servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def rule_files(dest: Path, for_duration: str | None = "0s") -> list[str]:
    """The shipped rule files, copied; with `for_duration`, every alert's `for:` set to it.

    The `for:` durations are checked by the promtool unit tests; here the question is which
    node an alert fires for, within a 40 s recording.
    """
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(src.read_text())
        if for_duration is not None:
            for group in doc["groups"]:
                for rule in group["rules"]:
                    if "alert" in rule:
                        rule["for"] = for_duration
        path = dest / src.name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out.append(str(path))
    return out


class Cluster:
    """Nodes, their agents and one Prometheus; a context manager."""

    def __init__(
        self,
        tmp: Path,
        specs: list[NodeSpec],
        *,
        rules: list[str] | None = None,
        agent_args: tuple[str, ...] = (),
        scrape_interval: str = "1s",
    ) -> None:
        self.tmp = tmp
        self.specs = specs
        self.rules = rules
        self.agent_args = agent_args
        self.scrape_interval = scrape_interval
        self.nodes: dict[str, Node] = {}
        self.prometheus: PrometheusServer | None = None
        self._kube: _KubeLoop | None = None

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _node_files(self, spec: NodeSpec) -> tuple[Path, list[str]]:
        home = self.tmp / spec.name
        home.mkdir(parents=True)
        procs = [FakeProc(pid=1, comm="systemd", cmdline=("/sbin/init",)), *spec.procs]
        cg = home / "cgroup"
        make_v2_root(cg)
        for pod in spec.pods:
            pod.proc.cgroup = pod_cgroup(pod.uid, pod.container_id)
            procs.append(pod.proc)
            build_cgroup_tree(cg, "v2", pod.proc.cgroup, None, pod.stats)
        write_proc(home / "proc", procs)
        if isinstance(spec.replay, Path):
            replay = spec.replay
        else:
            replay = home / "replay.nvml.json"
            replay.write_text(json.dumps(spec.replay))
        args = [
            # The collectors this cluster feeds, and only those (the pod-resources socket,
            # for one, does not exist here: its collector would only report failure).
            "--collector.disable-defaults",
            *(f"--collector.{name}" for name in COLLECTORS),
            f"--nvml.replay={replay}",
            f"--path.procfs={home / 'proc'}",
            f"--path.cgroupfs={cg}",
            "--sampler.interval=1s",
            "--serving.window=2s",
            "--drift.interval=1s",
            *self.agent_args,
            *spec.extra_args,
        ]
        return home, args

    def start(self) -> None:
        """Start every node, then Prometheus; wait until all agents are ready."""
        for spec in self.specs:
            home, args = self._node_files(spec)
            api = None
            if spec.pods:
                self._kube = self._kube or _KubeLoop()
                api = FakeApi(node=spec.name)
                for pod in spec.pods:
                    api.add(
                        pod_json(
                            pod.uid,
                            pod.name,
                            pod.namespace,
                            node=spec.name,
                            containers={pod.container_id: pod.container},
                        )
                    )
                url = self._kube.run(api.start())
                (home / "token").write_text(TOKEN)
                args += [
                    f"--kube.api-url={url}",
                    f"--kube.token-file={home / 'token'}",
                    f"--kube.node-name={spec.name}",
                ]
            frames = None
            if spec.server is not None:
                frames = FrameServer(spec.server)
                config = home / "config.yml"
                target = {"url": frames.url, "name": "mlp", "pid": spec.server_pid}
                config.write_text(yaml.safe_dump({"serving": {"targets": [target]}}))
                args.append(f"--config.file={config}")
            agent = AgentProcess(args, home).start()
            if frames is not None:
                frames.start()  # the replay's clock starts with the agent, this one too
            self.nodes[spec.name] = Node(spec, agent, frames, api)
        for node in self.nodes.values():
            node.agent.wait_ready(timeout=30)
        # Ready means one snapshot; the kube collector's first list may still be under way.
        # Prometheus starts once every collector has succeeded, as on a settled node.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(
            collectors_ok(n.agent.metrics()) for n in self.nodes.values()
        ):
            time.sleep(0.2)
        scrape = {
            "job_name": "node-exporter-ml",
            "static_configs": [
                {"targets": [f"127.0.0.1:{n.agent.port}"], "labels": {"instance": n.name}}
                for n in self.nodes.values()
            ],
        }
        self.prometheus = PrometheusServer(
            self.tmp, [scrape], tuple(self.rules or ()), self.scrape_interval
        ).start()

    def stop(self) -> None:
        """Stop everything that was started."""
        if self.prometheus is not None and getattr(self.prometheus, "proc", None) is not None:
            self.prometheus.stop()
        for node in self.nodes.values():
            if node.agent.proc is not None:
                node.agent.stop()
            if node.frames is not None:
                node.frames.stop()
            if node.api is not None and self._kube is not None:
                self._kube.run(node.api.stop())
        if self._kube is not None:
            self._kube.close()

    @property
    def prom(self) -> PrometheusServer:
        """The cluster's Prometheus (once started)."""
        assert self.prometheus is not None
        return self.prometheus

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus' active alerts (pending and firing) with their annotations."""
        with urllib.request.urlopen(f"{self.prom.url}/api/v1/alerts", timeout=10) as resp:
            return list(json.load(resp)["data"]["alerts"])

    def logs(self) -> str:
        """Every agent's log, for failure messages."""
        return "\n".join(f"--- {n.name}\n{n.agent.output()[-3000:]}" for n in self.nodes.values())


def collectors_ok(exposition: str) -> bool:
    """Whether every nodeml_collector_success sample of an exposition is 1."""
    samples = [
        line.rsplit(" ", 1)[1]
        for line in exposition.splitlines()
        if line.startswith("nodeml_collector_success{")
    ]
    return bool(samples) and all(float(v) == 1 for v in samples)


def _print_state(cluster: Cluster) -> None:
    prom = cluster.prom
    for expr in ("cluster:nodeml_gpus:count", "cluster:nodeml_gpu_utilization_ratio:avg"):
        result = prom.query(expr)
        value = result[0]["value"][1] if result else "-"
        print(f"  {expr} = {value}")
    for r in prom.query("model:nodeml_serving_requests_per_second:sum"):
        print(f"  requests/s of {r['metric']['model']}: {float(r['value'][1]):.0f}")
    firing = [a for a in cluster.alerts() if a["state"] == "firing"]
    for a in firing:
        labels = a["labels"]
        extra = (
            f" (top cause: {a['annotations']['top_cause']})"
            if "top_cause" in a["annotations"]
            else ""
        )
        print(f"  FIRING {labels['alertname']} on {labels.get('instance')}{extra}")


def main() -> int:
    """`make demo-cluster`: the four-node cluster until Ctrl-C."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="nodeml-cluster-"))
    print(f"starting four agents and Prometheus under {tmp} ...", flush=True)
    with Cluster(tmp, default_nodes(), rules=rule_files(tmp / "rules")) as cluster:
        print(f"Prometheus: {cluster.prom.url}  (Alerts: {cluster.prom.url}/alerts)")
        for node in cluster.nodes.values():
            print(f"  {node.name}: {node.agent.url}/metrics")
        print("the recordings run for 40 s, then hold their last frame; Ctrl-C stops\n")
        started = time.monotonic()
        try:
            while True:
                time.sleep(5)
                print(f"[{time.monotonic() - started:3.0f}s]")
                _print_state(cluster)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
