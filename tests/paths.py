"""Where the suite's files are: the fixtures, the real H100 recording, the repository's files."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every file a test reads is in the repository (tests/fixtures/README.md says what is where).
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The real H100 recording: NVML replay frames and the model server's /metrics at the same seconds.
NEIGHBOUR_NVML = FIXTURES / "nvml-recordings" / "h100-neighbour.nvml.json"
NEIGHBOUR_SERVING = FIXTURES / "nvml-recordings" / "h100-neighbour.serving.json"
SERVING_FIXTURES = FIXTURES / "serving"


def repository_files() -> list[Path]:
    """Tracked files and new ones not ignored: what a commit of this tree would hold.

    Outside a git checkout (an unpacked archive), every file but the usual build outputs.
    """
    if not (ROOT / ".git").exists():
        skip = {".venv", ".git", "build", "dist", ".state", "__pycache__", ".hypothesis"}
        return [
            p
            for p in ROOT.rglob("*")
            if p.is_file()
            and not any(
                part in skip or part.endswith((".egg-info", "_cache"))
                for part in p.relative_to(ROOT).parts
            )
            and p.suffix not in {".pyc", ".log"}
        ]
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]
