"""A real Prometheus server (Debian's `prometheus`), for the cluster demo and integration tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tools.ports import free_port


@dataclass
class PrometheusServer:
    """Starts prometheus with a scrape config and answers PromQL queries."""

    tmp: Path
    scrape_configs: list[dict[str, Any]]
    rule_files: tuple[str, ...] = ()
    scrape_interval: str = "1s"

    def start(self) -> PrometheusServer:
        """Write the config, start prometheus on a free port and wait until it is ready."""
        binary = shutil.which("prometheus")
        assert binary, "prometheus is installed by `make test` (Debian package prometheus)"
        self.port = free_port()
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": self.scrape_configs,
        }
        if self.rule_files:
            config["rule_files"] = list(self.rule_files)
        cfg = self.tmp / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.log = open(self.tmp / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.tmp}/tsdb",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("prometheus not ready: " + self.output())

    @property
    def url(self) -> str:
        """Prometheus' base URL."""
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result of an instant query."""
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as resp:
            payload = json.load(resp)
        assert payload["status"] == "success", payload
        return list(payload["data"]["result"])

    def wait_for(self, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The first non-empty result of an instant query; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no result for {promql!r} after {timeout}s")

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as resp:
            return list(json.load(resp)["data"]["activeTargets"])

    def stop(self) -> None:
        """Terminate prometheus (kill after 10 s)."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def output(self) -> str:
        """Everything prometheus logged so far."""
        return (self.tmp / "prometheus.log").read_text(errors="replace")
