"""The README's pictures: committed, readable, referenced, and `make screenshots` makes them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.pictures import decode_png

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
PAGES = {"landing-page.png": (1000, 560), "drift-page.png": (1000, 1200)}


def _non_white_share(path: Path) -> float:
    width, height, channels, pixels = decode_png(path.read_bytes())
    white = b"\xff\xff\xff"
    non_white = sum(1 for i in range(0, len(pixels), channels) if pixels[i : i + 3] != white)
    return non_white / (width * height)


def check_pictures(directory: Path) -> None:
    for name, size in PAGES.items():
        width, height, _, _ = decode_png((directory / name).read_bytes())
        assert (width, height) == size, name
        assert _non_white_share(directory / name) > 0.02, f"{name} looks blank"
    sample = (directory / "metrics-sample.txt").read_text()
    names = {f.name for f in text_string_to_metric_families(sample)}
    assert {"nodeml_serving_request_latency_seconds", "nodeml_drift_score",
            "nodeml_node_load1", "nodeml_process_cpu_seconds"} <= names  # fmt: skip


def test_committed_pictures_are_readable_and_in_the_readme():
    check_pictures(IMG)
    readme = (ROOT / "README.md").read_text()
    for name in (*PAGES, "metrics-sample.txt"):
        assert f"docs/img/{name}" in readme, name


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_make_screenshots_pipeline(tmp_path):
    """What `make screenshots` runs, writing into a temporary directory instead of docs/img."""
    then = f"{sys.executable} {ROOT / 'scripts' / 'screenshots.py'} --out {tmp_path / 'img'}"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--port=0", "--drift-after=5",
         "--until-ready", "--timeout=90", f"--state-dir={tmp_path / 'state'}", "--then", then],
        capture_output=True, text=True, timeout=140, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    check_pictures(tmp_path / "img")
