"""What both pod sources share: authenticated GETs, TLS, health, and the retry loop.

A source runs in the background (`run()` until cancelled) and writes what it fetches into
its PodStore; subclasses (kube/apiserver.py, kube/kubelet.py) say what one round is. The
bearer token is re-read for every request (projected service-account tokens rotate).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar, Required, TypedDict

import aiohttp

from node_exporter_ml.kube.pods import KubeData, PodList, PodMeta, parse_pod_list
from node_exporter_ml.kube.store import PodStore
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.options import ConfigError

log = logging.getLogger("node_exporter_ml.kube")  # the package's: lines keep their logger name


class GoneError(Exception):
    """The watch's resourceVersion is too old (HTTP 410 / ERROR 410): list again."""


def _read_optional(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    if ca_file and os.path.isfile(ca_file):
        return ssl.create_default_context(cafile=ca_file)
    return ssl.create_default_context()


async def read_pod_list(resp: aiohttp.ClientResponse) -> PodList:
    """Read a pod list and decode it off the loop (a node's full pod specs run to megabytes).

    Raises:
        ValueError: the body is not JSON, or not a pod list (KubeFormatError).
    """
    body = await resp.read()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: parse_pod_list(json.loads(body)))


class SourceOptions(TypedDict, total=False):
    """What every source is built with (the keywords of PodSource.__init__)."""

    url: Required[str]
    node_name: Required[str | None]
    token_file: str | None
    ca_file: str | None
    token: str | None
    tls: Callable[[], ssl.SSLContext] | None
    backoff: tuple[float, float]


class PodSource(ABC):
    """Keeps a PodStore of one node's pods current, in the background.

    A failing round (unreachable, an HTTP error, an answer not in the API's shape) is
    retried with exponential backoff while the last known pods stay in the store.
    """

    kind: ClassVar[str]
    """Where pods come from, as KubeData.source says it: apiserver or kubelet."""

    read_timeout: float = 330.0
    """Seconds a response may go without a byte before it is abandoned."""

    def __init__(
        self,
        *,
        url: str,
        node_name: str | None,
        token_file: str | None = None,
        ca_file: str | None = None,
        token: str | None = None,
        tls: Callable[[], ssl.SSLContext] | None = None,
        backoff: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.url = url.rstrip("/")
        self.node_name = node_name
        self.token_file = token_file
        self.ca_file = ca_file
        self.token = token  # a kubeconfig's inline token, used when token_file gives none
        self.tls = tls or functools.partial(_ssl_context, ca_file)
        self.backoff = backoff
        self.store = PodStore(node_name=node_name, source=self.kind)
        self.healthy = False
        self.last_error: str | None = "not synced yet"
        self.lists = 0
        self._once = OnceLogger(log)
        self._ssl: ssl.SSLContext | None = None

    @property
    def source(self) -> str:
        """Where pods come from: kubelet or apiserver."""
        return self.kind

    @property
    def pods(self) -> Mapping[str, PodMeta]:
        """The last known pods by UID."""
        return self.store.pods

    @property
    def synced_at(self) -> float | None:
        """When the pods last changed (None: never listed)."""
        return self.store.synced_at

    def data(self) -> KubeData:
        """The current pods as KubeData (built anew only when something changed)."""
        return self.store.data()

    def _set_healthy(self) -> None:
        if not self.healthy and self._once.forget("kube-down"):
            log.info("kube: %s reachable again", self.kind)
        self.healthy, self.last_error = True, None

    def _set_failed(self, err: BaseException | str) -> None:
        msg = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
        self.healthy, self.last_error = False, msg
        self._once.log(
            logging.WARNING,
            "kube-down",
            "kube: %s unavailable: %s (keeping %d known pods, retrying)",
            self.kind,
            msg,
            len(self.pods),
        )

    async def _headers(self) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        token = await loop.run_in_executor(None, _read_optional, self.token_file) or self.token
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _get(self, session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
        """GET `url` with the token; a response to read, or an error for any status but 200.

        Raises:
            GoneError: 410 (an expired resourceVersion).
            aiohttp.ClientResponseError: any other status but 200.
        """
        resp = await session.get(url, headers=await self._headers(), ssl=self._ssl or True)
        if resp.status == 410:
            resp.release()
            raise GoneError()
        if resp.status != 200:
            text = (await resp.text())[:200]
            resp.release()
            raise aiohttp.ClientResponseError(
                resp.request_info, (), status=resp.status, message=text.strip()
            )
        return resp

    async def run(self) -> None:
        """Run until cancelled, keeping the store current."""
        loop = asyncio.get_running_loop()
        try:
            self._ssl = await loop.run_in_executor(None, self.tls)
        except (ConfigError, ssl.SSLError, OSError) as err:  # a kubeconfig's files changed
            self._set_failed(err)
            return
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=self.read_timeout)
        delay = self.backoff[0]
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    delay = await self.round(session, delay)
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
                    # ValueError: not JSON, or not the shape of a PodList / watch event.
                    self._set_failed(err)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff[1])

    @abstractmethod
    async def round(self, session: aiohttp.ClientSession, delay: float) -> float:
        """Fetch once into the store (and wait as the source paces itself).

        `delay` is the current backoff; returns the next one (the first, after success).
        """
