"""Prometheus rules and scrape config: promtool check/test, a unit test for every alert."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deployfiles import PROM, promtool

RULES = PROM / "rules" / "node-exporter-ml.rules.yml"
ALERTS = PROM / "rules" / "node-exporter-ml.alerts.yml"
RULE_TESTS = PROM / "tests" / "node-exporter-ml.rules.test.yml"
ALERT_TESTS = PROM / "tests" / "node-exporter-ml.alerts.test.yml"

pytestmark = pytest.mark.integration


def rules(path: Path) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def test_check_rules():
    proc = promtool("check", "rules", str(RULES), str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 2, proc.stdout


@pytest.mark.parametrize("tests", [RULE_TESTS, ALERT_TESTS], ids=["recording", "alerts"])
def test_promtool_unit_tests(tests):
    proc = promtool("test", "rules", str(tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_can_fail(tmp_path):
    """A threshold change the tests do not expect makes `promtool test rules` fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / ALERTS.name).write_text(
        ALERTS.read_text().replace("nodeml_gpu_lost == 1", "nodeml_gpu_lost == 2")
    )
    shutil.copy(RULES, tmp_path / "rules" / RULES.name)
    shutil.copy(ALERT_TESTS, tmp_path / "tests" / ALERT_TESTS.name)
    proc = promtool("test", "rules", str(tmp_path / "tests" / ALERT_TESTS.name))
    assert proc.returncode != 0
    assert "NodeMLGpuLost" in proc.stdout + proc.stderr


def test_every_alert_has_a_firing_unit_test():
    tested = {
        case["alertname"]
        for t in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {r["alert"] for r in rules(ALERTS)}
    assert alerts, "no alerts found"
    assert alerts - tested == set(), "alerts without a unit test that fires them"
    assert tested - alerts == set(), "tests of alerts that do not exist"


def test_every_recording_rule_has_a_unit_test():
    tested = {
        case["expr"]
        for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in t.get("promql_expr_test", [])
        if case.get("exp_samples")
    }
    recorded = {r["record"] for r in rules(RULES)}
    assert recorded - tested == set()


def test_alerts_carry_severity_summary_description():
    for rule in rules(ALERTS):
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["alert"].startswith("NodeML"), rule["alert"]


def test_issue_alert_topics_are_covered():
    exprs = {r["alert"]: r["expr"] for r in rules(ALERTS)}
    joined = "\n".join(exprs.values())
    for metric in (
        "nodeml_gpu_xid_errors_total",
        "nodeml_gpu_lost",
        "nodeml_gpu_clock_event_active",
        "nodeml_snapshot_timestamp_seconds",
        "nodeml_collector_success",
        "nodeml_serving_latency_regression_ratio",
        "nodeml_dataset_drift_detected",
        "nodeml_drift_detected",
    ):
        assert metric in joined, metric
    regression = next(r for r in rules(ALERTS) if r["alert"] == "NodeMLLatencyRegression")
    assert "nodeml_serving_latency_cause" in regression["annotations"]["top_cause"]


def test_prometheus_config_checks(tmp_path):
    """`promtool check config` on the shipped prometheus.yml.

    Debian's Prometheus is built without Kubernetes service discovery, so the check runs on
    a copy where each kubernetes_sd_configs block is replaced by an empty static config; the
    rest (relabelling, rule files, file_sd, intervals) is checked as shipped.
    """
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    k8s_jobs = 0
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": []}]
            k8s_jobs += 1
    assert k8s_jobs == 1
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    proc = promtool("check", "config", str(copy), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 2 rule files found" in proc.stdout + proc.stderr
