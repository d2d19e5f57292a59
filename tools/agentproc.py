"""Start the real agent as a subprocess on a free port and talk to it over HTTP(S)."""

from __future__ import annotations

import gzip
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools.ports import free_port


@dataclass
class Response:
    """An HTTP answer: status, headers and the raw body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode()


@dataclass
class AgentProcess:
    """The agent as a child process on its own port, its output in a log under `tmp`."""

    args: list[str]
    tmp: Path
    port: int = field(default_factory=free_port)
    scheme: str = "http"
    ssl_context: ssl.SSLContext | None = None
    proc: subprocess.Popen[bytes] | None = None
    # How to start it: this checkout's package by default; tests/test_dist.py passes the
    # script of a virtualenv the wheel was installed into, and a working directory outside.
    command: tuple[str, ...] = (sys.executable, "-m", "node_exporter_ml")
    cwd: Path | None = None
    preexec_fn: Callable[[], object] | None = None

    def start(self) -> AgentProcess:
        """Start the agent with `args`; it logs to agent-<port>.log under `tmp`."""
        self.log = open(self.tmp / f"agent-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *self.command,
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--state.dir={self.tmp}/state",
                *self.args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=self.cwd,
            preexec_fn=self.preexec_fn,
        )
        return self

    @property
    def url(self) -> str:
        """The agent's base URL."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 5) -> Response:
        """GET `path`; an HTTP error status is an answer too, not an exception."""
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, dict(err.headers), err.read())

    def wait_ready(self, timeout: float = 20, headers: dict[str, str] | None = None) -> None:
        """Wait until /readyz answers 200; AssertionError with the log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {self.output()}")
            try:
                if self.get("/readyz", headers).status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"agent not ready after {timeout}s: {self.output()}")

    def metrics(self, headers: dict[str, str] | None = None) -> str:
        """The /metrics text (ungzipped when the agent compressed it)."""
        resp = self.get("/metrics", headers)
        assert resp.status == 200, resp.text
        body = resp.body
        if resp.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body.decode()

    def signal(self, sig: int) -> None:
        """Send the agent a signal."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, SIGKILL after `timeout` seconds; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        """Everything the agent logged so far."""
        self.log.flush()
        return (self.tmp / f"agent-{self.port}.log").read_text(errors="replace")
