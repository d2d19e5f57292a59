"""A real gRPC pod-resources server on a unix socket, serving a scenario (a fake kubelet).

Scenarios are List answers in protobuf's JSON mapping (what `grpcurl` prints for a real
kubelet), under tests/fixtures/podresources/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.podresources import api_pb2, api_pb2_grpc
from tests.paths import FIXTURES

SCENARIOS = FIXTURES / "podresources"


def load_scenario(name: str) -> dict[str, Any]:
    return json.loads((SCENARIOS / f"{name}.json").read_text())


class _Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    async def List(self, request, context):  # noqa: N802 - the gRPC method name
        self.kubelet.calls += 1
        return json_format.ParseDict(self.kubelet.scenario, api_pb2.ListPodResourcesResponse())


class FakeKubelet:
    """Serves `scenario` (mutable) on `socket_path`; stop() removes the socket, as the kubelet."""

    def __init__(self, socket_path: Path, scenario: dict[str, Any]) -> None:
        self.socket_path = socket_path
        self.scenario = scenario
        self.calls = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        server = grpc.aio.server()
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Lister(self), server)
        server.add_insecure_port(f"unix:{self.socket_path}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None


U0 = "GPU-8f2c0a4e-1b2c-3d4e-5f60-718293a4b5c6"
U1 = "GPU-3b7a1c2d-4e5f-6071-8293-a4b5c6d7e8f9"


def samples(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def series(text, name):
    """The label sets of `name`'s series, in a stable order (compare with `ordered`)."""
    return ordered([dict(labels) for (n, labels) in samples(text) if n == name])


def allocation(gpu, uuid, namespace, pod, container):
    """The labels of one nodeml_gpu_allocation_info series."""
    return {"gpu": gpu, "uuid": uuid, "namespace": namespace, "pod": pod, "container": container}


def ordered(label_sets):
    return sorted(label_sets, key=lambda labels: sorted(labels.items()))
