"""Collectors never import each other: shared data goes through typed keys and pure modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import node_exporter_ml.collectors as collectors_pkg

PACKAGE = "node_exporter_ml.collectors"
COLLECTOR_DIR = Path(collectors_pkg.__file__).parent
MODULES = sorted(p.stem for p in COLLECTOR_DIR.glob("*.py") if p.stem not in {"__init__", "base"})


def imported_collectors(path: Path) -> set[str]:
    """The collector modules `path` imports, however the import is spelt."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = PACKAGE if node.level else node.module or ""
            if node.level and node.module:
                base = f"{PACKAGE}.{node.module}"
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == PACKAGE.split(".") and len(parts) > 2 and parts[2] in MODULES:
                found.add(parts[2])
    return found


def test_there_are_collector_modules_to_check():
    assert {"cgroup", "nvml", "process", "serving"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_no_collector_imports_another(module):
    assert imported_collectors(COLLECTOR_DIR / f"{module}.py") - {module} == set()


@pytest.mark.parametrize(
    "source",
    [
        "from node_exporter_ml.collectors.process import gpu_pids",
        "from node_exporter_ml.collectors import process",
        "import node_exporter_ml.collectors.process",
        "from .process import gpu_pids",
        "from . import process",
    ],
)
def test_every_spelling_of_an_import_is_found(tmp_path, source):
    path = tmp_path / "x.py"
    path.write_text(source + "\n")
    assert imported_collectors(path) == {"process"}


def test_the_base_module_is_not_a_collector(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("from node_exporter_ml.collectors.base import BlockingCollector\n")
    assert imported_collectors(path) == set()
