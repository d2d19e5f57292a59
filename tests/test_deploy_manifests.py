"""Kubernetes manifests: kubernetes-validate --strict for 1.28..1.37, and what issue 7 asks."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deployfiles import (
    agent_help,
    assert_valid_strict,
    docs,
    run_kubernetes_validate,
)
from tools import deploy_build
from tools.deploy_build import (
    DASHBOARD_CONFIGMAP,
    GENERATED_MANIFESTS,
    PROMETHEUS_RULE,
    dashboard_configmap_document,
    manifest_text,
)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DAEMONSET = ROOT / "daemonset.yaml"
MANIFESTS = [
    DAEMONSET,
    DEPLOY / "servicemonitor.yaml",
    DEPLOY / "podmonitor.yaml",
    PROMETHEUS_RULE,
    DASHBOARD_CONFIGMAP,
]
KUBE_VERSIONS = [f"1.{minor}.0" for minor in range(28, 38)]


def kind(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (obj,) = [o for o in objs if o["kind"] == name]
    return obj


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return docs(DAEMONSET)


@pytest.fixture(scope="module")
def pod(objects) -> dict[str, Any]:
    return kind(objects, "DaemonSet")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod) -> dict[str, Any]:
    (c,) = pod["containers"]
    return c


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_kubernetes_validate_strict(version):
    assert_valid_strict(version, MANIFESTS)


def test_strict_validation_catches_a_typo(tmp_path):
    """The check above can fail: a misspelt hostPID is rejected in strict mode."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(DAEMONSET.read_text().replace("hostPID: true", "hostPid: true"))
    rc, out = run_kubernetes_validate("1.30.0", [bad])
    assert rc != 0
    assert "hostPid" in out


def test_rbac_is_read_only_pods(objects):
    role = kind(objects, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    binding = kind(objects, "ClusterRoleBinding")
    sa = kind(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"],
        }
    ]


def service(objects, name: str) -> dict[str, Any]:
    (svc,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == name]
    return svc


def test_drift_api_service_stays_on_the_node(objects):
    svc = service(objects, "node-exporter-ml-api")
    assert svc["spec"]["internalTrafficPolicy"] == "Local"
    labels = kind(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    # Not selected by the ServiceMonitor: the agents would be scraped twice.
    sm = docs(DEPLOY / "servicemonitor.yaml")[0]
    assert not sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()


def test_headless_service_has_named_metrics_port(objects, container):
    svc = service(objects, "node-exporter-ml")
    assert svc["spec"]["clusterIP"] == "None"
    (port,) = svc["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["targetPort"] == "metrics"
    assert {"name": "metrics", "containerPort": 9847, "protocol": "TCP"} in container["ports"]
    labels = kind(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()


def test_daemonset_targets_gpu_nodes(objects, pod):
    ds = kind(objects, "DaemonSet")
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    exprs = [e for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]]
    assert {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]} in exprs
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["priorityClassName"] == "system-node-critical"
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_hostpid_with_its_reason(pod):
    assert pod["hostPID"] is True
    assert pod.get("hostNetwork") is not True
    text = DAEMONSET.read_text()
    comment = text[: text.index("hostPID: true")].rsplit("\n\n", 1)[-1]
    assert "hostPID" in comment
    assert "/proc/<pid>/cgroup" in comment


def test_nvml_through_the_nvidia_runtime(pod, container):
    assert pod["runtimeClassName"] == "nvidia"
    env = {e["name"]: e for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # The agent does not take a GPU away from the workloads it watches.
    for section in ("requests", "limits"):
        assert not any(k.startswith("nvidia.com/") for k in container["resources"][section])


def test_locked_down_container(pod, container):
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged", False) is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in sc["capabilities"]
    seccomp = sc.get("seccompProfile") or pod["securityContext"]["seccompProfile"]
    assert seccomp == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_volumes_cgroupfs_read_only_and_state(pod, container):
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    args = container["args"]
    cgroup = next(
        n for n, v in volumes.items() if v.get("hostPath", {}).get("path") == "/sys/fs/cgroup"
    )
    assert mounts[cgroup]["readOnly"] is True
    assert f"--path.cgroupfs={mounts[cgroup]['mountPath']}" in args
    state_arg = next(a for a in args if a.startswith("--state.dir="))
    state_mount = next(m for m in mounts.values() if m["mountPath"] == state_arg.split("=", 1)[1])
    assert not state_mount.get("readOnly", False)
    # Every hostPath except the state is read-only.
    for name, vol in volumes.items():
        if "hostPath" in vol:
            assert mounts[name].get("readOnly") is True, name


def test_probes_and_resources(container):
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    res = container["resources"]
    for section in ("requests", "limits"):
        assert set(res[section]) == {"cpu", "memory"}, section
    text = DAEMONSET.read_text()
    block = text[: text.index("\n          resources:\n")].rsplit("ports:", 1)[-1]
    assert "measure" in block.lower(), "say what the requests and limits are based on"


def test_drift_api_is_guarded_and_uploads_fit_the_memory_limit(objects, pod, container):
    from node_exporter_ml.config import parse_config_file
    from tests.helpers import flat

    args = dict(a.split("=", 1) for a in container["args"] if "=" in a)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    token_dir = args["--drift.token-file"].rsplit("/", 1)[0]
    assert volumes[mounts[token_dir]]["secret"]["secretName"] == "node-exporter-ml-drift-token"
    config_dir = args["--config.file"].rsplit("/", 1)[0]
    config_map = volumes[mounts[config_dir]]["configMap"]["name"]
    cm = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == config_map
    )
    parsed = flat(parse_config_file(cm["data"]["config.yaml"], "daemonset.yaml ConfigMap"))
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    # Agent + drift workers peak at about 240 MiB + 4x the body (bench/drift_memory.py);
    # the cap keeps that under 80% of the limit (daemonset.yaml).
    assert parsed.drift_max_body_bytes * 4 + 240 * 2**20 <= 0.8 * int(limit[:-2]) * 2**20


def test_args_are_flags_the_agent_has(container):
    help_text = agent_help()
    for arg in container["args"]:
        flag = arg.split("=", 1)[0]
        assert re.search(rf"(^|[\s\[|]){re.escape(flag)}([\s\]=|]|$)", help_text, re.M), arg


def test_image_matches_the_package_version(container):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"].endswith(f":{version}")
    assert container["image"] in (ROOT / "Containerfile").read_text()


def test_monitors_find_the_agent(objects, pod, container):
    """What kube-linter's dangling-servicemonitor checks: selectors and port names match."""
    svc = service(objects, "node-exporter-ml")
    ns = kind(objects, "Namespace")["metadata"]["name"]
    pod_labels = kind(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    sm = docs(DEPLOY / "servicemonitor.yaml")[0]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [ns]
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    pm = docs(DEPLOY / "podmonitor.yaml")[0]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["spec"]["namespaceSelector"]["matchNames"] == [ns]
    container_ports = {p["name"] for p in container["ports"]}
    for monitor, endpoints, ports in (
        (sm, sm["spec"]["endpoints"], port_names),
        (pm, pm["spec"]["podMetricsEndpoints"], container_ports),
    ):
        assert monitor["metadata"]["labels"].get("release"), "kube-prometheus-stack selects by it"
        for ep in endpoints:
            assert ep["port"] in ports
            assert ep["path"] == "/metrics"
            # The agent's own workload labels must survive: the target's pod/namespace go.
            drops = [r for r in ep["relabelings"] if r.get("action") == "labeldrop"]
            assert drops
            assert all(re.fullmatch(drops[0]["regex"], label) for label in ("namespace", "pod"))


@pytest.mark.parametrize("path", list(GENERATED_MANIFESTS), ids=lambda p: p.name)
def test_generated_manifests_match_their_sources(path):
    text = manifest_text(path)
    assert path.read_text() == text, f"{path.name} is stale: run python -m tools.deploy_build"


def test_dashboard_configmap_fits_kubectl_apply():
    # kubectl apply stores the object in an annotation limited to 256 KiB.
    assert len(json.dumps(dashboard_configmap_document())) < 256 * 1024


def test_deploy_build_check_names_a_stale_file_and_the_build_rewrites_it(
    tmp_path, monkeypatch, capsys
):
    made = tmp_path / "made.yaml"
    made.write_text("old\n")
    monkeypatch.setattr(deploy_build, "ROOT", tmp_path)
    monkeypatch.setattr(deploy_build, "builders", lambda: {made: lambda: b"new\n"})
    assert deploy_build.main(["--check"]) == 1
    assert "stale: made.yaml" in capsys.readouterr().err
    assert made.read_text() == "old\n"
    assert deploy_build.main([]) == 0
    assert made.read_text() == "new\n"
    assert deploy_build.main(["--check"]) == 0
