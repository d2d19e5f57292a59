"""XID critical errors: an NVML event set waited on in a thread of its own, and the counts.

The watcher counts every XID per GPU and remembers when each was last seen (the health
verdicts age them). Counts outlive NVML: when NVML goes away the thread ends, and the
collector starts a new one on the tick that initialises NVML again.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.nvml.binding import (
    DeviceLost,
    Handle,
    NvmlBinding,
    NVMLError,
    NvmlUnavailable,
)
from node_exporter_ml.nvml.health import WATCHED_XIDS
from node_exporter_ml.snapshot import XidCount

log = logging.getLogger(__name__)

XID_WAIT_MS = 500

XidKey = tuple[str, int]  # GPU uuid, XID


class XidWatcher:
    """Waits for XID events in a daemon thread while wanted; counts them per GPU and XID."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._once = OnceLogger(log)
        self._lock = threading.Lock()
        self._counts: Counter[XidKey] = Counter()
        self._seen: dict[XidKey, float] = {}  # since the GPU's last reset
        self._wanted = False
        self._thread: threading.Thread | None = None
        self._event_set: Any = None
        self._stop = threading.Event()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread waiting for events, None when none is."""
        return self._thread

    @property
    def waiting_to_start(self) -> bool:
        """Wanted, but no thread runs (NVML was not up, or it went away)."""
        return self._wanted and self._thread is None

    def want(self) -> None:
        """Watch from now on: `start` starts a thread (the agent started)."""
        self._wanted = True
        self._stop.clear()

    def unwant(self) -> None:
        """Stop watching: the thread ends within XID_WAIT_MS (the agent stops)."""
        self._wanted = False
        self._stop.set()

    def start(self, nvml: NvmlBinding, handles: Sequence[Handle]) -> None:
        """Start the thread on `handles` (every GPU NVML enumerates if none), when wanted.

        The caller holds the lock it initialises NVML under. A driver where no GPU supports
        XID events is not asked again.
        """
        if not self._wanted or self._thread is not None:
            return
        if not handles:
            try:
                handles = [h for i in range(nvml.device_count()) if (h := nvml.handle(i))]
            except (DeviceLost, NvmlUnavailable) as err:
                self._once.log(logging.WARNING, "xid", "XID events not watched: %s", err)
                return
        try:
            event_set = nvml.xid_event_set(handles)
        except (DeviceLost, NvmlUnavailable) as err:
            event_set = None
            self._once.log(logging.WARNING, "xid", "XID events not watched: %s", err)
        if event_set is None:
            self._wanted = False  # nothing supports them; do not retry every tick
            return
        self._event_set = event_set
        self._thread = threading.Thread(
            target=self._watch, args=(nvml, event_set), name="nodeml-nvml-xid", daemon=True
        )
        self._thread.start()

    def _watch(self, nvml: NvmlBinding, event_set: Any) -> None:
        while not self._stop.is_set():
            try:
                event = nvml.wait_xid(event_set, XID_WAIT_MS)
            except NvmlUnavailable as err:
                # NVML went away: end; the tick that re-initialises NVML starts a new watcher.
                self._once.log(logging.WARNING, "xid:wait", "XID watch stopped: %s", err)
                self._thread = None
                return
            except (DeviceLost, NVMLError) as err:
                self._once.log(logging.WARNING, "xid:wait", "waiting for XID events: %s", err)
                self._stop.wait(1.0)
                continue
            if event is not None:
                self._once.log(
                    logging.WARNING, f"xid:{event.uuid}:{event.xid}",
                    "GPU %s raised XID %d", event.uuid, event.xid,
                )  # fmt: skip
                with self._lock:
                    self._counts[(event.uuid or "", event.xid)] += 1
                    self._seen[(event.uuid or "", event.xid)] = self._clock()

    def close(self, nvml: NvmlBinding | None) -> None:
        """Join the thread (after `unwant`) and free the event set through `nvml` if it is up."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=XID_WAIT_MS / 1000 * 4)
        if nvml is not None:
            if self._event_set is not None:
                nvml.free_event_set(self._event_set)
            self._event_set = None

    def counts(self) -> Counter[XidKey]:
        """Every XID counted since the agent started, per GPU uuid and XID."""
        with self._lock:
            return Counter(self._counts)

    def ages(self, uuid: str, now: float) -> dict[int, float]:
        """Seconds since GPU `uuid` last raised each XID (since its last reset)."""
        with self._lock:
            return {x: now - t for (u, x), t in self._seen.items() if u == uuid}

    def reset(self, uuid: str) -> None:
        """GPU `uuid` came back from a reset (or off the bus): its XIDs no longer stand."""
        with self._lock:
            for key in [k for k in self._seen if k[0] == uuid]:
                del self._seen[key]


def xid_counts(
    counts: Mapping[XidKey, int], index_of: Mapping[str, int], uuids: Iterable[str]
) -> tuple[XidCount, ...]:
    """`counts` (every XID counted so far), and a 0 for each watched XID of each of `uuids`.

    Counters that exist from the start make `increase()` see the first event
    (dcgm-exporter#646: a series born at 1 reads as no increase). A GPU `index_of` does not
    know gets index -1.
    """
    out: Counter[XidKey] = Counter({(u, xid): 0 for u in uuids if u for xid in WATCHED_XIDS})
    out.update(counts)
    return tuple(XidCount(index_of.get(u, -1), u, xid, n) for (u, xid), n in sorted(out.items()))
