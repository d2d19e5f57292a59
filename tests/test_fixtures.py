"""The repository stands alone: no file in it reaches outside it for fixtures."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .conftest import FIXTURES, NEIGHBOUR_NVML, NEIGHBOUR_SERVING, SERVING_FIXTURES

ROOT = Path(__file__).resolve().parents[1]
# A sibling folder of the clone, an absolute path of the machine that built it, or an
# environment variable pointing at either (spelt in pieces so this file does not match).
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "/" + "work/", "NODEML_" + "SHARED"]))


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


def test_no_file_points_outside_the_repository():
    files = repository_files()
    assert ROOT / "tests" / "conftest.py" in files
    hits = []
    for path in files:
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_pattern_finds_what_it_is_for():
    for line in (
        'make run ARGS="--nvml.replay=../' + 'shared/fixtures/nvml/x.json"',
        'Path(os.environ.get("NODEML_' + 'SHARED", "/srv"))',
        "see /" + "work/shared/reference/evidently-drift.md",
    ):
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search("shared/fixtures is gone; ../docs/nvml.md stays")


def test_the_recordings_and_the_quickstart_copy_are_here():
    for path in (NEIGHBOUR_NVML, NEIGHBOUR_SERVING, FIXTURES / "nvml-recordings" / "README.md"):
        assert path.is_file(), path
    frameworks = {p.name.split(".", 1)[0] for p in SERVING_FIXTURES.glob("*.prom")}
    assert len(frameworks) >= 10
    for fw in frameworks:
        assert (SERVING_FIXTURES / f"{fw}.prom").is_file()
        assert (SERVING_FIXTURES / f"{fw}.later.prom").is_file()
    # The README quickstart replays the copy in examples/: the same bytes as the tests'.
    quickstart = ROOT / "examples" / "h100-neighbour.nvml.json"
    assert quickstart.read_bytes() == NEIGHBOUR_NVML.read_bytes()
    assert "--nvml.replay=examples/h100-neighbour.nvml.json" in (ROOT / "README.md").read_text()
