"""The Helm chart, rendered by the Helm library itself (helm-python-sdk binds Helm's Go SDK).

Every rendering is validated with kubernetes-validate --strict; the default one must be the
workload daemonset.yaml describes, and the optional objects must agree with deploy/.
"""

from __future__ import annotations

import base64
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deployfiles import agent_help, assert_valid_strict, run_kubernetes_validate
from tests.helpers import flat

# Chart files that are copies of deploy/ files, so that the chart is packaged on its own.
from tools.deploy_build import CHART_COPIES as COPIES

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "node-exporter-ml"
DEPLOY = ROOT / "deploy"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest known.
KUBE_VERSIONS = ["1.28.0", "1.37.0"]

TOKEN = "3f9c0ad1e5b74c2a8d6e0f1b2c3d4e5f"
RENDERINGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "default": ("node-exporter-ml", "node-exporter-ml", {}),
    "operator objects, a created token, tuned": (
        "gpu-agents",
        "monitoring",
        {
            "image": {"repository": "registry.example/nem", "tag": "0.1.0-r1"},
            "imagePullSecrets": [{"name": "registry"}],
            "samplerInterval": "10s",
            "drift": {"token": {"value": TOKEN}, "maxBodyBytes": 8388608},
            "config": {
                "serving": {"targets": [{"url": "http://127.0.0.1:8000/metrics", "name": "vllm"}]},
                "drift": {"max_body_bytes": 1},
            },
            "extraArgs": ["--serving.window=2m", "--log.level=debug"],
            "extraEnv": [{"name": "TZ", "value": "UTC"}],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            "nodeSelector": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
            "tolerations": [{"operator": "Exists"}],
            "podLabels": {"team": "ml-platform"},
            "podAnnotations": {"example.com/owner": "ml-platform"},
            "serviceMonitor": {
                "enabled": True,
                "labels": {"release": "prom"},
                "metricRelabelings": [{"action": "drop", "regex": "nodeml_node_.*"}],
            },
            "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
            "dashboard": {"enabled": True, "annotations": {"grafana_folder": "GPU"}},
        },
    ),
    "root for podresources, a hostPath store, a PodMonitor": (
        "node-exporter-ml",
        "node-exporter-ml",
        {
            "podresources": {"enabled": True},
            "state": {"hostPath": "/var/lib/node-exporter-ml"},
            "podMonitor": {"enabled": True},
        },
    ),
    "pared down: no token, no RBAC, no API Service, CDI": (
        "nem",
        "default",
        {
            "drift": {"token": {"enabled": False}},
            "rbac": {"create": False},
            "serviceAccount": {"create": False, "name": "agents"},
            "apiService": {"enabled": False},
            "runtimeClassName": "",
            "priorityClassName": "",
            "fullnameOverride": "gpu-node-agent",
        },
    ),
}


def render(name: str, namespace: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {key: render(*args) for key, args in RENDERINGS.items()}


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (obj,) = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"].get("name"))]
    return obj


def pod_spec(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "DaemonSet")["spec"]["template"]["spec"]


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = pod_spec(objs)["containers"]
    return c


# --- Helm's own checks ------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(RENDERINGS))
def test_helm_lint_strict(key):
    _, namespace, values = RENDERINGS[key]
    report = helm.lint(CHART, values, strict=True, namespace=namespace, kube_version="v1.28.0")
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); 2 warnings and 3 errors fail.
    assert [m for m in report["messages"] if m["severity"] > 1] == []


def test_chart_follows_the_package_version():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["version"] == VERSION
    assert meta["appVersion"] == VERSION
    with helm.Chart.load(CHART) as chart:
        assert chart.name == "node-exporter-ml"
        assert chart.version == VERSION


# --- every rendering is valid Kubernetes ---------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_rendering_validates_strict(rendered, tmp_path, version):
    files = []
    for i, objs in enumerate(rendered.values()):
        files.append(tmp_path / f"rendering-{i}.yaml")
        files[-1].write_text(yaml.safe_dump_all(objs, sort_keys=False))
    assert_valid_strict(version, files)


def test_validation_catches_a_bad_value(tmp_path):
    """The check above can fail: a toleration with an unknown field is rejected."""
    objs = render("node-exporter-ml", "node-exporter-ml", {"tolerations": [{"keyy": "x"}]})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all(objs))
    rc, out = run_kubernetes_validate(KUBE_VERSIONS[0], [path])
    assert rc != 0
    assert "keyy" in out


# --- the default rendering is daemonset.yaml -----------------------------------------------------

HELM_LABELS = {"app.kubernetes.io/instance", "app.kubernetes.io/version"}
HELM_LABELS |= {"app.kubernetes.io/managed-by", "helm.sh/chart"}


def without_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with Helm's bookkeeping labels, and template annotations, taken out."""
    obj = json.loads(json.dumps(obj))
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
        meta.pop("annotations", None)
        labels = {k: v for k, v in meta.get("labels", {}).items() if k not in HELM_LABELS}
        if labels:
            meta["labels"] = labels
    for selector in (
        obj.get("spec", {}).get("selector", {}).get("matchLabels"),
        obj.get("spec", {}).get("selector") if obj["kind"] == "Service" else None,
    ):
        if selector:
            selector.pop("app.kubernetes.io/instance", None)
    if obj["kind"] == "ConfigMap":
        obj["data"] = {k: yaml.safe_load(v) for k, v in obj["data"].items()}
    return obj


def test_default_rendering_is_the_daemonset_yaml_workload(rendered):
    """Same objects, same pod, same args, volumes, probes and limits; only Helm's labels
    (app.kubernetes.io/instance also selects, so two releases never share pods) and the
    config checksum annotation are added, and the Namespace is left to `helm install
    --namespace` (its Pod Security labels: docs/deploy.md)."""
    shipped = [d for d in yaml.safe_load_all((ROOT / "daemonset.yaml").read_text()) if d]
    chart = rendered["default"]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, chart)) == sorted(key(o) for o in shipped if o["kind"] != "Namespace")
    for want in shipped:
        if want["kind"] == "Namespace":
            continue
        got = without_helm_labels(one(chart, want["kind"], want["metadata"]["name"]))
        assert got == without_helm_labels(want), want["metadata"]["name"]
    ds = one(chart, "DaemonSet")
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    for svc in (o for o in chart if o["kind"] == "Service"):
        assert svc["spec"]["selector"] == selector


def test_the_comparison_sees_a_difference(rendered):
    shipped = next(
        d
        for d in yaml.safe_load_all((ROOT / "daemonset.yaml").read_text())
        if d and d["kind"] == "DaemonSet"
    )
    changed = render("node-exporter-ml", "node-exporter-ml", {"samplerInterval": "6s"})
    assert without_helm_labels(one(changed, "DaemonSet")) != without_helm_labels(shipped)


# --- values reach the manifests ------------------------------------------------------------------


def test_tuned_values_reach_the_pod(rendered):
    from node_exporter_ml.config import parse_config_file

    objs = rendered["operator objects, a created token, tuned"]
    pod, c = pod_spec(objs), container(objs)
    assert c["image"] == "registry.example/nem:0.1.0-r1"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "p5.48xlarge"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    # Helm merges maps: the requests given, the default limits kept (`limits: null` drops them).
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "768Mi"},
    }
    assert {"name": "TZ", "value": "UTC"} in c["env"]
    assert c["args"][-2:] == ["--serving.window=2m", "--log.level=debug"]
    assert "--sampler.interval=10s" in c["args"]
    template = one(objs, "DaemonSet")["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "ml-platform"
    assert template["annotations"]["example.com/owner"] == "ml-platform"
    # The config file: the agent's own parser reads it; the chart's body cap wins.
    cm = one(objs, "ConfigMap", "gpu-agents-node-exporter-ml-config")
    parsed = flat(parse_config_file(cm["data"]["config.yaml"], "chart ConfigMap"))
    assert parsed.drift_max_body_bytes == 8388608
    assert [t.url for t in parsed.serving_targets] == ["http://127.0.0.1:8000/metrics"]
    # The token Secret the chart created is the one the pod mounts.
    secret = one(objs, "Secret")
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["drift-token"]["secret"]["secretName"] == secret["metadata"]["name"]


@pytest.mark.parametrize("key", list(RENDERINGS))
def test_args_are_flags_the_agent_has(rendered, key):
    help_text = agent_help()
    for arg in container(rendered[key])["args"]:
        flag = arg.split("=", 1)[0]
        assert re.search(rf"(^|[\s\[|]){re.escape(flag)}([\s\]=|]|$)", help_text, re.M), arg


def test_config_checksum_rolls_the_pods_on_a_config_change(rendered):
    def checksum(objs):
        return one(objs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum(rendered["default"]) == checksum(render(*RENDERINGS["default"]))
    assert checksum(rendered["default"]) != checksum(
        render("node-exporter-ml", "node-exporter-ml", {"drift": {"maxBodyBytes": 1024}})
    )


def test_podresources_runs_as_root_with_the_socket_read_only(rendered):
    objs = rendered["root for podresources, a hostPath store, a PodMonitor"]
    pod, c = pod_spec(objs), container(objs)
    sc = pod["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (0, 0, False)
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "--no-collector.podresources" not in c["args"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["pod-resources"] == {
        "name": "pod-resources",
        "mountPath": "/var/lib/kubelet/pod-resources",
        "readOnly": True,
    }
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/node-exporter-ml"
    for name, vol in volumes.items():
        if "hostPath" in vol and name != "state":
            assert mounts[name]["readOnly"] is True, name
    default = rendered["default"]
    assert pod_spec(default)["securityContext"]["runAsNonRoot"] is True
    assert "--no-collector.podresources" in container(default)["args"]


def test_pared_down_rendering(rendered):
    objs = rendered["pared down: no token, no RBAC, no API Service, CDI"]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ConfigMap", "DaemonSet", "Service"]
    pod, c = pod_spec(objs), container(objs)
    assert pod["serviceAccountName"] == "agents"
    assert "runtimeClassName" not in pod
    assert "priorityClassName" not in pod
    assert not [a for a in c["args"] if a.startswith("--drift.token-file")]
    assert "drift-token" not in {v["name"] for v in pod["volumes"]}
    assert one(objs, "DaemonSet")["metadata"]["name"] == "gpu-node-agent"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"state": {"hostPath": "/var/lib/nem"}}, "state.hostPath needs root"),
        (
            {"drift": {"token": {"value": "x", "existingSecret": "mine"}}},
            "set value (the chart creates the Secret) or existingSecret, not both",
        ),
        ({"samplerInterval": 5}, "samplerInterval"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"extraArgs": "--log.level=debug"}, "extraArgs"),
        ({"serviceMonitor": {"enable": True}}, "additional properties 'enable' not allowed"),
    ],
    ids=[
        "hostPath as non-root",
        "token twice",
        "interval without unit",
        "pull policy",
        "args not a list",
        "misspelt key",
    ],
)
def test_bad_values_fail_with_a_clear_message(values, message):
    with pytest.raises((helm.HelmRenderError, helm.HelmValuesError)) as err:
        render("node-exporter-ml", "node-exporter-ml", values)
    assert message in str(err.value)


# --- the operator objects agree with deploy/ ------------------------------------------------------


def test_monitors_select_the_agents(rendered):
    for key, kind, ports_of in (
        ("operator objects, a created token, tuned", "ServiceMonitor", "service"),
        ("root for podresources, a hostPath store, a PodMonitor", "PodMonitor", "pod"),
    ):
        objs = rendered[key]
        monitor = one(objs, kind)
        ns = one(objs, "DaemonSet")["metadata"]["namespace"]
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [ns]
        assert monitor["metadata"]["labels"]["release"]
        if ports_of == "service":
            svc = one(objs, "Service", one(objs, "DaemonSet")["metadata"]["name"])
            target_labels = svc["metadata"]["labels"]
            ports = {p["name"] for p in svc["spec"]["ports"]}
            (endpoint,) = monitor["spec"]["endpoints"]
            api = next(o for o in objs if o["metadata"]["name"].endswith("-api"))
            sel = monitor["spec"]["selector"]["matchLabels"]
            assert not sel.items() <= api["metadata"]["labels"].items(), "scraped twice"
        else:
            target_labels = one(objs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
            ports = {p["name"] for p in container(objs)["ports"]}
            (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= target_labels.items()
        assert endpoint["port"] in ports
        # The same endpoint as deploy/'s monitor, plus the values' additions.
        shipped = yaml.safe_load((DEPLOY / f"{kind.lower()}.yaml").read_text())
        (want,) = shipped["spec"][
            "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
        ]
        extra = endpoint.pop("metricRelabelings", None)
        assert endpoint == want
        if kind == "ServiceMonitor":
            assert extra == [{"action": "drop", "regex": "nodeml_node_.*"}]


def test_prometheus_rule_and_dashboard_are_deploy_s(rendered):
    objs = rendered["operator objects, a created token, tuned"]
    rule = one(objs, "PrometheusRule")
    shipped = yaml.safe_load((DEPLOY / "prometheusrule.yaml").read_text())
    assert rule["spec"] == shipped["spec"]
    assert rule["metadata"]["labels"]["release"] == "prom"
    dashboard = one(objs, "ConfigMap", "gpu-agents-node-exporter-ml-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "GPU"}
    (text,) = dashboard["data"].values()
    assert json.loads(text) == json.loads(
        COPIES[CHART / "files" / "node-exporter-ml.json"].read_text()
    )
    assert len(json.dumps(dashboard)) < 256 * 1024  # kubectl apply's annotation limit


@pytest.mark.parametrize("copy", list(COPIES), ids=lambda p: p.name)
def test_chart_files_are_copies_of_deploy(copy):
    assert copy.read_bytes() == COPIES[copy].read_bytes(), (
        f"{copy.name}: python -m tools.deploy_build"
    )


def test_the_packaged_chart_renders_the_same(tmp_path):
    """`helm package` keeps files/ and the schema: the .tgz renders what the folder does."""
    archive = helm.package(CHART, destination=tmp_path)
    assert Path(archive).name == f"node-exporter-ml-{VERSION}.tgz"
    _, namespace, values = RENDERINGS["operator objects, a created token, tuned"]
    with helm.Chart.load(archive) as packed, helm.Chart.load(CHART) as folder:
        assert packed.render(values, name="a", namespace=namespace) == folder.render(
            values, name="a", namespace=namespace
        )
        assert packed.schema == folder.schema
        assert packed.schema is not None


def test_the_documented_helm_commands_render():
    """Every `helm install ... --set k=v` in the READMEs and docs/deploy.md passes the schema."""
    for doc in ("README.md", "docs/deploy.md", "charts/node-exporter-ml/README.md"):
        text = (ROOT / doc).read_text().replace("\\\n", " ")
        commands = [line for line in text.splitlines() if line.startswith("helm install ")]
        assert commands, doc
        for command in commands:
            sets = re.findall(r"--set (\S+)", command)
            assert sets, command
            values: dict[str, Any] = {}
            for expression in sets:
                concrete = re.sub(r"<[^>]*>", "example", expression)
                values = merge(values, helm.parse_set_string(concrete))
            objs = render("node-exporter-ml", "node-exporter-ml", values)
            assert container(objs)["image"].startswith("example/node-exporter-ml:")


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
