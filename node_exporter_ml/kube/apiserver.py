"""Pods from the API server: a paged list of this node's pods, then a watch from there.

The list and watch are scoped with `fieldSelector=spec.nodeName=<node>` (as `kubectl get
pods --field-selector spec.nodeName=<node> -w`). A watch that ends or breaks resumes from
the last resourceVersion seen; 410 Gone lists again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import ClassVar, Unpack
from urllib.parse import urlencode

import aiohttp

from node_exporter_ml.kube.pods import KubeFormatError, PodMeta, parse_watch_event
from node_exporter_ml.kube.source import GoneError, PodSource, SourceOptions, read_pod_list

log = logging.getLogger("node_exporter_ml.kube")

MAX_EVENT_BYTES = 32 * 1024 * 1024


def in_cluster_api_url(environ: Mapping[str, str] = os.environ) -> str | None:
    """https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, or None outside a cluster."""
    host = environ.get("KUBERNETES_SERVICE_HOST")
    if not host:
        return None
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class ApiServerSource(PodSource):
    """This node's pods by list (paged) then watch from the list's resourceVersion."""

    kind: ClassVar[str] = "apiserver"

    def __init__(
        self,
        *,
        watch_timeout: int = 300,
        page_size: int = 500,
        **options: Unpack[SourceOptions],
    ) -> None:
        super().__init__(**options)
        self.watch_timeout = watch_timeout
        self.read_timeout = watch_timeout + 30
        self.page_size = page_size
        self.watches = 0
        self._rv: str | None = None

    def _pods_url(self, **params: str) -> str:
        query = {"fieldSelector": f"spec.nodeName={self.node_name}"} if self.node_name else {}
        query.update(params)
        return f"{self.url}/api/v1/pods?{urlencode(query)}"

    async def list_pods(self, session: aiohttp.ClientSession) -> str:
        """List this node's pods (all pages) into the store; returns the resourceVersion."""
        pods: list[PodMeta] = []
        cont: str | None = None
        while True:
            params = {"limit": str(self.page_size)}
            if cont:
                params["continue"] = cont
            resp = await self._get(session, self._pods_url(**params))
            async with resp:
                page = await read_pod_list(resp)
            pods += page.pods
            cont = page.continue_token
            if not cont:
                break
        self.store.replace(pods, time.time())
        self.lists += 1
        self._set_healthy()
        return page.resource_version

    async def _lines(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        buffer = b""
        async for chunk in resp.content.iter_any():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
            if len(buffer) > MAX_EVENT_BYTES:
                raise KubeFormatError(f"watch event larger than {MAX_EVENT_BYTES} bytes")

    async def watch_pods(self, session: aiohttp.ClientSession, resource_version: str) -> str:
        """Follow the watch from `resource_version` until it ends; returns the last seen.

        Raises:
            GoneError: the resourceVersion expired (list again).
        """
        url = self._pods_url(
            watch="1",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(self.watch_timeout),
        )
        resp = await self._get(session, url)
        self.watches += 1
        self._set_healthy()
        async with resp:
            async for line in self._lines(resp):
                event = parse_watch_event(line)
                if event.type == "ERROR":
                    if event.code == 410:
                        raise GoneError()
                    raise KubeFormatError(f"watch error {event.code}: {event.message}")
                self.store.apply(event, time.time())
                if event.resource_version:
                    resource_version = event.resource_version
        return resource_version

    async def run(self) -> None:
        """Run until cancelled: list, then watch, resuming from the last resourceVersion."""
        self._rv = None
        await super().run()

    async def round(self, session: aiohttp.ClientSession, delay: float) -> float:
        """List if there is no resourceVersion to resume from, then follow one watch."""
        try:
            if self._rv is None:
                self._rv = await self.list_pods(session)
            started = time.monotonic()
            self._rv = await self.watch_pods(session, self._rv)
        except GoneError:
            log.debug("kube: resourceVersion %s expired, listing again", self._rv)
            self._rv = None
            return delay
        if time.monotonic() - started < 1.0:  # never spin on a server that hangs up
            await asyncio.sleep(self.backoff[0])
        return self.backoff[0]
