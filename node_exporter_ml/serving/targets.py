"""What the serving collector remembers of its targets between scrapes (pure).

Per target: a window per model (serving/window.py), the server's start time (a change is a
restart), when it was last read (an outage longer than the window starts every window
afresh), TGI's model name from /info, and the pid found holding its socket. Across
targets: failed scrapes counted by reason. No I/O and no clock: the collector passes
each scrape's reading and time.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from node_exporter_ml.serving.data import ModelStats
from node_exporter_ml.serving.profiles import ModelKey, Reading
from node_exporter_ml.serving.window import ModelWindow


@dataclass(slots=True)
class TargetState:
    """One target's windows and what its earlier scrapes said."""

    windows: dict[ModelKey, ModelWindow] = field(default_factory=dict)
    start_time: float | None = None
    last_t: float | None = None
    info_model: str | None = None
    info_tried: bool = False
    socket_pid: int | None = None

    def observe(self, reading: Reading, now: float, window: float) -> tuple[ModelStats, ...]:
        """Add a good scrape at `now`; the statistics of each model's current window.

        A model the scrape no longer shows is forgotten; a new `window` length starts a
        model's window afresh.
        """
        restarted = (
            reading.start_time is not None
            and self.start_time is not None
            and reading.start_time != self.start_time
        )
        self.start_time = reading.start_time
        stale = self.last_t is not None and now - self.last_t > window
        self.last_t = now
        out = []
        for key, model_reading in reading.models.items():
            w = self.windows.get(key)
            if w is None or w.window != window:
                w = self.windows[key] = ModelWindow(window)
            if stale:
                w.last = None  # after an outage longer than the window, start afresh
            w.observe(now, model_reading, restarted)
            stats = w.stats()
            if stats is not None:
                out.append(ModelStats(key[0], key[1], stats))
        for key in [k for k in self.windows if k not in reading.models]:
            del self.windows[key]
        return tuple(out)

    def fail(self, now: float) -> None:
        """A failed scrape at `now`: the windows slide on without it."""
        for w in self.windows.values():
            w.expire(now)


@dataclass(slots=True)
class Targets:
    """Every target's state by name, and failed scrapes by (target, reason)."""

    states: dict[str, TargetState] = field(default_factory=dict)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)

    def get(self, name: str) -> TargetState:
        """The state of target `name`, new when it has none yet."""
        state = self.states.get(name)
        if state is None:
            state = self.states[name] = TargetState()
        return state

    def count_error(self, name: str, reason: str) -> None:
        """Count one failed scrape of `name` for `reason`."""
        self.errors[(name, reason)] = self.errors.get((name, reason), 0) + 1

    def keep(self, names: Collection[str]) -> None:
        """Forget the state and error counts of every target not in `names`."""
        for name in [n for n in self.states if n not in names]:
            del self.states[name]
        for key in [k for k in self.errors if k[0] not in names]:
            del self.errors[key]
