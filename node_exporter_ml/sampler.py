"""The sampler loop: run collectors, build one Snapshot per tick, correlate, render, publish."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from node_exporter_ml.collectors.base import (
    AnyCollector,
    AsyncCollector,
    BlockingCollector,
    NoDataError,
    StaleDataError,
)
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.snapshot import CollectorResult, Snapshot

log = logging.getLogger(__name__)

Enricher = Callable[[Snapshot], Snapshot]
"""A correlation step: a function of the snapshot (pure, or with its own windowed state).

The agent builds them from the registry's `register_enricher` declarations, in run order.
"""


class Sampler:
    """Runs every collector once per tick, each under a timeout, none delaying the others.

    Blocking collectors each get a one-thread executor: a hung NVML call holds only its
    own thread, and while it is still running the next tick reports that collector as
    failed instead of queueing another call behind it.
    """

    def __init__(
        self,
        collectors: Sequence[AnyCollector],
        *,
        interval: float,
        timeout: float,
        enrichers: Sequence[Enricher] = (),
        publish: Callable[[Snapshot], Awaitable[None]] | None = None,
    ) -> None:
        self.collectors = list(collectors)
        self.interval = interval
        self.timeout = timeout
        self.enrichers = list(enrichers)
        self.publish = publish
        self.latest: Snapshot | None = None
        self._once = OnceLogger(log)
        self._executors = {
            c.name: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"nodeml-{c.name}")
            for c in self.collectors
            if isinstance(c, BlockingCollector)
        }
        self._enrich_executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="nodeml-correlate"
        )
        self._pending: dict[str, asyncio.Future[object]] = {}

    async def _run_one(self, c: AnyCollector, previous: Snapshot | None) -> CollectorResult:
        started = time.perf_counter()
        try:
            if isinstance(c, BlockingCollector):
                pending = self._pending.get(c.name)
                if pending is not None and not pending.done():
                    raise TimeoutError("previous update still running")
                loop = asyncio.get_running_loop()
                fut = loop.run_in_executor(self._executors[c.name], c.update, previous)
                self._pending[c.name] = fut
                data = await asyncio.wait_for(asyncio.shield(fut), self.timeout)
            elif isinstance(c, AsyncCollector):
                data = await asyncio.wait_for(c.update(previous), self.timeout)
            else:  # pragma: no cover - the registry only holds the two kinds
                raise TypeError(f"{type(c).__name__} is neither blocking nor async")
        except TimeoutError as err:
            msg = str(err) or f"timed out after {self.timeout:g}s"
            return self._failed(c.name, started, msg, logging.WARNING)
        except NoDataError as err:
            return self._failed(c.name, started, str(err), logging.DEBUG)
        except StaleDataError as err:
            failed = self._failed(c.name, started, str(err), logging.WARNING)
            return dataclasses.replace(failed, data=err.data)
        except Exception as err:  # noqa: BLE001 - the one place that catches everything
            return self._failed(c.name, started, f"{type(err).__name__}: {err}", logging.ERROR)
        if self._once.forget(f"fail:{c.name}"):
            log.info("collector %s succeeded again", c.name)
        return CollectorResult(c.name, True, time.perf_counter() - started, data)

    def _failed(self, name: str, started: float, msg: str, level: int) -> CollectorResult:
        self._once.log(level, f"fail:{name}", "collector %s failed: %s", name, msg)
        return CollectorResult(name, False, time.perf_counter() - started, None, msg)

    def _enrich(self, snapshot: Snapshot) -> Snapshot:
        for step in self.enrichers:
            try:
                snapshot = step(snapshot)
            except Exception:
                name = getattr(step, "__name__", type(step).__name__)
                if self._once.log(
                    logging.ERROR, f"enrich:{name}", "correlation step %s failed", name
                ):
                    log.exception("correlation step %s failed", name)
        return snapshot

    async def tick(self) -> Snapshot:
        """Collect once from every collector concurrently and publish the snapshot."""
        previous = self.latest
        results = await asyncio.gather(*(self._run_one(c, previous) for c in self.collectors))
        snapshot = Snapshot(taken_at=time.time(), results={r.name: r for r in results})
        loop = asyncio.get_running_loop()
        snapshot = await loop.run_in_executor(self._enrich_executor, self._enrich, snapshot)
        self.latest = snapshot
        if self.publish is not None:
            try:
                await self.publish(snapshot)
            except Exception:  # rendering failed: the previous exposition stays served
                if self._once.log(logging.ERROR, "publish", "publishing the snapshot failed"):
                    log.exception("publishing the snapshot failed")
            else:
                if self._once.forget("publish"):
                    log.info("publishing snapshots works again")
        return snapshot

    async def run(self) -> None:
        """Tick every `interval` seconds until cancelled; no failure of a tick ends the loop."""
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except Exception:  # every part is guarded; this is the guard of the guards
                if self._once.log(logging.ERROR, "tick", "sampler tick failed"):
                    log.exception("sampler tick failed")
            else:
                self._once.forget("tick")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def start(self) -> None:
        """Start every collector's background work."""
        for c in self.collectors:
            await c.start()

    async def close(self) -> None:
        """Stop collectors and worker threads (a hung thread is left to die with us)."""
        for c in self.collectors:
            try:
                await c.stop()
            except Exception:
                log.exception("collector %s failed to stop cleanly", c.name)
        for ex in (*self._executors.values(), self._enrich_executor):
            ex.shutdown(wait=False, cancel_futures=True)
