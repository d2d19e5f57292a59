"""The agent: collectors and enrichers from the registry, the sampler, and the rendered cache.

It names no collector: which collectors run comes from the flags, which correlation steps
run (and in which order) from the enrichers the collectors registered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Sequence

from node_exporter_ml.collectors.base import AnyCollector, CollectContext
from node_exporter_ml.config import Config, reload_config
from node_exporter_ml.exposition import Format, Rendered, Renderer
from node_exporter_ml.registry import (
    Registration,
    active_enrichers,
    check_enabled,
    load_collectors,
)
from node_exporter_ml.sampler import Enricher, Sampler
from node_exporter_ml.snapshot import Snapshot

log = logging.getLogger(__name__)

WANTED_TICKS = 3  # keep pre-rendering a format this many ticks after its last scrape
STALE_TICKS = 3
"""/healthz and /readyz fail once the served snapshot is this many tick lengths old."""


class Agent:
    """Owns the collectors, the sampler loop and the latest rendered exposition.

    `rendered` is replaced by one reference swap per tick; the /metrics handler only
    reads it, so the scrape path does no I/O and no collection.
    """

    def __init__(
        self,
        config: Config,
        *,
        registry: dict[str, Registration] | None = None,
        enrichers: Sequence[Enricher] | None = None,
        process_metrics: bool = True,
    ) -> None:
        self.config = config
        registry = load_collectors() if registry is None else registry
        self._ctx = ctx = CollectContext(config)
        self.collectors: list[AnyCollector] = [
            reg.factory(ctx) for name, reg in registry.items() if name in config.collectors
        ]
        if enrichers is None:
            steps = active_enrichers(registry, config.collectors)
            check_enabled(registry, config.collectors, steps)
            enrichers = [step.factory(config) for step in steps]
        else:  # the caller's own steps: what they read is not declared
            check_enabled(registry, config.collectors, ())
        self.renderer = Renderer(
            self.collectors,
            config.interval,
            process_metrics=process_metrics and not config.disable_exporter_metrics,
            policy=config.file.metrics,
        )
        self._render_executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="nodeml-render"
        )
        self.sampler = Sampler(
            self.collectors,
            interval=config.interval,
            timeout=config.timeout,
            enrichers=enrichers,
            publish=self._publish,
        )
        self.rendered: Rendered | None = None
        self._task: asyncio.Task[None] | None = None
        # Formats scraped recently (tick number of the last request): pre-rendered each tick.
        self._ticks = 0
        self._wanted: dict[Format, int] = {(False, False): 0}
        self._started_at: float | None = None
        self._rendered_at = 0.0

    @property
    def collector_names(self) -> list[str]:
        """The enabled collectors' names (what `collect[]` may ask for)."""
        return [c.name for c in self.collectors]

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot (None before the first tick)."""
        return self.sampler.latest

    async def _publish(self, snapshot: Snapshot) -> None:
        self._ticks += 1
        formats = [f for f, tick in self._wanted.items() if self._ticks - tick <= WANTED_TICKS]
        loop = asyncio.get_running_loop()
        self.rendered = await loop.run_in_executor(
            self._render_executor, self.renderer.render, snapshot, formats
        )
        self._rendered_at = time.monotonic()

    def staleness(self) -> str | None:
        """Why the served data is too old to be healthy, or None while it is fresh.

        Fresh: rendered within STALE_TICKS tick lengths (the interval, or the collector
        timeout when that is longer); before the first snapshot, counted from start().
        """
        limit = STALE_TICKS * max(self.config.interval, self.config.timeout)
        since = self._rendered_at if self.rendered is not None else self._started_at
        if since is None:
            return None
        age = time.monotonic() - since
        if age <= limit:
            return None
        what = "the newest snapshot is {:.0f}s old" if self.rendered else "no snapshot {:.0f}s in"
        return f"{what.format(age)} (limit {limit:g}s: {STALE_TICKS} ticks)"

    async def body(self, fmt: Format, only: frozenset[str] | None = None) -> bytes | None:
        """The latest exposition in `fmt`; formats it off the loop if no scrape asked yet.

        `only` (from `collect[]`) keeps those collectors' families and the agent's own.
        """
        rendered = self.rendered
        if rendered is None:
            return None
        if only is None:
            self._wanted[fmt] = self._ticks
        body = rendered.get(fmt, only)
        if body is None:
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(self._render_executor, rendered.ensure, fmt, only)
        return body

    async def start(self) -> None:
        """Start the collectors' background work and the sampler loop."""
        await self.sampler.start()
        self._started_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="nodeml-sampler")

    async def _run(self) -> None:
        try:
            await self.sampler.run()
        except Exception:  # CancelledError is not an Exception: a stop passes through
            log.exception("sampler loop crashed")  # never expected: per-collector guards
            raise

    async def stop(self) -> None:
        """Stop the sampler loop and the collectors."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.sampler.close()
        self._render_executor.shutdown(wait=False, cancel_futures=True)

    def reload(self) -> Config:
        """Re-read --config.file and hand the new configuration to every collector.

        Raises:
            ConfigError: the file is now invalid; the running configuration is kept.
        """
        new = reload_config(self.config)
        self.config = new
        # The socket owners stay: they depend on --path.procfs (a flag) and the endpoints
        # asked for, which lookups compare anyway; a new cache would rescan /proc for nothing.
        self._ctx = ctx = CollectContext(new, self._ctx.sockets)
        for c in self.collectors:
            c.reload(ctx)
        self.renderer.source.limiter.policy = new.file.metrics
        return new
