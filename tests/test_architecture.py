"""The import graph of node_exporter_ml, read from the source: no cycles, and drift flows one way.

Every import counts: at module level, inside a function (where cycles used to hide) and under
``TYPE_CHECKING``. The drift subsystem's layers point down only: web -> service -> store ->
engine; the engine is pure (no I/O, no HTTP, no database, no event loop).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import node_exporter_ml

ROOT = Path(node_exporter_ml.__file__).parent
PACKAGE = "node_exporter_ml"


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package under `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports, anywhere in its file, as dotted names.

    Names of the package resolve to the deepest module that exists (``from pkg import mod``
    is the submodule, ``from pkg.mod import func`` the module); others stay as written.
    """
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join([*here, base] if base else here)
            candidates = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for candidate in candidates:
            resolved = candidate
            while resolved and resolved not in known and "." in resolved:
                resolved = resolved.rpartition(".")[0]
            out.add(resolved if resolved in known else candidate)
    out.discard(name)
    return out


def graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    found = modules(root, package)
    known = set(found)
    return {name: imported(name, path, known) & known for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (first module repeated at the end) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_a_cycle(group, edges) for group in groups]


def _a_cycle(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A path from the group's first module back to itself, inside the group (breadth first)."""
    start, members = group[0], set(group)
    paths = {w: [start, w] for w in sorted(edges[start] & members)}
    queue = list(paths)
    while start not in paths:
        v = queue.pop(0)
        for w in sorted(edges[v] & members):
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return paths[start]


def test_the_cycle_finder_sees_imports_in_functions_and_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg.sub.c import x\n")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\nx = 1\n"
    )
    (pkg / "d.py").write_text("import json\nfrom pkg import a\n")
    found = cycles(graph(pkg, "pkg"))
    assert found == [["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]]


def test_no_import_cycles():
    found = cycles(graph(ROOT, PACKAGE))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


DRIFT = f"{PACKAGE}.drift"
ENGINE = f"{DRIFT}.engine"
ALL = modules(ROOT, PACKAGE)


def _imports_of(prefix: str) -> dict[str, set[str]]:
    known = set(ALL)
    return {
        name: imported(name, path, known)
        for name, path in ALL.items()
        if name == prefix or name.startswith(prefix + ".")
    }


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_drift_engine_imports_only_itself_and_no_io():
    engine = _imports_of(ENGINE)
    assert len(engine) > 5, sorted(engine)
    io = ("aiohttp", "asyncio", "sqlite3", "multiprocessing", "socket", "http", "urllib")
    wrong = {
        module: sorted(
            i
            for i in imports
            if (_under(i, PACKAGE) and not _under(i, ENGINE))
            or any(_under(i, banned) for banned in io)
        )
        for module, imports in engine.items()
    }
    assert not any(wrong.values()), {m: w for m, w in wrong.items() if w}


@pytest.mark.parametrize(
    ("module", "banned"),
    [
        (
            f"{DRIFT}.store",
            (f"{DRIFT}.service", f"{DRIFT}.web", f"{PACKAGE}.collectors", "aiohttp"),
        ),
        (f"{DRIFT}.service", (f"{DRIFT}.web", f"{DRIFT}.page", f"{PACKAGE}.collectors", "aiohttp")),
        (f"{DRIFT}.bodies", (f"{DRIFT}.service", f"{DRIFT}.web", "aiohttp")),
        (f"{DRIFT}.windowreport", (f"{DRIFT}.service", f"{DRIFT}.web", "aiohttp", "asyncio")),
        (f"{DRIFT}.errors", (PACKAGE + ".", "aiohttp")),
        (f"{DRIFT}.worker", (PACKAGE + ".", "aiohttp")),
    ],
)
def test_drift_layers_point_down(module, banned):
    imports = _imports_of(module)[module]
    wrong = sorted(i for i in imports for b in banned if _under(i, b.rstrip(".")))
    assert not wrong, f"{module} imports {wrong}"


def test_nothing_outside_drift_reaches_into_its_insides():
    # The collector mounts the subsystem (its service and its web side); the rest of the
    # agent knows drift only through the collector and the typed route hook.
    outside = {
        name: {i for i in imports if _under(i, DRIFT)}
        for name, imports in _imports_of(PACKAGE).items()
        if not _under(name, DRIFT)
    }
    users = {name for name, imports in outside.items() if imports}
    assert users == {f"{PACKAGE}.collectors.drift"}, sorted(users)
