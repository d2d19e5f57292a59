"""Naming lint over every golden exposition (STYLE.md section 4, node_exporter's checkmetrics)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

FIXTURES = Path(__file__).parent / "fixtures"
GOLDENS = sorted([*FIXTURES.glob("golden/*.txt"), *FIXTURES.glob("nvml/golden/*.prom")])
FORBIDDEN_LABELS = {"hostname", "node", "instance", "job", "cluster", "type"}
BAD_UNITS = re.compile(r"_(percent|percentage|milliseconds|microseconds|mib|kib|mb|kb|megabytes|"
                       r"milliwatts|millijoules|mhz)(_total)?$")  # fmt: skip
OURS = re.compile(r"^nodeml_[a-z0-9_]+$")


@pytest.mark.parametrize("path", GOLDENS, ids=lambda p: p.name)
def test_golden_exposition_follows_the_naming_rules(path: Path) -> None:
    text = path.read_text()
    families = list(text_string_to_metric_families(text))
    assert families, path
    for fam in families:
        if fam.name.startswith(("process_", "python_")):
            continue  # client_python's own process and platform collectors
        assert OURS.match(fam.name), fam.name
        assert not BAD_UNITS.search(fam.name), f"{fam.name}: use base units"
        if fam.type == "gauge":
            assert not fam.name.endswith("_total"), f"{fam.name}: _total on a gauge"
        for sample in fam.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), (fam.name, sample.labels)
            if fam.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
                assert sample.value >= 0, sample
            if fam.name.endswith("_ratio"):
                assert 0.0 <= sample.value <= 1.0, sample
            if fam.name.endswith("_info"):
                assert sample.value == 1.0, sample
    # HELP says what and from where: never empty.
    for line in text.splitlines():
        if line.startswith("# HELP nodeml_"):
            assert len(line.split(" ", 3)) == 4, line
            assert len(line.split(" ", 3)[3]) > 10, line
