"""Writes the deploy files that are generated from other committed files, or checks them.

Each is made from a source kept by hand (or by another builder) so that one edit reaches every
way of deploying:

- `deploy/grafana/dashboards/node-exporter-ml.json`, from `tools/dashboard_build.py`;
- `deploy/grafana/dashboard-configmap.yaml`, that JSON in a ConfigMap for the Grafana sidecar;
- `deploy/prometheusrule.yaml`, the rules of `deploy/prometheus/rules/` for prometheus-operator;
- `charts/node-exporter-ml/files/`, byte copies of the dashboard and the rule files (a packaged
  chart reads only its own files).

They are written in that order, each from the files as they are on disk, so that one run
leaves them all consistent. The tests (tests/test_deploy_manifests.py, tests/test_chart.py,
tests/test_dashboard.py) check the committed files equal what this module builds.

    python -m tools.deploy_build           # rewrite the stale ones (`make manifests`)
    python -m tools.deploy_build --check   # exit 1 and name them when one is stale
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tools import dashboard_build

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CHART = ROOT / "charts" / "node-exporter-ml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "node-exporter-ml.json"
DASHBOARD_CONFIGMAP = DEPLOY / "grafana" / "dashboard-configmap.yaml"
PROMETHEUS_RULE = DEPLOY / "prometheusrule.yaml"
RULE_FILES = [
    DEPLOY / "prometheus" / "rules" / "node-exporter-ml.rules.yml",
    DEPLOY / "prometheus" / "rules" / "node-exporter-ml.alerts.yml",
]
# Chart files that are copies of deploy/ files, so that the chart is packaged on its own.
CHART_COPIES = {CHART / "files" / source.name: source for source in (DASHBOARD, *RULE_FILES)}


def prometheus_rule_document() -> dict[str, Any]:
    """The PrometheusRule holding every group of RULE_FILES."""
    groups = [g for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "node-exporter-ml",
            "namespace": "node-exporter-ml",
            "labels": {
                "app.kubernetes.io/name": "node-exporter-ml",
                "release": "kube-prometheus-stack",
            },
        },
        "spec": {"groups": groups},
    }


def dashboard_configmap_document() -> dict[str, Any]:
    """The ConfigMap the Grafana sidecar of kube-prometheus-stack loads the dashboard from."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "node-exporter-ml-dashboard",
            "namespace": "node-exporter-ml",
            "labels": {"app.kubernetes.io/name": "node-exporter-ml", "grafana_dashboard": "1"},
        },
        "data": {DASHBOARD.name: DASHBOARD.read_text()},
    }


# The YAML manifests: what builds the object, and the comment the file starts with.
GENERATED_MANIFESTS: dict[Path, tuple[Callable[[], dict[str, Any]], str]] = {
    PROMETHEUS_RULE: (
        prometheus_rule_document,
        "# Generated from deploy/prometheus/rules/*.yml by tools/deploy_build.py\n"
        "# (`make manifests` rewrites it). The same rules, for prometheus-operator.\n",
    ),
    DASHBOARD_CONFIGMAP: (
        dashboard_configmap_document,
        "# Generated from deploy/grafana/dashboards/node-exporter-ml.json by\n"
        "# tools/deploy_build.py (`make manifests` rewrites it). The dashboard\n"
        '# for the Grafana sidecar of kube-prometheus-stack (label grafana_dashboard: "1").\n',
    ),
}


def manifest_text(path: Path) -> str:
    """The text of one of GENERATED_MANIFESTS as committed: its header, then the object."""
    build, header = GENERATED_MANIFESTS[path]
    return header + yaml.safe_dump(build(), sort_keys=False, width=100)


def _manifest_bytes(path: Path) -> bytes:
    return manifest_text(path).encode()


def builders() -> dict[Path, Callable[[], bytes]]:
    """Every generated file and how to make its content, in the order they are written.

    A file comes after the files it is made from.
    """
    made: dict[Path, Callable[[], bytes]] = {DASHBOARD: lambda: dashboard_build.render().encode()}
    for path in GENERATED_MANIFESTS:
        made[path] = functools.partial(_manifest_bytes, path)
    for copy, source in CHART_COPIES.items():
        made[copy] = source.read_bytes
    return made


def stale(path: Path, content: bytes) -> bool:
    """Whether the file at `path` is missing or holds something other than `content`."""
    return not path.is_file() or path.read_bytes() != content


def update() -> list[Path]:
    """Rewrites the generated files that differ from what they are made from; returns them."""
    written = []
    for path, build in builders().items():
        content = build()
        if stale(path, content):
            path.write_bytes(content)
            written.append(path)
    return written


def check() -> list[Path]:
    """The generated files that differ from what the committed sources make; writes nothing."""
    return [path for path, build in builders().items() if stale(path, build())]


def main(argv: list[str] | None = None) -> int:
    """The command line: rewrite (or with --check, name) the stale generated files."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.deploy_build",
        description="Write the generated deploy files (dashboard JSON and ConfigMap, "
        "PrometheusRule, the Helm chart's copies) from their sources.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and name each generated file that is stale",
    )
    args = parser.parse_args(argv)
    if args.check:
        found = check()
        for path in found:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        if found:
            print("run `python -m tools.deploy_build` (make manifests)", file=sys.stderr)
        return 1 if found else 0
    for path in update():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
