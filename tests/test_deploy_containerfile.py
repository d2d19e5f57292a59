"""The Containerfile, read (no container engine here): base, user, entry point, copied paths."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE = ROOT / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    return ins[last_from:]


def test_python_slim_base_images():
    for op, arg in instructions():
        if op == "FROM":
            assert re.match(r"docker\.io/library/python:3\.11-slim(\s|$)", arg), arg


def test_runs_as_the_daemonset_user():
    users = [arg for op, arg in final_stage() if op == "USER"]
    assert users, "the image must not run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    ds = next(
        d
        for d in yaml.safe_load_all((ROOT / "daemonset.yaml").read_text())
        if d["kind"] == "DaemonSet"
    )
    pod_sc = ds["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc["runAsUser"] == int(uid)
    assert pod_sc["runAsGroup"] == int(gid)


def test_entrypoint_is_the_package_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entry,) = [arg for op, arg in final_stage() if op == "ENTRYPOINT"]
    assert entry.strip('[]"') in scripts
    assert any(op == "RUN" and "pip install ." in arg for op, arg in instructions())


def test_copied_sources_exist():
    for op, arg in instructions():
        if op == "COPY" and not arg.startswith("--from"):
            *sources, _dest = arg.split()
            for src in sources:
                assert (ROOT / src).exists(), src


def test_exposes_the_default_port():
    assert ("EXPOSE", "9847") in final_stage()


def test_copies_what_the_package_build_reads():
    """`pip install .` reads the readme and the license files that pyproject.toml names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = {
        src
        for op, arg in instructions()
        if op == "COPY" and not arg.startswith("--from")
        for src in arg.split()[:-1]
    }
    assert {"pyproject.toml", project["readme"], *project["license-files"]} <= copied


def test_oci_labels_name_the_version_and_the_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    labels = dict(
        re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', dict(final_stage())["LABEL"])
    )
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.source"] == project["urls"]["Source"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.title"] == project["name"]
