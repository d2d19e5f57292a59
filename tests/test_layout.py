"""The layout of tests/ and tools/: helpers live in modules, conftest.py holds fixtures and hooks.

A test module imports its helpers from helper modules (tests/helpers.py, tests/paths.py, ...) or
from tools/, never from conftest.py or from another test module; every import in tests/ is
absolute (`from tests.x import`, `from tools.x import`); tools/ imports nothing from tests/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(tree: ast.Module, package: str) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in `tree`, relative ones resolved from `package`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if node.module:
                found.append((node.lineno, base))
            # `from tests import test_x`, `from . import conftest`: the names are modules too.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def import_problems(path: Path, source: str, package: str) -> list[str]:
    """What is wrong with the imports of one module of tests/ or tools/."""
    tree = ast.parse(source, str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            problems.append(f"{path}:{node.lineno}: relative import (write `from tests.x ...`)")
    for line, module in imported_modules(tree, package):
        last = module.rsplit(".", 1)[-1]
        where = f"{path}:{line}: imports {module}"
        if not module.startswith(("tests.", "tools.")):
            continue
        if package.split(".")[0] == "tools" and module.startswith("tests."):
            problems.append(f"{where}: tools/ must not depend on tests/")
        elif last == "conftest":
            problems.append(f"{where}: conftest.py is for fixtures and hooks; import a module")
        elif last.startswith("test_"):
            problems.append(f"{where}: move the helper from the test module into a helper module")
    return problems


def conftest_problems(path: Path, source: str) -> list[str]:
    """Top-level definitions of a conftest.py that are neither fixtures nor pytest hooks."""
    problems = []
    for node in ast.parse(source, str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
            if not fixture and not node.name.startswith("pytest_"):
                problems.append(f"{path}:{node.lineno}: {node.name} is a helper, not a fixture")
        elif isinstance(node, ast.ClassDef):
            problems.append(f"{path}:{node.lineno}: class {node.name} belongs in a helper module")
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            public = [n for n in names if not n.startswith("_")]
            if public:
                problems.append(f"{path}:{node.lineno}: {public} belongs in a helper module")
    return problems


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).parent.parts)


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", ["tests", "tools"])
def test_imports_follow_the_layout(folder):
    problems = [
        p
        for path in sources(folder)
        for p in import_problems(path, path.read_text(), package_of(path))
    ]
    assert not problems, "\n".join(problems)


def test_conftests_hold_fixtures_and_hooks_only():
    paths = [p for p in sources("tests") if p.name == "conftest.py"]
    assert ROOT / "tests" / "conftest.py" in paths
    problems = [p for path in paths for p in conftest_problems(path, path.read_text())]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("package", "source", "wanted"),
    [
        ("tests", "from tests.conftest import free_port\n", "conftest.py is for fixtures"),
        ("tests", "from .conftest import FIXTURES\n", "relative import"),
        ("tests.podresources", "from ..conftest import FIXTURES\n", "conftest.py is for fixtures"),
        ("tests", "from . import conftest\n", "conftest.py is for fixtures"),
        ("tests", "from tests.test_web import wait_ready\n", "move the helper"),
        ("tests", "from .test_golden import scrape_agent\n", "move the helper"),
        ("tests", "from tests import test_golden\n", "move the helper"),
        ("tests", "import tests.test_golden\n", "move the helper"),
        ("tests", "def f():\n    from tests.test_web import x\n", "move the helper"),
        ("tools", "from tests.paths import FIXTURES\n", "tools/ must not depend on tests/"),
        ("tools", "from .agentproc import AgentProcess\n", "relative import"),
    ],
)
def test_the_import_check_finds_what_it_is_for(package, source, wanted):
    problems = import_problems(Path("x.py"), source, package)
    assert any(wanted in p for p in problems), problems


def test_the_import_check_lets_helper_modules_through():
    source = (
        "from tests.helpers import config\nfrom tests.podresources.fakekubelet import U0\n"
        "from tools.agentproc import AgentProcess\nimport pytest\n"
    )
    assert import_problems(Path("x.py"), source, "tests") == []


def test_the_conftest_check_finds_helpers():
    source = (
        "import pytest\nFIXTURES = 1\n_private = 2\n"
        "def pytest_addoption(parser): pass\n"
        "@pytest.fixture\ndef ok(): pass\n"
        "@pytest.fixture(autouse=True)\ndef also_ok(): pass\n"
        "def free_port(): pass\n"
        "class Helper: pass\n"
    )
    problems = conftest_problems(Path("conftest.py"), source)
    assert len(problems) == 3, problems
    assert [
        w for w in ("FIXTURES", "free_port", "Helper") if not any(w in p for p in problems)
    ] == []
