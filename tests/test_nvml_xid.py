"""The XID watcher over a scripted event source, and the counts it reports."""

from __future__ import annotations

import queue
import time

from node_exporter_ml.nvml.binding import NvmlUnavailable, XidEvent
from node_exporter_ml.nvml.health import WATCHED_XIDS
from node_exporter_ml.nvml.xid import XidWatcher, xid_counts


class ScriptedEvents:
    """wait_xid hands out queued events; a queued exception is raised instead."""

    def __init__(self) -> None:
        self.events: queue.Queue[XidEvent | Exception] = queue.Queue()
        self.freed: list[object] = []
        self.handles_seen: list[object] = []

    def device_count(self) -> int:
        return 2

    def handle(self, i: int) -> str:
        return f"h{i}"

    def xid_event_set(self, handles):
        self.handles_seen = list(handles)
        return "set"

    def wait_xid(self, event_set, timeout_ms):
        try:
            item = self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    def free_event_set(self, event_set):
        self.freed.append(event_set)


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_counts_have_a_zero_for_every_watched_xid_and_unknown_gpus_get_index_minus_one():
    counts = xid_counts(
        {("GPU-b", 79): 2, ("GPU-gone", 13): 1}, {"GPU-a": 0, "GPU-b": 1}, ["GPU-a", "GPU-b", ""]
    )
    by_key = {(c.uuid, c.xid): (c.index, c.count) for c in counts}
    assert by_key[("GPU-b", 79)] == (1, 2)
    assert by_key[("GPU-gone", 13)] == (-1, 1)
    assert {x for (u, x) in by_key if u == "GPU-a"} == set(WATCHED_XIDS)
    assert all(c.count == 0 for c in counts if c.uuid == "GPU-a")
    assert "" not in {c.uuid for c in counts}
    assert [(c.uuid, c.xid) for c in counts] == sorted((c.uuid, c.xid) for c in counts)


def test_events_are_counted_aged_and_forgotten_on_reset_and_the_thread_ends_with_nvml():
    now = [100.0]
    nvml = ScriptedEvents()
    watcher = XidWatcher(lambda: now[0])
    watcher.start(nvml, [])  # type: ignore[arg-type]
    assert watcher.thread is None  # not wanted yet
    watcher.want()
    watcher.start(nvml, [])  # type: ignore[arg-type]
    assert nvml.handles_seen == ["h0", "h1"]
    assert watcher.thread is not None
    nvml.events.put(XidEvent("GPU-a", 79))
    nvml.events.put(XidEvent("GPU-a", 79))
    nvml.events.put(XidEvent(None, 13))
    assert wait_for(lambda: sum(watcher.counts().values()) == 3)
    assert watcher.counts() == {("GPU-a", 79): 2, ("", 13): 1}
    assert watcher.ages("GPU-a", 130.0) == {79: 30.0}
    watcher.reset("GPU-a")
    assert watcher.ages("GPU-a", 130.0) == {}
    assert watcher.counts()[("GPU-a", 79)] == 2  # counters never go back

    thread = watcher.thread
    nvml.events.put(NvmlUnavailable("nvmlEventSetWait", "Uninitialized"))
    thread.join(5)
    assert not thread.is_alive()
    assert watcher.waiting_to_start
    watcher.unwant()
    assert not watcher.waiting_to_start
    watcher.close(nvml)  # type: ignore[arg-type]
    assert nvml.freed == ["set"]
