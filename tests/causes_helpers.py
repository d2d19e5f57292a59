"""Synthetic serving signals for the cause-rule tests: a calm server and its history."""

from __future__ import annotations

from dataclasses import replace

from node_exporter_ml.serving.causes import Signals

WINDOW = 60.0
BASELINE = 900.0
TICK = 5.0

# A quiet server: 10 ms at 100 rps, alone on its GPU at 30 % SM, clocks at max, no
# throttling, memory well below its limit.
CALM = Signals(
    t=0.0,
    latency_seconds=0.010,
    requests_per_second=100.0,
    in_flight=2.0,
    cotenant_sm=0.0,
    owner_sm=0.3,
    device_sm_active=0.3,
    power_thermal=0.0,
    clock_ratio=1.0,
    cpu_throttled=0.0,
    memory_stall=0.0,
    memory_usage=0.5,
    oom_kills=0.0,
    idle_clocked=0.0,
)


def history(
    incident: Signals, *, calm: Signals = CALM, calm_ticks: int = 60, incident_ticks: int = 12
) -> list[Signals]:
    """calm_ticks of `calm`, then incident_ticks of `incident`, one tick every 5 s."""
    out = [replace(calm, t=i * TICK) for i in range(calm_ticks)]
    start = calm_ticks * TICK
    out += [replace(incident, t=start + i * TICK) for i in range(incident_ticks)]
    return out


SLOW = 0.030  # three times the baseline latency
