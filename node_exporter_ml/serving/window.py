"""Windowed latency from the deltas of cumulative counters between scrapes (pure).

Each scrape of a model adds one delta (the increase since the previous scrape); the
window is the sum of the deltas that ended within the last `--serving.window` seconds,
so it slides with every scrape. A counter that went down, or a server whose
`process_start_time_seconds` changed, was restarted: as PromQL's `increase()` does, the
new value is taken as the increase since the restart.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from node_exporter_ml.serving.profiles import Histogram, ModelReading

QUANTILES = (0.5, 0.9, 0.99)


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """The q-quantile of a cumulative histogram, interpolated as PromQL's histogram_quantile.

    `bounds` are ascending upper bounds ending with +Inf; `counts` the cumulative counts.
    Returns NaN when there are no observations or fewer than two buckets, and for a NaN q.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if len(bounds) < 2 or not math.isinf(bounds[-1]):
        return math.nan
    # Make the counts monotonic, as PromQL does for buckets scraped at slightly different times.
    fixed: list[float] = []
    top = 0.0
    for c in counts:
        top = max(top, c)
        fixed.append(top)
    observations = fixed[-1]
    if observations <= 0:
        return math.nan
    rank = q * observations
    b = next(i for i, c in enumerate(fixed) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], fixed[b]
    if b > 0:
        start = bounds[b - 1]
        count -= fixed[b - 1]
        rank -= fixed[b - 1]
    if count <= 0:  # q == 0 on an empty first bucket: 0/0, NaN in PromQL too
        return math.nan
    return start + (end - start) * (rank / count)


@dataclass(frozen=True, slots=True)
class Delta:
    """The increase of one model's counters between two scrapes, ending at `t`."""

    t: float
    seconds: float
    count: float = 0.0
    sum_seconds: float = 0.0
    bounds: tuple[float, ...] | None = None
    buckets: tuple[float, ...] | None = None
    requests: float | None = None
    errors: float | None = None
    in_flight: float | None = None
    reset: bool = False


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One model's latency over the window (None: not measurable in this window)."""

    seconds: float
    requests: float
    requests_per_second: float
    mean_seconds: float | None = None
    quantiles: tuple[tuple[float, float], ...] = ()
    error_ratio: float | None = None
    in_flight: float | None = None
    resets: int = 0


def _increase(new: float | None, old: float | None, reset: bool) -> float | None:
    if new is None:
        return None
    if old is None or reset:
        return new
    return new - old


def delta(
    old: ModelReading, new: ModelReading, t: float, seconds: float, restarted: bool = False
) -> Delta:
    """The increase from `old` to `new`; a counter that went down means a restart."""
    reset = restarted
    if new.count is not None and old.count is not None and new.count < old.count:
        reset = True
    oh, nh = old.histogram, new.histogram
    if (
        nh is not None
        and oh is not None
        and oh.bounds == nh.bounds
        and any(n < o for n, o in zip(nh.counts, oh.counts, strict=True))
    ):
        reset = True
    for n_val, o_val in ((new.requests, old.requests), (new.errors, old.errors)):
        if n_val is not None and o_val is not None and n_val < o_val:
            reset = True
    bounds = buckets = None
    if nh is not None:
        if oh is not None and oh.bounds == nh.bounds and not reset:
            bounds = nh.bounds
            buckets = tuple(n - o for n, o in zip(nh.counts, oh.counts, strict=True))
        elif reset or oh is None:
            bounds, buckets = nh.bounds, nh.counts
    return Delta(
        t=t,
        seconds=seconds,
        count=_increase(new.count, old.count, reset) or 0.0,
        sum_seconds=_increase(new.sum_seconds, old.sum_seconds, reset) or 0.0,
        bounds=bounds,
        buckets=buckets,
        requests=_increase(new.requests, old.requests, reset),
        errors=_increase(new.errors, old.errors, reset),
        in_flight=new.in_flight,
        reset=reset,
    )


def summarize(deltas: Sequence[Delta]) -> WindowStats | None:
    """Window statistics from the deltas in the window (None when there are none)."""
    if not deltas:
        return None
    seconds = sum(d.seconds for d in deltas)
    count = sum(d.count for d in deltas)
    total = sum(d.sum_seconds for d in deltas)
    quantiles: tuple[tuple[float, float], ...] = ()
    layout = deltas[-1].bounds
    if layout is not None:
        matching = [d.buckets for d in deltas if d.bounds == layout and d.buckets is not None]
        merged = [sum(col) for col in zip(*matching, strict=True)]
        values = [(q, histogram_quantile(q, layout, merged)) for q in QUANTILES]
        quantiles = tuple((q, v) for q, v in values if math.isfinite(v))
    error_ratio = None
    errs = [d.errors for d in deltas if d.errors is not None]
    if errs:
        reqs = [d.requests for d in deltas if d.requests is not None]
        err_total = sum(errs)
        denominator = sum(reqs) if reqs else count + err_total
        error_ratio = min(1.0, err_total / denominator) if denominator > 0 else None
    gauges = [d.in_flight for d in deltas if d.in_flight is not None]
    return WindowStats(
        seconds=seconds,
        requests=count,
        requests_per_second=count / seconds if seconds > 0 else 0.0,
        mean_seconds=total / count if count > 0 else None,
        quantiles=quantiles,
        error_ratio=error_ratio,
        in_flight=sum(gauges) / len(gauges) if gauges else None,
        resets=sum(1 for d in deltas if d.reset),
    )


@dataclass(slots=True)
class ModelWindow:
    """The rolling state of one model of one target: last reading and recent deltas."""

    window: float
    last: ModelReading | None = None
    last_t: float | None = None
    deltas: deque[Delta] = field(default_factory=deque)

    def observe(self, t: float, reading: ModelReading, restarted: bool = False) -> None:
        """Add the scrape at time `t` (seconds, monotonic)."""
        if self.last is not None and self.last_t is not None and t > self.last_t:
            self.deltas.append(delta(self.last, reading, t, t - self.last_t, restarted))
        self.last, self.last_t = reading, t
        self.expire(t)

    def expire(self, now: float) -> None:
        """Forget deltas that ended before the window."""
        while self.deltas and self.deltas[0].t <= now - self.window:
            self.deltas.popleft()

    def stats(self) -> WindowStats | None:
        """The statistics of the current window."""
        return summarize(list(self.deltas))


__all__ = [
    "QUANTILES",
    "Delta",
    "Histogram",
    "ModelWindow",
    "WindowStats",
    "delta",
    "histogram_quantile",
    "summarize",
]
