"""The kube collector: this node's pod metadata from the API server or kubelet, in the background.

It chooses the pod source the flags ask for (node_exporter_ml/kube/: the API server's
list+watch, or the kubelet's /pods) and publishes the source's store as KubeData.

Outside a cluster (no --kube.api-url, no KUBERNETES_SERVICE_HOST, no --kube.kubelet-url)
it stays enabled but idle: one INFO line at start, and `nodeml_collector_success{collector=
"kube"}` 0 ("not in a cluster"). While the API server is unreachable the last known pods
stay in use (labels keep working) and success is 0 until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.core import Metric

from node_exporter_ml.collectors.base import (
    AsyncCollector,
    CollectContext,
    NoDataError,
    StaleDataError,
)
from node_exporter_ml.kube.apiserver import ApiServerSource, in_cluster_api_url
from node_exporter_ml.kube.kubelet import KubeletSource
from node_exporter_ml.kube.pods import KUBE, KubeData, PodMeta, annotation_problem
from node_exporter_ml.kube.source import PodSource
from node_exporter_ml.kubeconfig import load_kubeconfig
from node_exporter_ml.options import (
    Section,
    YamlReader,
    existing_file,
    flag,
    http_url_flag,
    yaml_key,
)
from node_exporter_ml.registry import register_collector
from node_exporter_ml.series import Series, table_families
from node_exporter_ml.snapshot import Snapshot
from node_exporter_ml.tasks import cancel_task

log = logging.getLogger(__name__)

NOT_IN_CLUSTER = (
    "not in a cluster: no --kube.api-url, --kube.kubeconfig, --kube.kubelet-url or "
    "KUBERNETES_SERVICE_HOST"
)
_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
DEFAULT_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


def _service_account_file(name: str, default: str, what: str) -> str:
    """A file flag whose default is the service account's: only a path given must exist."""
    return flag(
        name,
        default,
        parsed_default=None,
        metavar="FILE",
        help=f"{what} (default: {default})",
        check=existing_file,
        resolve=lambda path: path or default,
    )


@dataclass(frozen=True, slots=True)
class KubeOptions:
    """The kube collector's flags and the config file's `kube:` keys."""

    api_url: str | None = flag(
        "--kube.api-url",
        None,
        metavar="URL",
        help="API server URL (default: --kube.kubeconfig's, else in-cluster from "
        "KUBERNETES_SERVICE_HOST)",
        check=http_url_flag,
    )
    kubeconfig: str | None = flag(
        "--kube.kubeconfig",
        None,
        metavar="FILE",
        help="kubeconfig to reach the API server outside a pod (client certificates or "
        "bearer tokens; exec plugins are refused)",
        check=existing_file,
    )
    token_file: str = _service_account_file(
        "--kube.token-file", DEFAULT_TOKEN_FILE, "API server bearer token"
    )
    ca_file: str = _service_account_file("--kube.ca-file", DEFAULT_CA_FILE, "API server CA bundle")
    node_name: str | None = flag(
        "--kube.node-name",
        None,
        metavar="NAME",
        help="this node's name (default: $NODE_NAME)",
        resolve=lambda name: name or os.environ.get("NODE_NAME") or None,
    )
    kubelet_url: str | None = flag(
        "--kube.kubelet-url",
        None,
        metavar="URL",
        help="read pods from the kubelet's /pods endpoint instead of the API server",
        check=http_url_flag,
    )
    pod_labels: tuple[str, ...] = yaml_key("pod_labels", (), YamlReader.strings)


KUBE_OPTIONS: Section[KubeOptions] = Section("kube", KubeOptions, file_key="kube")


def label_name(pod_label: str) -> str:
    """A pod label's key as a Prometheus label name (kube-state-metrics' `label_` form)."""
    return "label_" + _LABEL_CHARS.sub("_", pod_label)


def make_source(ctx: CollectContext) -> PodSource | None:
    """The pod source the flags ask for, or None outside a cluster."""
    cfg = ctx.config.section(KUBE_OPTIONS)
    if cfg.kubelet_url:
        return KubeletSource(
            url=cfg.kubelet_url,
            node_name=cfg.node_name,
            token_file=cfg.token_file,
            ca_file=cfg.ca_file,
            poll_interval=max(ctx.config.interval, 15.0),
        )
    if cfg.kubeconfig:
        # Outside a pod: server and credentials from the kubeconfig (ConfigError: exit 2);
        # the node is the kubelet's default name, this host's, unless given.
        kubeconfig = load_kubeconfig(cfg.kubeconfig)
        return ApiServerSource(
            url=cfg.api_url or kubeconfig.server,
            node_name=cfg.node_name or socket.gethostname().lower(),
            token_file=kubeconfig.token_file,
            token=kubeconfig.token,
            tls=kubeconfig.ssl_context,
        )
    api_url = cfg.api_url or in_cluster_api_url()
    if api_url is None:
        return None
    return ApiServerSource(
        url=api_url,
        node_name=cfg.node_name,
        token_file=cfg.token_file,
        ca_file=cfg.ca_file,
    )


@register_collector("kube", produces=KUBE, options=KUBE_OPTIONS)
class KubeCollector(AsyncCollector[KubeData]):
    """Pod metadata (namespace, name, containers, annotation targets) of this node's pods.

    API server: GET /api/v1/pods?fieldSelector=spec.nodeName=<node> then ?watch=1 (as
    `kubectl get pods --field-selector spec.nodeName=<node> -w`); or the kubelet's /pods.

        nodeml_kube_pod_info{namespace="ml",pod="vllm-0",uid="0e2d...",pod_ip="10.0.0.7"} 1
    """

    def __init__(self, ctx: CollectContext) -> None:
        super().__init__(ctx)
        self.source = make_source(ctx)
        self._task: asyncio.Task[None] | None = None
        self._problems: set[tuple[str, str]] = set()
        self._idle = "kube: not started"

    async def start(self) -> None:
        """Start listing and watching pods in the background (nothing outside a cluster)."""
        if self.source is None:
            log.info("kube: %s; pod metadata is off", NOT_IN_CLUSTER)
            return
        if isinstance(self.source, ApiServerSource) and not self.source.node_name:
            self._idle = "kube: no node name: set --kube.node-name or $NODE_NAME"
            log.error("%s to watch this node's pods", self._idle)
            return
        if self._task is None:
            self._task = asyncio.create_task(self.source.run(), name="nodeml-kube")

    async def stop(self) -> None:
        """Stop the background watch."""
        await cancel_task(self._task)
        self._task = None

    async def update(self, previous: Snapshot | None) -> KubeData:
        """The last known pods; success 0 (with the pods kept) while the source fails."""
        source = self.source
        if source is None:
            raise NoDataError(NOT_IN_CLUSTER)
        if self._task is None:
            raise NoDataError(self._idle)
        if self._task.done():
            raise NoDataError("kube: the pod watch stopped")
        if source.synced_at is None:
            raise NoDataError(f"kube: no pods listed yet ({source.last_error})")
        data = source.data()
        problems = {}
        for pod in data.pods.values():
            problem = annotation_problem(pod)
            if problem:
                problems[(pod.uid, problem)] = f"{pod.namespace}/{pod.name}"
        for key in problems.keys() - self._problems:  # each new problem logged once
            log.warning("kube: pod %s: %s", problems[key], key[1])
        self._problems = set(problems)
        if not source.healthy:
            raise StaleDataError(f"{source.source} unavailable: {source.last_error}", data)
        return data

    def families(self, data: KubeData, snapshot: Snapshot) -> Iterable[Metric]:
        """nodeml_kube_pod_info per pod on this node, and the number of pods."""
        allow = self.ctx.config.section(KUBE_OPTIONS).pod_labels
        pods = sorted(data.pods.values(), key=lambda p: (p.namespace, p.name))
        yield from table_families(POD_SERIES, [(_pod_labels(pod, allow), pod) for pod in pods])
        yield from table_families(COUNT_SERIES, [({}, data)])


def _pod_labels(pod: PodMeta, allow: Iterable[str]) -> dict[str, str]:
    labels = {
        "namespace": pod.namespace,
        "pod": pod.name,
        "uid": pod.uid,
        "pod_ip": pod.pod_ip or "",
    }
    labels.update({label_name(k): pod.labels.get(k, "") for k in allow})
    return labels


# Rows: one pod on this node, labelled namespace, pod, uid, pod_ip and its allow-listed labels.
POD_SERIES = (
    Series[PodMeta]("nodeml_kube_pod_info", "gauge",
                    "A pod on this node, from the Kubernetes API (pods list+watch or kubelet "
                    "/pods); allow-listed pod labels as label_<name>.",
                    lambda _: 1.0),
)  # fmt: skip

# One row: the tick's KubeData, no labels.
COUNT_SERIES = (
    Series[KubeData]("nodeml_kube_pods", "gauge",
                     "Pods on this node known from the Kubernetes API.",
                     lambda d: len(d.pods)),
)  # fmt: skip
