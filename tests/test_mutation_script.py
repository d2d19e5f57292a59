"""scripts/mutation.py's scratch configuration is TOML mutmut can read, for every module."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutation.py"


def _script():
    spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation_script", module)
    spec.loader.exec_module(module)
    return module


SCRIPT_MODULE = _script()


@pytest.mark.parametrize("module", sorted(SCRIPT_MODULE.MODULES))
def test_every_module_gets_a_config_mutmut_can_read(module):
    tests = list(SCRIPT_MODULE.MODULES[module])
    text = (SCRIPT.parents[1] / "pyproject.toml").read_text()
    text += SCRIPT_MODULE.mutmut_section(module, tests)
    section = tomllib.loads(text)["tool"]["mutmut"]
    assert section["only_mutate"] == [f"node_exporter_ml/{module}"]
    assert set(section["also_copy"]) >= {"docs", "tools/"}
    assert (SCRIPT.parents[1] / "node_exporter_ml" / module).is_file()
    for arg in tests:
        assert arg.startswith("-") or (SCRIPT.parents[1] / arg).is_file(), arg
