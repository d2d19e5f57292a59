"""Options declared by their part: one dataclass, composed into the flags and the file schema."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.core import Metric

import node_exporter_ml
from node_exporter_ml import registry
from node_exporter_ml.collectors.base import BlockingCollector
from node_exporter_ml.config import (
    Config,
    ConfigError,
    build_parser,
    declared_sections,
    parse_args,
    parse_config_file,
    reload_config,
)
from node_exporter_ml.options import Section, YamlReader, at_least, flag, yaml_key
from node_exporter_ml.snapshot import DataKey, Snapshot

PACKAGE = Path(node_exporter_ml.__file__).parent


# Everything a new collector needs for its own flag and config section, in one place.
@dataclass(frozen=True, slots=True)
class WidgetOptions:
    level: int = flag(
        "--widget.level", 2, type=int, metavar="N", help="how hard to widget", check=at_least(2)
    )
    colour: str = yaml_key("colour", "blue", YamlReader.string)


WIDGET = Section("widget", WidgetOptions, file_key="widgets")


WIDGETS = DataKey("widget", WidgetOptions)


class WidgetCollector(BlockingCollector[WidgetOptions]):
    """Widgets (a test-only collector)."""

    def update(self, previous: Snapshot | None) -> WidgetOptions:
        return self.ctx.config.section(WIDGET)

    def families(self, data: WidgetOptions, snapshot: Snapshot) -> Iterable[Metric]:
        return ()


@pytest.fixture
def widget(monkeypatch):
    registry.load_collectors()  # the real ones first, into the registry that stays
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_collector("widget", produces=WIDGETS, default_enabled=False, options=WIDGET)(
        WidgetCollector
    )
    return {n: r.default_enabled for n, r in registry.load_collectors().items()}


def test_a_registered_collector_brings_its_flag_and_file_section(widget, tmp_path):
    assert WIDGET in declared_sections()
    text = " ".join(build_parser(widget).format_help().split())
    assert "--widget.level N how hard to widget (default: 2)" in text
    assert "--collector.widget" in text
    path = tmp_path / "agent.yaml"
    path.write_text("widgets:\n  colour: red\nserving:\n  timeout: 1s\n")
    cfg = parse_args(["--widget.level=5", "--collector.widget", f"--config.file={path}"], widget)
    assert cfg.section(WIDGET) == WidgetOptions(level=5, colour="red")
    assert "widget" in cfg.collectors
    assert parse_args([], widget).section(WIDGET) == WidgetOptions()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("widgets: {colour: 5}", "c.yaml: widgets.colour: expected a non-empty string, got 5"),
        ("widgets: {size: 1}", "c.yaml: widgets.size: unknown key (expected one of: colour)"),
        ("widgets: [1]", "c.yaml: widgets: expected a mapping, got list"),
        ("gadgets: {}", "c.yaml: gadgets: unknown key (expected one of: "),
    ],
)
def test_its_file_errors_name_the_key(widget, text, message):
    with pytest.raises(ConfigError) as err:
        parse_config_file(text, "c.yaml")
    assert message in str(err.value)
    assert "widgets" in str(err.value)  # the schema lists the new section among the others


def test_its_flag_check_names_the_flag(widget):
    with pytest.raises(ConfigError, match=r"^--widget.level: expected an integer >= 2$"):
        parse_args(["--widget.level=1"], widget)


def test_reload_rereads_the_file_section_and_keeps_the_flags(widget, tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("widgets: {colour: red}\n")
    cfg = parse_args(["--widget.level=7", f"--config.file={path}"], widget)
    path.write_text("kube: {pod_labels: [app]}\n")
    again = reload_config(cfg)
    assert again.section(WIDGET) == WidgetOptions(level=7, colour="blue")
    path.write_text("widgets: {colour: ''}\n")
    with pytest.raises(ConfigError, match=r"widgets\.colour"):
        reload_config(again)


def test_a_field_declared_without_flag_or_key_is_refused():
    @dataclass(frozen=True)
    class Loose:
        level: int = 1

    with pytest.raises(TypeError, match=r"Loose.level: declare it with flag\(\) or yaml_key\(\)"):
        build_parser({}, [Section("loose", Loose)])


def test_without_options_a_config_gives_each_sections_defaults():
    for section in declared_sections():
        assert Config().section(section) == section.options()


# --- every declared option is read by a part -------------------------------------------------


def _reads(tree: ast.AST, section: str) -> set[str]:
    """Fields read off `<x>.section(SECTION)`, directly or through a name assigned from it."""

    def is_section_call(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "section"
            and len(node.args) == 1
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == section
        )

    names = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and is_section_call(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and (
            is_section_call(node.value)
            or (isinstance(node.value, ast.Name) and node.value.id in names)
        )
    }


def test_every_declared_option_is_read_by_the_package():
    constants = {}  # the module-level name of each section (NVML_OPTIONS, ...)
    trees = [ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")]
    for tree in trees:
        for node in tree.body:
            if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Call):
                call = node.value
                if isinstance(call.func, ast.Name) and call.func.id == "Section":
                    target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
                    assert isinstance(target, ast.Name)
                    constants[ast.literal_eval(call.args[0])] = target.id
    sections = declared_sections()
    assert {s.name for s in sections} == set(constants)
    for section in sections:
        read = set().union(*(_reads(tree, constants[section.name]) for tree in trees))
        declared = {f.name for f in dataclasses.fields(section.options)}
        assert declared <= read, f"{section.name}: declared but never read: {declared - read}"
