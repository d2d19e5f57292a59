"""A background poller of the kubelet pod-resources API over its unix socket (grpc.aio).

The poller calls `List` every few seconds in its own task and keeps the last outcome;
collectors read `state` and never wait on gRPC. When the socket goes away (a kubelet
restart deletes and recreates it) the poller backs off (doubling, up to `backoff_max`),
logs one line, builds a fresh channel on every retry (a gRPC channel in reconnect
backoff would otherwise wait up to two minutes) and logs one more when the kubelet
answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

# gRPC's C core prints INFO lines (GOAWAY on every kubelet restart) to stderr unless told
# otherwise; our own log says what matters. Must be set before grpc initialises.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc
import grpc.aio

from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.podresources import api_pb2, api_pb2_grpc
from node_exporter_ml.podresources.devices import (
    ContainerDevices,
    ContainerResources,
    PodResources,
    PodResourcesData,
    parse_allocations,
)
from node_exporter_ml.tasks import cancel_task

log = logging.getLogger(__name__)

# The kubelet's pod-resources server accepts messages up to 16 MiB; a busy node's List
# answer can pass gRPC's 4 MiB client default.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MISSING = "no such socket"


class PodResourcesError(Exception):
    """The kubelet's pod-resources API cannot be asked now; the message says why.

    `missing` is True when the socket path does not exist.
    """

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True, slots=True)
class PollState:
    """The outcome of the last List: data, or why there is none.

    `missing` is True when the socket path does not exist (not a Kubernetes node, or the
    kubelet is between stop and start).
    """

    data: PodResourcesData | None
    error: str | None = None
    missing: bool = False
    at: float = 0.0


def pods_from_response(response: api_pb2.ListPodResourcesResponse) -> tuple[PodResources, ...]:
    """Copy the parts of a List answer we use into plain frozen dataclasses."""
    return tuple(
        PodResources(
            namespace=pod.namespace,
            name=pod.name,
            containers=tuple(
                ContainerResources(
                    name=container.name,
                    devices=tuple(
                        ContainerDevices(d.resource_name, tuple(d.device_ids))
                        for d in container.devices
                    ),
                )
                for container in pod.containers
            ),
        )
        for pod in response.pod_resources
    )


def channel_target(socket_path: str) -> str:
    """The gRPC target for a unix socket path (`unix:/abs/path` or `unix:rel/path`)."""
    return f"unix:{socket_path}"


async def list_pod_resources(
    channel: grpc.aio.Channel, rpc_timeout: float
) -> api_pb2.ListPodResourcesResponse:
    """Call PodResourcesLister.List once on `channel`, with a gRPC deadline of `rpc_timeout`.

    Raises:
        grpc.aio.AioRpcError: the call failed (UNAVAILABLE when nobody listens).
    """
    # The generated stub is untyped; this is the one place that touches it.
    stub = api_pb2_grpc.PodResourcesListerStub(channel)  # type: ignore[no-untyped-call]
    response = await stub.List(api_pb2.ListPodResourcesRequest(), timeout=rpc_timeout)
    return cast(api_pb2.ListPodResourcesResponse, response)


_runtime_pinned = False


def _pin_grpc_runtime() -> None:
    """Keep gRPC's asyncio runtime up for the life of the process (call on the loop).

    grpc.aio counts its channels and servers; when the count drops to zero (the last
    channel closed or garbage-collected) it joins its poller thread, blocking the event
    loop. One extra reference, taken once, keeps that from ever happening mid-run: the
    workaround grpc/grpc#22365 recommends.
    """
    global _runtime_pinned  # one process-wide flag
    if not _runtime_pinned:
        grpc.aio.init_grpc_aio()
        _runtime_pinned = True


def _socket_status(path: str) -> str | None:
    """None when `path` is a unix socket, else why not (blocking: run in a thread)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return MISSING
    except OSError as err:
        return f"cannot stat: {err.strerror or err}"
    if not stat.S_ISSOCK(mode):
        return "not a unix socket"
    return None


class PodResourcesClient:
    """Polls `List` on the kubelet's pod-resources socket in a background task.

    Args:
        socket_path: the kubelet's socket (`--kube.pod-resources-socket`).
        interval: seconds between two calls while the kubelet answers.
        timeout: seconds one call may take.
        backoff_max: the longest wait between retries while it does not.
        clock: Unix time, for `PodResourcesData.listed_at`.
    """

    def __init__(
        self,
        socket_path: str,
        *,
        interval: float = 5.0,
        timeout: float = 5.0,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.socket_path = socket_path
        self.interval = interval
        self.timeout = timeout
        self.backoff_max = max(backoff_max, interval)
        self.clock = clock
        self.state = PollState(None, error="no answer from the kubelet yet")
        self.polls = 0
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._once = OnceLogger(log)
        self._step_failed_logged = False
        self._changed = asyncio.Event()

    async def start(self, first_wait: float = 1.0) -> None:
        """Start polling (idempotent); wait up to `first_wait` seconds for the first answer.

        A healthy kubelet answers in milliseconds, so the first snapshot already has the
        allocations; a hung one delays the agent's start by `first_wait` at most.
        """
        if self._task is None or self._task.done():
            polls = self.polls
            self._task = asyncio.create_task(self._run(), name="nodeml-podresources")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait_polled(polls), first_wait)

    async def stop(self) -> None:
        """Stop polling and close the channel."""
        await cancel_task(self._task)
        self._task = None
        await self._close_channel()

    async def wait_polled(self, after: int) -> PollState:
        """Wait until more than `after` polls have finished; the state then (for tests)."""
        while self.polls <= after:
            self._changed.clear()
            await self._changed.wait()
        return self.state

    async def poll_once(self) -> PollState:
        """Ask the kubelet once and record the outcome in `state` (the task's one step)."""
        try:
            data = await self._list()
        except PodResourcesError as err:
            self.state = PollState(None, error=str(err), missing=err.missing, at=self.clock())
        else:
            self.state = PollState(data, at=self.clock())
        self.polls += 1
        self._changed.set()
        return self.state

    async def _list(self) -> PodResourcesData:
        loop = asyncio.get_running_loop()
        problem = await loop.run_in_executor(None, _socket_status, self.socket_path)
        if problem is not None:
            await self._close_channel()
            raise PodResourcesError(f"{self.socket_path}: {problem}", missing=problem == MISSING)
        if self._channel is None:
            _pin_grpc_runtime()
            self._channel = grpc.aio.insecure_channel(
                channel_target(self.socket_path),
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
            )
        try:
            response = await list_pod_resources(self._channel, self.timeout)
        except grpc.aio.AioRpcError as err:
            # A fresh channel next time: this one may sit in gRPC's reconnect backoff.
            await self._close_channel()
            raise PodResourcesError(
                f"{self.socket_path}: List failed: {err.code().name}: {err.details()}"
            ) from None
        pods = pods_from_response(response)
        allocations, ignored = parse_allocations(pods)
        for raw in ignored:
            self._once.log(
                logging.DEBUG, f"id:{raw}", "ignoring GPU device id of unknown form: %s", raw
            )
        return PodResourcesData(
            allocations, listed_at=self.clock(), pods=len(pods), ignored=ignored
        )

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def _step(self) -> PollState:
        try:
            return await self.poll_once()
        except Exception as err:
            # The background task's guard, as the sampler's for collectors: a bug here must
            # not end the task silently and freeze the last answer. Traceback once.
            if not self._step_failed_logged:
                self._step_failed_logged = True
                log.exception("pod-resources poll failed")
            self.state = PollState(None, error=f"{type(err).__name__}: {err}", at=self.clock())
            self.polls += 1
            self._changed.set()
            return self.state

    async def _run(self) -> None:
        failures = 0
        while True:
            state = await self._step()
            if state.data is not None:
                if self._once.forget("outage"):
                    log.info("kubelet pod-resources API at %s answers again", self.socket_path)
                failures = 0
            else:
                failures += 1
                if state.missing and self.polls == 1:
                    self._once.log(
                        logging.INFO,
                        "outage",
                        "no kubelet pod-resources socket at %s (not a Kubernetes node?); "
                        "GPU allocation metrics are off until it appears",
                        self.socket_path,
                    )
                else:
                    self._once.log(
                        logging.WARNING,
                        "outage",
                        "kubelet pod-resources API unavailable (%s); retrying with backoff "
                        "up to %gs",
                        state.error,
                        self.backoff_max,
                    )
            # interval while it answers; interval, 2x, 4x ... up to backoff_max while not.
            delay = self.interval * 2 ** min(max(failures - 1, 0), 16)
            await asyncio.sleep(min(self.backoff_max, delay))
