"""`make demo`: the example model server and node-exporter-ml side by side, no GPU needed.

Starts examples/model_server.py (a NumPy model with a latency histogram that feeds the drift
API), then the agent with a config file that names the server as a serving target owned by
its process, and prints every few seconds what the agent makes of it: the model's windowed
latency and throughput, the server process's CPU and memory, and drift per feature once the
server's inputs drift (after 30 s). Open the URLs it prints for the rest; Ctrl-C stops both.

    python examples/demo.py [--port 9847] [--drift-after 30] [--until-ready [--then CMD]]
                            [-- AGENT FLAGS]

With ``--until-ready`` it exits 0 as soon as latency, per-process metrics and drift are all
visible (1 if they are not within ``--timeout``): what the test of the demo runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "fraud-scorer"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str, timeout: float = 3.0) -> str | None:
    """GET url as text; None when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class View:
    """What the agent's /metrics says about the demo model server."""

    latency: dict[str, float] = field(default_factory=dict)
    rps: float | None = None
    cpu_seconds: float | None = None
    rss_bytes: float | None = None
    drift: dict[str, float] = field(default_factory=dict)
    drift_share: float | None = None

    @property
    def complete(self) -> bool:
        """Latency, per-process metrics and a drifted feature are all there."""
        return bool(self.latency) and self.cpu_seconds is not None and any(self.drift.values())

    def line(self, elapsed: float) -> str:
        """One progress line for the terminal."""
        parts = [f"[{elapsed:4.0f}s]"]
        if self.latency:
            q = ", ".join(f"p{float(k) * 100:g} {v * 1e3:.2f} ms" for k, v in self.latency.items())
            parts.append(f"latency {q}; {self.rps or 0:.0f} req/s")
        else:
            parts.append("latency: waiting for a full window")
        if self.cpu_seconds is not None:
            parts.append(
                f"server process: {self.cpu_seconds:.1f} CPU s, "
                f"{(self.rss_bytes or 0) / 2**20:.0f} MiB"
            )
        if self.drift:
            drifted = sorted(f for f, v in self.drift.items() if v)
            parts.append(
                f"drifted features: {', '.join(drifted) or 'none'}"
                + (f" (share {self.drift_share:.2f})" if self.drift_share is not None else "")
            )
        else:
            parts.append("drift: waiting for an evaluation")
        return " | ".join(parts)


def read_view(text: str, server_pid: int) -> View:
    """Pick the demo's series out of the agent's exposition."""
    view = View()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if labels.get("model") == MODEL:
                if s.name == "nodeml_serving_request_latency_seconds":
                    view.latency[labels["quantile"]] = s.value
                elif s.name == "nodeml_serving_requests_per_second":
                    view.rps = s.value
                elif s.name == "nodeml_drift_detected":
                    view.drift[labels["feature"]] = s.value
                elif s.name == "nodeml_dataset_drift_share":
                    view.drift_share = s.value
            elif labels.get("pid") == str(server_pid):
                if s.name == "nodeml_process_cpu_seconds_total":  # one sample per mode
                    view.cpu_seconds = (view.cpu_seconds or 0.0) + s.value
                elif s.name == "nodeml_process_resident_memory_bytes":
                    view.rss_bytes = s.value
    return view


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Demo flags; anything after `--` goes to the agent."""
    argv = list(sys.argv[1:] if argv is None else argv)
    agent_extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, agent_extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--port", type=int, default=9847, help="agent port (0 = any free port)")
    p.add_argument("--server-port", type=int, default=0, help="model server port (0 = any)")
    p.add_argument("--drift-after", type=float, default=30.0)
    p.add_argument("--state-dir", default=None, help="agent --state.dir (default: a temp dir)")
    p.add_argument("--until-ready", action="store_true", help="exit once everything shows")
    p.add_argument("--timeout", type=float, default=60.0, help="with --until-ready")
    p.add_argument("--every", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument(
        "--then",
        default=None,
        metavar="CMD",
        help="with --until-ready: once ready, run CMD AGENT_URL MODEL and exit with its status",
    )
    return p.parse_args(argv), agent_extra


def agent_command(port: int, config: Path, state: Path, extra: list[str]) -> list[str]:
    """The agent's command line for the demo."""
    return [
        sys.executable,
        "-m",
        "node_exporter_ml",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--config.file={config}",
        f"--state.dir={state}",
        "--sampler.interval=1s",
        "--serving.window=15s",
        "--serving.baseline=5m",
        "--drift.interval=3s",
        # What a laptop has: the host, processes, cgroups, the model server, the drift API. No GPU
        # (add `-- --collector.nvml` on a GPU machine), no Kubernetes, no kubelet socket.
        "--collector.disable-defaults",
        "--collector.process",
        "--collector.cgroup",
        "--collector.serving",
        "--collector.drift",
        "--collector.node",
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the demo."""
    args, agent_extra = parse_args(argv)
    # `timeout` and service managers stop with SIGTERM: clean up as for Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    port = args.port or free_port()
    server_port = args.server_port or free_port()
    tmp = Path(tempfile.mkdtemp(prefix="nodeml-demo-"))
    state = Path(args.state_dir) if args.state_dir else tmp / "state"
    agent_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "model_server.py"),
            f"--port={server_port}",
            f"--agent={agent_url}",
            f"--drift-after={args.drift_after}",
            f"--model={MODEL}",
        ],
        env=env,
    )
    config = tmp / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "serving": {
                    "targets": [
                        {
                            "url": f"http://127.0.0.1:{server_port}/metrics",
                            "name": MODEL,
                            "pid": server.pid,
                        }
                    ]
                },
                "processes": {"match": [{"cmdline": "model_server\\.py"}]},
                # The last ~25 s of traffic: drift shows soon after the inputs change.
                "drift": {"window_rows": 1000},
            }
        )
    )
    agent = subprocess.Popen(agent_command(port, config, state, agent_extra), env=env)
    print(
        f"\nnode-exporter-ml demo\n"
        f"  agent metrics    {agent_url}/metrics\n"
        f"  drift report     {agent_url}/api/v1/models/{MODEL}/drift"
        f"   (page: {agent_url}/drift/{MODEL})\n"
        f"  model server     http://127.0.0.1:{server_port}/metrics  (pid {server.pid})\n"
        f"  inputs drift after {args.drift_after:.0f}s; Ctrl-C stops the demo\n",
        flush=True,
    )
    started = time.monotonic()
    try:
        while True:
            time.sleep(min(args.every, 1.0) if args.until_ready else args.every)
            for proc, name in ((agent, "agent"), (server, "model server")):
                if proc.poll() is not None:
                    print(f"the {name} exited with {proc.returncode}", file=sys.stderr)
                    return 1
            text = fetch(f"{agent_url}/metrics")
            elapsed = time.monotonic() - started
            view = read_view(text, server.pid) if text else View()
            print(view.line(elapsed), flush=True)
            if args.until_ready and view.complete:
                print("demo ready: latency, per-process metrics and drift are all visible")
                if args.then:
                    cmd = [*shlex.split(args.then), agent_url, MODEL]
                    return subprocess.run(cmd, check=False, env=env).returncode
                return 0
            if args.until_ready and elapsed > args.timeout:
                print(f"demo not ready after {args.timeout:.0f}s", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (agent, server):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (agent, server):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
