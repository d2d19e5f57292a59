"""The Grafana dashboard: dashboard-linter's rules over the JSON, and every query run for real."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools import dashboard_build
from tools.cluster import Cluster, neighbour_node
from tools.promserver import PrometheusServer

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "node-exporter-ml.json"
COUNTER_FUNCS = ("rate(", "irate(", "increase(")


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def queries(dash: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for p in panels(dash):
        for t in p.get("targets", []):
            yield p["title"], t


def test_committed_json_is_the_built_dashboard():
    text = dashboard_build.render()
    assert DASHBOARD.read_text() == text, "stale dashboard JSON: run python -m tools.deploy_build"


def test_ids_titles_and_grid():
    dash = load()
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in panels(dash) if p["type"] != "row"]
    assert len(titles) == len(set(titles))
    cells: set[tuple[int, int]] = set()
    for p in panels(dash):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_template_variables():
    """dashboard-linter's template-datasource/job/instance rules, plus the issue's gpu variable."""
    variables = {v["name"]: v for v in load()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "gpu"):
        v = variables[name]
        assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert v["multi"] is True
        assert v["includeAll"] is True
        assert re.fullmatch(rf"label_values\((\w+)(\{{.*\}})?, {name}\)", v["definition"])


def test_panels_follow_dashboard_linter_rules():
    """panel-datasource, panel-title-description, panel-units, panel-no-targets rules."""
    for p in panels(load()):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["description"], p["title"]
        assert p["fieldConfig"]["defaults"]["unit"], p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]


def test_queries_follow_dashboard_linter_rules():
    """target-job, target-instance, target-rate-interval and target-counter-agg rules."""
    for title, t in queries(load()):
        expr = t["expr"]
        for selector in re.findall(r"nodeml_\w+\{([^}]*)\}", expr):
            assert 'job=~"$job"' in selector, (title, expr)
            assert 'instance=~"$instance"' in selector, (title, expr)
        for counter in re.findall(r"\w+_total\{[^}]*\}(?:\[[^\]]*\])?", expr):
            assert counter.endswith("[$__rate_interval]"), (title, expr)
        assert all(
            any(f"{fn}{m}" in expr for fn in COUNTER_FUNCS)
            for m in re.findall(r"(nodeml_\w+_total)\b", expr)  # not ..._total_bytes
        ), (title, expr)


def substitute(expr: str, values: dict[str, str], rate_interval: str = "1m") -> str:
    """Replace Grafana variables the way Grafana does for a multi-value regex selector."""
    out = expr.replace("$__rate_interval", rate_interval)
    for name, value in values.items():
        out = out.replace(f"${name}", value)
    assert "$" not in out, out
    return out


def test_every_query_is_valid_promql(tmp_path):
    """promtool parses each query (as a recording rule) with the variables substituted."""
    values = {"job": ".*", "instance": ".*", "gpu": ".*"}
    rules = [
        {"record": f"dashboard:query:{i}", "expr": substitute(t["expr"], values)}
        for i, (_, t) in enumerate(queries(load()))
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    exe = shutil.which("promtool")
    assert exe, "promtool is installed by `make test` (Debian package prometheus)"
    proc = subprocess.run(
        [exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_issue_panels_are_there():
    text = json.dumps([t["expr"] for _, t in queries(load())])
    for metric in (
        "nodeml_gpu_utilization_ratio",
        "nodeml_gpu_memory_used_bytes",
        "nodeml_process_gpu_memory_bytes",
        "nodeml_process_gpu_sm_seconds_total",
        'nodeml_serving_request_latency_seconds{job=~\\"$job\\", instance=~\\"$instance\\", '
        'quantile=\\"0.5\\"}',
        'quantile=\\"0.99\\"',
        "nodeml_serving_requests_per_second",
        "nodeml_serving_latency_cause",
        "nodeml_container_cpu_throttled_seconds_total",
        "nodeml_container_memory_working_set_bytes",
        "nodeml_drift_score",
    ):
        assert metric in text, metric
    table = next(p for p in panels(load()) if p["title"] == "Drift per feature")
    assert table["type"] == "table"


def test_provisioning_files():
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "node-exporter-ml.yaml").read_text()
    )
    assert provider["apiVersion"] == 1
    (p,) = provider["providers"]
    assert p["type"] == "file"
    assert p["options"]["path"]
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    (ds,) = sources["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["jsonData"]["timeInterval"]


# --- every query against a real Prometheus scraping a replaying agent -----------------------


def prometheus_get(prom: PrometheusServer, path: str, **params: str | list[str]) -> Any:
    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(f"{prom.url}{path}?{query}", timeout=10) as resp:
        payload = json.load(resp)
    assert payload["status"] == "success", payload
    return payload["data"]


def label_values(prom: PrometheusServer, definition: str) -> list[str]:
    """Grafana's label_values(selector, label) for Prometheus: /api/v1/series values."""
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
    assert m, definition
    series = prometheus_get(prom, "/api/v1/series", **{"match[]": m.group(1)})
    return sorted({s[m.group(2)] for s in series if m.group(2) in s})


def grafana_regex_escape(value: str) -> str:
    """How Grafana escapes one value of a multi-value variable inside a PromQL regex."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def variable_values(prom: PrometheusServer, dash: dict[str, Any]) -> dict[str, str]:
    """Each query variable with every value selected, as Grafana formats a multi-value."""
    values: dict[str, str] = {}
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        found = label_values(prom, substitute(v["definition"], values))
        assert found, f"variable {v['name']} has no values: {v['definition']}"
        values[v["name"]] = "|".join(grafana_regex_escape(x) for x in found)
    return values


def post_drift(agent_url: str) -> None:
    """A reference and a drifted window for one model, through the drift API."""
    rng = random.Random(7)
    reference = [
        {"amount": rng.lognormvariate(3, 0.5), "country": rng.choice("ab")} for _ in range(300)
    ]
    current = [
        {"amount": rng.lognormvariate(4, 0.5), "country": rng.choice("abc")} for _ in range(200)
    ]
    for method, path, body in (
        ("PUT", "reference", {"rows": reference}),
        ("POST", "observations", {"rows": current}),
    ):
        req = urllib.request.Request(
            f"{agent_url}/api/v1/models/mlp-8x4096/{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status in (200, 201)


def returns_series(prom: PrometheusServer, target: dict[str, Any], expr: str) -> bool:
    if target.get("instant"):
        return bool(prometheus_get(prom, "/api/v1/query", query=expr)["result"])
    end = time.time()
    data = prometheus_get(
        prom, "/api/v1/query_range", query=expr, start=str(end - 120), end=str(end), step="1"
    )
    return bool(data["result"])


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_every_panel_query_returns_series(tmp_path):
    """A real Prometheus scrapes an agent replaying the H100 neighbour recording with its
    model server's frames, its processes in pods and a drift window; every panel's every
    query, with the template variables substituted, returns at least one series."""
    dash = load()
    with Cluster(tmp_path, [neighbour_node()]) as cluster:
        post_drift(cluster.nodes["gpu-node-a"].agent.url)
        prom = cluster.prom
        prom.wait_for("nodeml_gpu_info")
        values = variable_values(prom, dash)
        assert values["instance"] == "gpu-node-a"
        assert values["gpu"] == "0"
        pending = {(title, t["refId"]): t for title, t in queries(dash)}
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for key, t in list(pending.items()):
                # $__rate_interval: 4 x the 1 s scrape interval, as Grafana computes it.
                if returns_series(prom, t, substitute(t["expr"], values, "4s")):
                    del pending[key]
            time.sleep(1)
        assert not pending, (
            "queries without a series: "
            + "; ".join(f"{title} [{ref}]: {t['expr']}" for (title, ref), t in pending.items())
            + "\n"
            + cluster.logs()
        )
