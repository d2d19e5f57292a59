"""Every alert's runbook_url points at a section of docs/alerts.md that says what to do."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "rules" / "node-exporter-ml.alerts.yml"
RUNBOOKS = ROOT / "docs" / "alerts.md"
BASE = "https://github.com/node-exporter-ml/node-exporter-ml/blob/main/docs/alerts.md#"


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, - for space."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections() -> dict[str, str]:
    text = RUNBOOKS.read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {github_anchor(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def alerts() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_every_alert_links_its_runbook_section():
    runbooks = sections()
    assert len(alerts()) >= 17
    for rule in alerts():
        url = rule["annotations"].get("runbook_url", "")
        assert url == BASE + rule["alert"].lower(), rule["alert"]
        section = runbooks.get(url.removeprefix(BASE))
        assert section, f"{rule['alert']}: no section in docs/alerts.md"
        assert "**Do**" in section, f"{rule['alert']}: the runbook does not say what to do"


def test_runbook_links_between_sections_resolve():
    anchors = set(sections())
    for target in re.findall(r"\]\(#([^)]+)\)", RUNBOOKS.read_text()):
        assert target in anchors, target


def test_no_runbook_without_an_alert():
    names = {r["alert"].lower() for r in alerts()}
    assert set(sections()) == names
