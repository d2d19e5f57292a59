"""The repository stands alone: no file in it reaches outside it for fixtures."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from tests.paths import (
    FIXTURES,
    NEIGHBOUR_NVML,
    NEIGHBOUR_SERVING,
    SERVING_FIXTURES,
    repository_files,
)

ROOT = Path(__file__).resolve().parents[1]


def outside_pattern(root: Path) -> re.Pattern[str]:
    """Paths into the folders beside the clone: ``../<sibling>`` or the sibling's absolute path.

    The siblings are read from the disk, so whatever lies beside this clone (the folder a CI
    lays next to it, another checkout) is what no file may name.
    """
    try:
        siblings = sorted(p for p in root.parent.iterdir() if p.is_dir() and p != root)
    except OSError:
        siblings = []
    parts = [rf"\.\./{re.escape(p.name)}/" for p in siblings]
    # Absolute paths too, unless the clone sits in the temporary directory (or at the root),
    # whose other folders are anyone's and which docs may name (a throwaway venv).
    if root.parent not in (Path(tempfile.gettempdir()).resolve(), Path("/")):
        parts += [re.escape(str(p)) + "/" for p in siblings]
    return re.compile("|".join(parts) or r"(?!)")


def test_no_file_points_outside_the_repository():
    files = repository_files()
    assert ROOT / "tests" / "conftest.py" in files
    outside = outside_pattern(ROOT)
    hits = []
    for path in files:
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if outside.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_pattern_finds_what_it_is_for(tmp_path):
    clone, beside = tmp_path / "clone", tmp_path / "beside"
    clone.mkdir()
    beside.mkdir()
    outside = outside_pattern(clone)
    for line in (
        'make run ARGS="--nvml.replay=../beside/fixtures/x.json"',
        f'Path(os.environ.get("FIXTURES", "{beside}/fixtures"))',
    ):
        assert outside.search(line), line
    assert not outside.search("beside/fixtures is gone; ../docs/nvml.md stays")
    assert not outside_pattern(tmp_path / "missing" / "clone").search("../anything/x")


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
