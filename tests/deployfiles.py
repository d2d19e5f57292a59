"""Shared by the deployment tests: where the artefacts are, what flags the agent has, and the
real validators they run (kubernetes-validate, systemd-analyze, promtool)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "deploy" / "prometheus"
UNIT = ROOT / "systemd" / "node-exporter-ml.service"
INSTALLED_BINARY = "/opt/node-exporter-ml/bin/node-exporter-ml"
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@functools.cache
def agent_help() -> str:
    """`node-exporter-ml --help`, from the installed package."""
    return subprocess.run(
        [sys.executable, "-m", "node_exporter_ml", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


# --- Kubernetes manifests -------------------------------------------------------------------


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kubernetes_validate() -> str:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    if exe.exists():
        return str(exe)
    found = shutil.which("kubernetes-validate")
    assert found, "kubernetes-validate comes with the test extra (pip install -e '.[test]')"
    return found


def run_kubernetes_validate(version: str, paths: list[Path]) -> tuple[int, str]:
    """The real CLI, strict (unknown fields fail): its exit status and output."""
    proc = subprocess.run(
        [kubernetes_validate(), "-k", version, "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def assert_valid_strict(version: str, paths: list[Path]) -> None:
    """Every built-in object in `paths` passes; CRDs it has no schema for only warn."""
    rc, out = run_kubernetes_validate(version, paths)
    assert rc == 0, out
    for line in out.splitlines():
        if line.startswith("WARN"):
            assert re.search(r"Couldn't find schema for kind (\w+)", line), line
            crd = re.search(r"kind (\w+)", line)
            assert crd, line
            assert crd.group(1) in CRD_KINDS, line
        else:
            assert line.startswith("INFO"), line
            assert " passed " in line, line
    passed = sum(" passed " in line for line in out.splitlines())
    builtin = sum(1 for m in paths for d in docs(m) if d["kind"] not in CRD_KINDS)
    assert passed == builtin, out


# --- the systemd unit -----------------------------------------------------------------------


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze comes with systemd (Debian package systemd)"
    return exe


def unit_with_existing_binary(tmp_path: Path, text: str | None = None) -> Path:
    """The unit as installed, except ExecStart names the agent installed in this venv.

    `systemd-analyze verify` fails when ExecStart's binary does not exist; /opt/... is where
    the docs install it, which this machine does not have.
    """
    binary = Path(sys.executable).parent / "node-exporter-ml"
    assert binary.exists(), binary
    text = text if text is not None else UNIT.read_text()
    assert INSTALLED_BINARY in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_BINARY, str(binary)))
    return copy


def analyze(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), *args, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=path.parent,
    )


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return analyze(path, "verify")


def assert_verifies_silently(path: Path) -> None:
    """`systemd-analyze verify` passes and says nothing (a misspelt directive only warns)."""
    proc = verify(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == ""


# --- Prometheus rules -----------------------------------------------------------------------


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is installed by `make test` (Debian package prometheus)"
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )
