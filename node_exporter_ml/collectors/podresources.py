"""The podresources collector: which pod each GPU is allocated to, from the kubelet."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.core import Metric

from node_exporter_ml.collectors.base import AsyncCollector, CollectContext, NoDataError
from node_exporter_ml.options import Section, flag
from node_exporter_ml.podresources.client import PodResourcesClient
from node_exporter_ml.podresources.devices import PODRESOURCES, PodResourcesData
from node_exporter_ml.podresources.join import AllocationSeries, UnallocatedUse, join_allocations
from node_exporter_ml.registry import register_collector
from node_exporter_ml.series import Series, table_families
from node_exporter_ml.snapshot import NVML, Snapshot

# Poll at the sampler's pace, but not faster than this (the kubelet walks every pod).
MIN_POLL_SECONDS = 1.0
DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"


@dataclass(frozen=True, slots=True)
class PodResourcesOptions:
    """The podresources collector's flag."""

    socket: str = flag(
        "--kube.pod-resources-socket",
        DEFAULT_POD_RESOURCES_SOCKET,
        metavar="PATH",
        help="the kubelet's pod-resources gRPC socket (which pod holds which GPU)",
    )


PODRESOURCES_OPTIONS: Section[PodResourcesOptions] = Section("podresources", PodResourcesOptions)


@register_collector(
    "podresources",
    produces=PODRESOURCES,
    reads={NVML: "GPU indices of allocations, unallocated GPU use"},
    options=PODRESOURCES_OPTIONS,
)
class PodResourcesCollector(AsyncCollector[PodResourcesData]):
    """GPU allocations per pod, from the kubelet pod-resources API (List, gRPC on a unix socket).

    Reads `--kube.pod-resources-socket` in a background task (never on the scrape path);
    joins the allocations with the nvml collector's GPUs and the pods of GPU processes.
    The kubectl-side equivalent is the pod's `nvidia.com/gpu` limit plus the device
    plugin's choice of GPU, which only the kubelet knows.

        nodeml_gpu_allocation_info{gpu="0",uuid="GPU-8f2c...",namespace="ml",pod="llm-0",container="server"} 1
        nodeml_gpu_unallocated_use{gpu="1",uuid="GPU-3b7a...",pid="48213"} 1
    """  # noqa: E501 - example output line

    def __init__(self, ctx: CollectContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        interval = max(MIN_POLL_SECONDS, cfg.interval)
        self.client = PodResourcesClient(
            cfg.section(PODRESOURCES_OPTIONS).socket,
            interval=interval,
            timeout=max(MIN_POLL_SECONDS, min(cfg.timeout, interval)),
        )

    async def start(self) -> None:
        """Start polling the kubelet."""
        await self.client.start()

    async def stop(self) -> None:
        """Stop polling and close the gRPC channel."""
        await self.client.stop()

    async def update(self, previous: Snapshot | None) -> PodResourcesData:
        """The last List the background task got (no gRPC here).

        Raises:
            NoDataError: the last List failed or the socket does not exist.
        """
        state = self.client.state
        if state.data is None:
            raise NoDataError(state.error or "no answer from the kubelet")
        return state.data

    def families(self, data: PodResourcesData, snapshot: Snapshot) -> Iterable[Metric]:
        """nodeml_gpu_allocation_info and nodeml_gpu_unallocated_use."""
        nvml = snapshot[NVML]
        joined = join_allocations(
            data.allocations, nvml.devices if nvml is not None else (), snapshot.workload_labels
        )
        yield from table_families(
            ALLOCATION_SERIES, [(series.labels(), series) for series in joined.allocations]
        )
        yield from table_families(UNALLOCATED_SERIES, [(u.labels(), u) for u in joined.unallocated])


# Rows: one GPU (or MIG device) allocated to a container, labelled as AllocationSeries.labels.
ALLOCATION_SERIES = (
    Series[AllocationSeries](
        "nodeml_gpu_allocation_info", "gauge",
        "1 for each GPU (or MIG device) the kubelet allocated to a container, busy or "
        "idle, from the pod-resources API (List); gpu is empty when NVML does not see it.",
        lambda _: 1.0),
)  # fmt: skip

# Rows: a process on a GPU not allocated to its pod, labelled gpu, uuid and pid.
UNALLOCATED_SERIES = (
    Series[UnallocatedUse](
        "nodeml_gpu_unallocated_use", "gauge",
        "1 for each process on a GPU whose workload is not a pod the GPU is allocated to "
        "(NVML compute processes joined with the kubelet pod-resources API).",
        lambda _: 1.0),
)  # fmt: skip
