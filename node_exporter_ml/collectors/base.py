"""The collector contract: update() returns frozen data, families() turns data into metrics.

`Collector[D]` is generic in its data: `update()` returns a D and `families(data: D, ...)`
gets that same D back (the sampler only renders a collector's own successful data), so
no collector checks its data's type. A collector never builds global gauges: `families()`
makes fresh metric families from one tick's data, so the series of a process or pod that
went away vanish at the next tick.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from prometheus_client.core import Metric

from node_exporter_ml.host.socket_owners import SocketOwners

if TYPE_CHECKING:
    from node_exporter_ml.settings import Config
    from node_exporter_ml.snapshot import Snapshot

D = TypeVar("D")
"""The type of what a collector's update() returns (its data in the snapshot)."""


class StartupError(Exception):
    """A collector cannot start with this configuration (one line naming the flag or path)."""


class NoDataError(Exception):
    """The collector has nothing to report this tick (e.g. no NVIDIA driver); success is 0."""


class StaleDataError(Exception):
    """The source is failing, but the collector still holds its last good data.

    The sampler records success 0 and keeps `data` in the failed CollectorResult, so
    correlation can go on using it (e.g. pod metadata while the API server is down);
    `snapshot[KEY]` still returns None for it, `snapshot.last_known(KEY)` returns it.
    """

    def __init__(self, message: str, data: object) -> None:
        super().__init__(message)
        self.data = data


@dataclass(frozen=True, slots=True, init=False)
class CollectContext:
    """What a collector is built with: the agent's configuration and the host state shared.

    `sockets` answers who owns a listening socket for every collector built with this
    context (process and serving both ask), so /proc is scanned once for all of them; by
    default a new cache on --path.procfs. A reload builds a new context: owners found with
    the old configuration are not kept.
    """

    config: Config
    sockets: SocketOwners

    def __init__(self, config: Config, sockets: SocketOwners | None = None) -> None:
        """Build a context; a new SocketOwners on config.procfs unless one is given."""
        object.__setattr__(self, "config", config)
        object.__setattr__(
            self, "sockets", sockets if sockets is not None else SocketOwners(config.procfs)
        )


class Collector(ABC, Generic[D]):
    """Base of every collector; subclass BlockingCollector[D] or AsyncCollector[D]."""

    name: ClassVar[str] = ""
    blocking: ClassVar[bool] = True

    def __init__(self, ctx: CollectContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        """Start background work (watches, event threads); called once on the loop."""

    async def stop(self) -> None:
        """Stop background work and release resources; called once on the loop."""

    def reload(self, ctx: CollectContext) -> None:
        """Take a reloaded configuration (SIGHUP); the default keeps the new context."""
        self.ctx = ctx

    @abstractmethod
    def families(self, data: D, snapshot: Snapshot) -> Iterable[Metric]:
        """Metric families for this collector's data in `snapshot` (pure, no I/O)."""


AnyCollector = Collector[Any]
"""A collector of any data: what the sampler, the renderer and the registry hold."""


class BlockingCollector(Collector[D]):
    """A collector whose update does blocking I/O; it runs in its own worker thread."""

    blocking: ClassVar[bool] = True

    @abstractmethod
    def update(self, previous: Snapshot | None) -> D:
        """Read one sample; `previous` is the last published snapshot (or None)."""


class AsyncCollector(Collector[D]):
    """A collector whose update is a coroutine on the event loop (it must never block)."""

    blocking: ClassVar[bool] = False

    @abstractmethod
    async def update(self, previous: Snapshot | None) -> D:
        """Read one sample without blocking the loop."""
