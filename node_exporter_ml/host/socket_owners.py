"""Which process owns the listening socket of each endpoint: one cache for every collector.

The process collector (to count a serving target's owner as an inference process) and the
serving collector (to tie a target without an explicit owner to its process) ask the same
question of the same /proc. One `SocketOwners` answers both: each asker names the endpoints
it wants, and a scan (host/sockets.py's `find_listening_pids`, which walks every pid's fds)
covers the union of all askers' endpoints at once, so one tick scans /proc at most once and
the answers stay fresh for `ttl` seconds for every asker.

It is shared through the `CollectContext` the collectors are built with, not through the
snapshot: neither collector imports the other, the serving collector gets owners for the
targets only it knows (discovered ones) even with --no-collector.process, and nobody waits
a tick for another collector's answer.

Lookups block (they read /proc): call them from a worker thread, never from the loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from node_exporter_ml.host import ParseError
from node_exporter_ml.host.procfs import ProcFS
from node_exporter_ml.host.sockets import find_listening_pids

TTL_SECONDS = 60.0

Endpoint = tuple[str, int]
"""(host, port) of a target's URL, as ServingTarget.endpoint gives it."""


@dataclass(frozen=True, slots=True)
class _Owner:
    """The answer for one endpoint: the owning pid and its starttime, when it was found."""

    pid: int | None
    starttime: int | None
    found_at: float


class SocketOwners:
    """Socket owners of the endpoints its askers want, re-scanned every `ttl` seconds.

    An answer is also re-scanned early when its owner has exited (its pid is gone or was
    reused: the starttime differs). An endpoint nobody listens on is None until the next
    scan. Thread-safe: concurrent askers wait for one scan and share its result.
    """

    def __init__(
        self,
        procfs_root: str,
        *,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fs = ProcFS(procfs_root)
        self.ttl = ttl
        self.clock = clock
        self.scans = 0
        self._lock = threading.Lock()
        self._wanted: dict[str, frozenset[Endpoint]] = {}
        self._owners: dict[Endpoint, _Owner] = {}

    def lookup(self, asker: str, endpoints: Iterable[Endpoint]) -> list[int | None]:
        """The owner pid of each of `endpoints` (None: not found), in order (blocking).

        `endpoints` replaces what `asker` wanted before: the next scan covers them along
        with every other asker's.
        """
        asked = list(endpoints)
        with self._lock:
            self._wanted[asker] = frozenset(asked)
            now = self.clock()
            if any(self._stale(endpoint, now) for endpoint in asked):
                self._scan(now)
            return [self._owners[endpoint].pid for endpoint in asked]

    def _stale(self, endpoint: Endpoint, now: float) -> bool:
        owner = self._owners.get(endpoint)
        if owner is None or now - owner.found_at >= self.ttl:
            return True
        return owner.pid is not None and self._starttime(owner.pid) != owner.starttime

    def _starttime(self, pid: int) -> int | None:
        try:
            return self.fs.read_start(pid)[1]
        except (OSError, ParseError):
            return None

    def _scan(self, now: float) -> None:
        """Find the owners of every endpoint any asker wants; forget the others."""
        wanted = sorted(set().union(*self._wanted.values()))
        found = find_listening_pids(self.fs.root, wanted)
        self.scans += 1
        owners = {}
        for endpoint, pid in zip(wanted, found, strict=True):
            starttime = None if pid is None else self._starttime(pid)
            # An owner that exited since the scan found it owns nothing any more.
            owners[endpoint] = _Owner(pid if starttime is not None else None, starttime, now)
        self._owners = owners
