"""Pods from the kubelet: its /pods endpoint, polled.

For nodes where the agent may not watch the API server (RBAC `nodes/proxy` get, or
`nodes/pods` where the kubelet supports fine-grained authorization).
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar, Unpack

import aiohttp

from node_exporter_ml.kube.source import PodSource, SourceOptions, read_pod_list


class KubeletSource(PodSource):
    """This node's pods from `<kubelet>/pods`, read every `poll_interval` seconds."""

    kind: ClassVar[str] = "kubelet"

    def __init__(
        self,
        *,
        poll_interval: float = 15.0,
        **options: Unpack[SourceOptions],
    ) -> None:
        super().__init__(**options)
        self.poll_interval = poll_interval

    async def poll(self, session: aiohttp.ClientSession) -> None:
        """One read of the kubelet's /pods into the store."""
        resp = await self._get(session, f"{self.url}/pods")
        async with resp:
            page = await read_pod_list(resp)
        node = self.node_name
        pods = [p for p in page.pods if not node or p.node_name in (None, node)]
        self.store.replace(pods, time.time())
        self.lists += 1
        self._set_healthy()

    async def round(self, session: aiohttp.ClientSession, delay: float) -> float:
        """Poll once, then wait for the next poll."""
        await self.poll(session)
        await asyncio.sleep(self.poll_interval)
        return self.backoff[0]
