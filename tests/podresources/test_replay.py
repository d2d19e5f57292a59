"""Allocations joined with a real NVML replay: an idle allocated GPU, a GPU used unallocated."""

from __future__ import annotations

import asyncio

from node_exporter_ml.agent import Agent
from node_exporter_ml.snapshot import NVML
from tests.helpers import REGISTRY, config
from tests.paths import FIXTURES
from tests.podresources.fakekubelet import U0, U1, allocation, ordered, series

REPLAY = FIXTURES / "nvml" / "allocations-idle-gpu.nvml.json"


# The pods of the replay's processes, as the kube attribution step would label them.
WORKLOADS = {
    415: {"namespace": "serving", "pod": "llm-0", "container": "server"},
    476: {"namespace": "research", "pod": "notebook", "container": "jupyter"},
}


def attribute(snapshot):
    return snapshot.replace(workloads=WORKLOADS)


async def test_replay_idle_allocated_gpu_and_unallocated_use(kubelet, sock, fast_polls):
    cfg = config(
        "nvml",
        "podresources",
        interval=0.05,
        nvml_replay=str(REPLAY),
        podresources_socket=str(sock),
    )
    agent = Agent(cfg, registry=REGISTRY, enrichers=[attribute], process_metrics=False)
    await agent.start()
    try:
        async with asyncio.timeout(10):
            while True:
                snapshot = await agent.sampler.tick()
                if snapshot.results["podresources"].success and agent.rendered is not None:
                    break
        text = agent.rendered.text.decode()
    finally:
        await agent.stop()

    nvml = snapshot[NVML]
    assert nvml is not None, snapshot.results["nvml"].error
    idle = next(d for d in nvml.devices if d.uuid == U1)
    assert idle.processes == ()  # nobody runs on GPU 1 ...
    assert series(text, "nodeml_gpu_allocation_info") == ordered(
        [
            # ... yet it shows the pod it is allocated to.
            allocation("1", U1, "research", "batch-7", "train"),
            allocation("0", U0, "serving", "llm-0", "server"),
        ]
    )
    # The neighbour's pod holds no GPU; the server's is the allocated one.
    assert series(text, "nodeml_gpu_unallocated_use") == [{"gpu": "0", "uuid": U0, "pid": "476"}]
