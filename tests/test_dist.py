"""The package on its own: `make dist`, then the wheel in a fresh virtualenv outside the repository.

The wheel is built and installed once per session (about 15 s with a warm pip cache: the
isolated build fetches setuptools, the install the runtime dependencies, from the index).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.paths import repository_files
from tools.agentproc import AgentProcess

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
QUICKSTART_REPLAY = ROOT / "examples" / "h100-neighbour.nvml.json"
# Whichever test runs first pays for the build and the install.
pytestmark = pytest.mark.timeout(420)


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def run(*cmd: str | Path, cwd: Path, timeout: float) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=outside_env(),
    )
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def outside_env() -> dict[str, str]:
    """This environment without what could lead Python back into the checkout."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    base = tmp_path_factory.mktemp("dist")
    assert not base.is_relative_to(ROOT)
    out, venv = base / "dist", base / "venv"
    # The Makefile's own recipe, with this interpreter's environment (`-o`: do not reinstall it).
    bin_dir = Path(sys.executable).parent
    run(
        "make", "-s", "dist", f"DIST={out}", f"BIN={bin_dir}", "-o", f"{bin_dir}/.installed-test",
        cwd=ROOT, timeout=180,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    # A bare virtualenv; this environment's pip installs into it (--python), with the
    # dependencies the wheel declares and nothing else.
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base, timeout=60)
    run(
        sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
        "--quiet", "--no-compile", "--disable-pip-version-check", wheel,
        cwd=base, timeout=360,
    )  # fmt: skip
    return Dist(wheel, sdist, venv)


def test_version_from_the_installed_script(dist):
    out = run(dist.venv / "bin" / "node-exporter-ml", "--version", cwd=dist.venv, timeout=30)
    assert out.split() == ["node-exporter-ml", PROJECT["version"]]


def test_the_drift_engine_imports_and_evaluates_from_the_wheel(dist):
    code = (
        "import json, node_exporter_ml, node_exporter_ml.drift as d\n"
        "ref = {'columns': {'x': [float(i % 50) for i in range(600)]}}\n"
        "cur = {'columns': {'x': [float(i % 50) + 40 for i in range(600)]}}\n"
        "r = d.evaluate(ref, cur)\n"
        "print(json.dumps([node_exporter_ml.__file__, r['columns']['x']['drift_detected']]))\n"
    )
    where, drifted = json.loads(run(dist.python, "-c", code, cwd=dist.venv, timeout=60))
    assert Path(where).is_relative_to(dist.venv), where
    assert drifted is True


def test_replay_run_and_scrape_of_the_installed_agent(dist, tmp_path, monkeypatch):
    for name in ("PYTHONPATH", "PYTHONHOME"):
        monkeypatch.delenv(name, raising=False)
    agent = AgentProcess(
        ["--sampler.interval=0.5s", f"--nvml.replay={QUICKSTART_REPLAY}"],
        tmp_path,
        command=(str(dist.venv / "bin" / "node-exporter-ml"),),
        cwd=tmp_path,
    ).start()
    try:
        agent.wait_ready(timeout=30)
        samples = [s for f in text_string_to_metric_families(agent.metrics()) for s in f.samples]
        value = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
        assert value[("nodeml_collector_success", (("collector", "nvml"),))] == 1
        (gpu,) = [s.labels for s in samples if s.name == "nodeml_gpu_info"]
        assert gpu["name"] == "NVIDIA H100 80GB HBM3"
        assert [s for s in samples if s.name == "nodeml_gpu_power_watts" and s.value > 0]
        (build,) = [s.labels for s in samples if s.name == "nodeml_build_info"]
        assert build["version"] == PROJECT["version"]
        # What the package serves besides metrics: the OpenAPI document and the pages.
        doc = agent.get("/api/v1/openapi.json")
        assert doc.status == 200
        assert json.loads(doc.body)["openapi"].startswith("3.1")
        landing = agent.get("/")
        assert landing.status == 200
        assert "/api/v1/openapi.json" in landing.text
    finally:
        assert agent.stop() == 0, agent.output()


def test_the_wheel_holds_every_file_of_the_package(dist):
    """Modules, generated proto modules and their stubs, py.typed and any data file."""
    names = set(zipfile.ZipFile(dist.wheel).namelist())
    package = [
        p.relative_to(ROOT).as_posix()
        for p in repository_files()
        if p.is_relative_to(ROOT / "node_exporter_ml") and p.is_file()
    ]
    assert "node_exporter_ml/podresources/api_pb2_grpc.py" in package
    missing = sorted(set(package) - names)
    assert not missing, f"left out of the wheel: {missing} (pyproject.toml package-data)"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_metadata(dist):
    with zipfile.ZipFile(dist.wheel) as whl:
        (meta_name,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        meta = whl.read(meta_name).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in whl.namelist())
    headers = meta.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers
    assert f"Requires-Python: {PROJECT['requires-python']}" in headers
    for label, url in PROJECT["urls"].items():
        assert f"Project-URL: {label}, {url}" in headers
    assert sum(h.startswith("Classifier: ") for h in headers) == len(PROJECT["classifiers"])
    assert not [h for h in headers if h.startswith("Classifier: License ::")]


def test_the_sdist_builds_the_wheel_and_carries_the_release_files(dist):
    with tarfile.open(dist.sdist) as tar:
        top = f"{dist.sdist.name.removesuffix('.tar.gz')}/"
        names = {n.removeprefix(top) for n in tar.getnames()}
    for required in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"):
        assert required in names, required
    assert "proto/podresources/v1/api.proto" in names
    assert "node_exporter_ml/cli.py" in names
    # Half of tests/ (no fixtures, no helpers) would be a suite that cannot run.
    assert not [n for n in names if n.startswith("tests/")]


def test_tools_and_tests_are_shipped_in_neither(dist):
    """tools/ (the cluster demo, the dashboard builder, the parts tests share) is for a clone."""
    assert (ROOT / "tools" / "cluster.py").is_file()
    wheel = zipfile.ZipFile(dist.wheel).namelist()
    with tarfile.open(dist.sdist) as tar:
        top = f"{dist.sdist.name.removesuffix('.tar.gz')}/"
        sdist = [n.removeprefix(top) for n in tar.getnames()]
    for names in (wheel, sdist):
        assert not [n for n in names if n.startswith(("tools/", "tests/"))]


def test_install_instructions_name_the_wheel_make_dist_builds(dist):
    """README, docs/deploy.md and the unit install what `make dist` makes, not a PyPI name."""
    install = f"/opt/node-exporter-ml/bin/pip install dist/{dist.wheel.name}"
    for doc in ("README.md", "docs/deploy.md", "systemd/node-exporter-ml.service"):
        text = (ROOT / doc).read_text()
        assert "make dist" in text, doc
        assert install in text, doc
        assert "pip install node-exporter-ml" not in text, doc
