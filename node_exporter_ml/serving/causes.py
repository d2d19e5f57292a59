"""Latency regression and its causes: pure functions of a target's recent signal history.

Method (the README's "how causes are scored"):

1. Every tick records, per target and model, the window latency (mean over
   `--serving.window`) and the node signals joined to the target's owner: co-tenant SM
   share on its GPUs, device SM activity, power/thermal clock events and clocks, the
   owner cgroup's CPU throttling and memory pressure, and the server's own load (request
   rate, running+waiting requests).
2. The baseline of each series is its median over the ticks older than the current
   window and at most `--serving.baseline` old; the current value is the latest window
   latency, and for signals their mean over the current window. With fewer than
   `MIN_BASELINE_POINTS` older ticks there is no baseline yet: no ratio, no causes.
3. The regression ratio is current / baseline latency. A regression gate
   g = clip((ratio - 1.2) / 0.8, 0, 1) says how much latency rose: within 20 % of the
   baseline is noise (g = 0), twice the baseline or more is a full regression (g = 1).
4. Each cause has a movement m in 0-1: how far its signal rose from its own baseline,
   on a scale where a rise that plainly hurts latency reads 1 (see `SCALES`). Its score
   is g * m: a signal that moved while latency did not is not a cause. A signal unknown
   in the baseline but known now (a quota applied at run time, a new cgroup, a GPU seen
   for the first time) is scored on its absolute level: its rise above `ASSUMED_LEVELS`,
   a level that is plainly high, never on a missing baseline read as 0.
5. `load` is a rising request rate, or queueing: latency up at the same throughput
   (flat: >= 85 % of the baseline rate, 0 below 60 %) with no resource moving and more
   than the model's own work per request explains. `service_time` is the rest of that
   flat-rate regression: the model itself taking longer (bigger inputs, a new version),
   seen as the owner's GPU work per request rising with the latency, or assumed when
   the node cannot see that work. `gpu_low_power` is latency up while the request rate
   fell and the owner's GPUs spent the window idle-clocked (P8, clock event gpu_idle).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

CAUSES = (
    "noisy_neighbour",
    "gpu_saturation",
    "cpu_throttling",
    "memory_pressure",
    "power_thermal_throttling",
    "gpu_low_power",
    "load",
    "service_time",
)
MIN_BASELINE_POINTS = 3
GATE_START = 1.2
GATE_FULL = 2.0
SCALES: Mapping[str, float] = {
    # A rise of this much in the signal reads as a full movement (m = 1).
    "cotenant_sm": 0.3,  # co-tenants took 30 % of the SMs more than usual
    "sm_level": 1.0,  # saturation level (0 at 60 % SM activity, 1 at 95 %)
    "cpu_throttled": 0.25,  # a quarter of CFS periods more throttled
    "memory_stall": 0.1,  # memory PSI "some" up by 10 % of the time
    "memory_level": 1.0,  # working-set level (0 at 85 % of the limit, 1 at 98 %)
    "power_thermal": 1.0,  # fraction of ticks with a power/thermal clock event
    "clock_drop": 0.15,  # SM clock 15 % below its baseline
    "requests": 1.0,  # request rate doubled
    "rate_fall": 0.35,  # request rate down from 85 % to 50 % of its baseline
    "idle_clocked": 0.5,  # the GPU idle-clocked in half the window's ticks more than usual
    "work_explains": 0.5,  # GPU work per request rose half as much as latency (relative)
}
ASSUMED_LEVELS: Mapping[str, float] = {
    # With no baseline, a signal moves only as far as it stands above this level.
    "cotenant_sm": 0.2,  # co-tenants holding half the SMs reads 1
    "sm_level": 0.5,  # SM activity above ~78 %
    "cpu_throttled": 0.25,  # throttled in half the periods reads 1
    "memory_stall": 0.05,  # memory PSI "some" at 15 % of the time reads 1
    "memory_level": 0.0,  # the level is 0 below 85 % of the limit already
    "power_thermal": 0.0,  # an event is never normal
    "idle_clocked": 0.0,  # idle clocks between requests are not normal under load
}
FLAT_RATE = (0.6, 0.85)  # throughput "flat": 0 below 60 % of the baseline rate, 1 from 85 %


@dataclass(frozen=True, slots=True)
class Signals:
    """What one tick saw for one target and model (None: not known on this node).

    Ratios are 0-1. `latency_seconds` is the window mean latency at this tick.
    """

    t: float
    latency_seconds: float | None
    requests_per_second: float | None = None
    in_flight: float | None = None
    cotenant_sm: float | None = None
    owner_sm: float | None = None
    device_sm_active: float | None = None
    power_thermal: float | None = None
    clock_ratio: float | None = None
    cpu_throttled: float | None = None
    memory_stall: float | None = None
    memory_usage: float | None = None
    oom_kills: float | None = None
    idle_clocked: float | None = None


@dataclass(frozen=True, slots=True)
class CauseReport:
    """The regression ratio and cause scores of one target and model at one tick."""

    regression_ratio: float | None
    baseline_seconds: float | None
    current_seconds: float | None
    scores: Mapping[str, float] = field(default_factory=dict)

    def top(self) -> str | None:
        """The highest-scoring cause (None when nothing scored above 0)."""
        if not self.scores:
            return None
        name, score = max(self.scores.items(), key=lambda kv: kv[1])
        return name if score > 0 else None


def clip01(x: float) -> float:
    """Clamp to [0, 1] (NaN reads 0)."""
    if math.isnan(x):
        return 0.0
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def rise(current: float | None, baseline: float | None, scale: float) -> float:
    """How far `current` rose above `baseline`, 0-1 on `scale` (0 when either is unknown)."""
    if current is None or baseline is None or scale <= 0:
        return 0.0
    return clip01((current - baseline) / scale)


def regression_gate(ratio: float) -> float:
    """0 while latency is within 20 % of baseline, 1 from twice the baseline."""
    return clip01((ratio - GATE_START) / (GATE_FULL - GATE_START))


def saturation_level(sm_active: float | None) -> float | None:
    """How close to full the SMs are: 0 at 60 % activity, 1 at 95 %."""
    return None if sm_active is None else clip01((sm_active - 0.6) / 0.35)


def memory_level(usage: float | None) -> float | None:
    """How close the working set is to the limit: 0 at 85 %, 1 at 98 %."""
    return None if usage is None else clip01((usage - 0.85) / 0.13)


def _values(ticks: Sequence[Signals], get: Callable[[Signals], float | None]) -> list[float]:
    out = []
    for s in ticks:
        v = get(s)
        if v is not None and not math.isnan(v):
            out.append(v)
    return out


def _mean(ticks: Sequence[Signals], get: Callable[[Signals], float | None]) -> float | None:
    values = _values(ticks, get)
    return sum(values) / len(values) if values else None


def _median(ticks: Sequence[Signals], get: Callable[[Signals], float | None]) -> float | None:
    values = _values(ticks, get)
    return statistics.median(values) if values else None


def _owner_fraction(s: Signals) -> float | None:
    if s.owner_sm is None or s.cotenant_sm is None:
        return None
    total = s.owner_sm + s.cotenant_sm
    return s.owner_sm / total if total > 0 else None


def movements(
    current: Sequence[Signals], baseline: Sequence[Signals], latency_ratio: float | None = None
) -> dict[str, float]:
    """The movement (0-1) of each cause's signal from the baseline ticks to the current ones.

    `latency_ratio` (current / baseline latency) splits a flat-rate regression between the
    model's own service time and queueing; without it the whole of it is service time.
    """

    def moved(get: Callable[[Signals], float | None], scale: str) -> float:
        now, base = _mean(current, get), _median(baseline, get)
        if now is not None and base is None:
            base = ASSUMED_LEVELS.get(scale)  # missing is not zero: score the level
        return rise(now, base, SCALES[scale])

    noisy = moved(lambda s: s.cotenant_sm, "cotenant_sm")
    # Saturation counts only as far as this workload owns the activity.
    own = _mean(current, _owner_fraction)
    saturation = moved(lambda s: saturation_level(s.device_sm_active), "sm_level")
    saturation *= 1.0 if own is None else own
    cpu = moved(lambda s: s.cpu_throttled, "cpu_throttled")
    memory = max(
        moved(lambda s: s.memory_stall, "memory_stall"),
        moved(lambda s: memory_level(s.memory_usage), "memory_level"),
        1.0 if any(v > 0 for v in _values(current, lambda s: s.oom_kills)) else 0.0,
    )
    events = moved(lambda s: s.power_thermal, "power_thermal")
    clock_now = _mean(current, lambda s: s.clock_ratio)
    clock_base = _median(baseline, lambda s: s.clock_ratio)
    if clock_now is not None and clock_base is not None and clock_base > 0:
        # Throttling matters as far as it slowed the clocks.
        events *= clip01((clock_base - clock_now) / clock_base / SCALES["clock_drop"])
    elif events > 0:
        events *= 0.5  # clocks unknown: the event alone is half the evidence
    rate_now = _mean(current, lambda s: s.requests_per_second)
    rate_base = _median(baseline, lambda s: s.requests_per_second)
    rate_ratio = rate_now / rate_base if rate_now is not None and rate_base else None
    fell = 0.0 if rate_ratio is None else clip01((FLAT_RATE[1] - rate_ratio) / SCALES["rate_fall"])
    low_power = fell * moved(lambda s: s.idle_clocked, "idle_clocked")
    resource = max(noisy, saturation, cpu, memory, events, low_power)
    rate = rise(rate_ratio, 1.0, SCALES["requests"])
    flight_base = _median(baseline, lambda s: s.in_flight)
    queued = rise(_mean(current, lambda s: s.in_flight), flight_base, max(1.0, flight_base or 0.0))
    flat = (
        0.0
        if rate_ratio is None
        else clip01((rate_ratio - FLAT_RATE[0]) / (FLAT_RATE[1] - FLAT_RATE[0]))
    )
    own_work = _work_ratio(current, baseline)
    explained = 1.0  # without both ratios, no sign of queueing the service time cannot explain
    if own_work is not None and latency_ratio is not None and latency_ratio > 1:
        explained = clip01((own_work - 1.0) / (latency_ratio - 1.0) / SCALES["work_explains"])
    unexplained = 1.0 - resource
    return {
        "noisy_neighbour": noisy,
        "gpu_saturation": saturation,
        "cpu_throttling": cpu,
        "memory_pressure": memory,
        "power_thermal_throttling": events,
        "gpu_low_power": low_power,
        "load": max(rate, unexplained * (1.0 - explained) * max(queued, flat)),
        "service_time": unexplained * explained * flat,
    }


def _work_ratio(current: Sequence[Signals], baseline: Sequence[Signals]) -> float | None:
    """The owner's GPU work per request now / in the baseline (None: not seen on this node).

    By Little's law in-flight requests grow with latency whatever the reason; the work
    per request tells a slower model (it grows) from requests waiting in a queue (flat).
    """

    def per_request(s: Signals) -> float | None:
        if s.owner_sm is None or not s.requests_per_second:
            return None
        return s.owner_sm / s.requests_per_second

    now, base = _mean(current, per_request), _median(baseline, per_request)
    return now / base if now is not None and base else None


def assess(history: Sequence[Signals], window: float, baseline: float) -> CauseReport:
    """Score the latest tick of `history` (ascending in t) against its baseline.

    Args:
        history: one Signals per tick for one target and model, oldest first.
        window: the --serving.window in seconds (the "current" span).
        baseline: the --serving.baseline in seconds (how far back the baseline reaches).
    """
    if not history:
        return CauseReport(None, None, None)
    now = history[-1].t
    current_latency = history[-1].latency_seconds
    current = [s for s in history if s.t > now - window]
    past = [s for s in history if now - baseline <= s.t <= now - window]
    past_latency = _values(past, lambda s: s.latency_seconds)
    if current_latency is None or len(past_latency) < MIN_BASELINE_POINTS:
        return CauseReport(None, None, current_latency)
    base = statistics.median(past_latency)
    if base <= 0:
        return CauseReport(None, base, current_latency)
    ratio = current_latency / base
    gate = regression_gate(ratio)
    scores = {cause: gate * m for cause, m in movements(current, past, ratio).items()}
    return CauseReport(ratio, base, current_latency, scores)
