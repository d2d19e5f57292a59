"""LatencyCauses: the correlation step that joins serving targets to the node and scores causes.

It keeps, per target and model, the history of `Signals` over the baseline horizon
(the only state); the joins (`join.py`) and the scoring (`causes.py`) are pure.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from node_exporter_ml.config import Config
from node_exporter_ml.serving.causes import Signals, assess
from node_exporter_ml.serving.data import ServingCauses, ServingData, TargetStatus
from node_exporter_ml.serving.join import gpu_shares, owner_cgroups, owner_gpus, owner_pids
from node_exporter_ml.snapshot import CgroupSample, NvmlData, Snapshot

DERIVED_KEY = "serving"

HistoryKey = tuple[str, str, str | None]


@dataclass(frozen=True, slots=True)
class _CgroupTotals:
    t: float
    throttled_periods: float | None
    periods: float | None
    throttled_seconds: float | None
    memory_waiting: float | None
    oom_kills: float | None


def _total(samples: Iterable[CgroupSample], attr: str) -> float | None:
    values = [getattr(s, attr) for s in samples]
    known = [float(v) for v in values if v is not None]
    return sum(known) if known else None


def _cgroup_totals(t: float, groups: tuple[CgroupSample, ...]) -> _CgroupTotals:
    return _CgroupTotals(
        t,
        _total(groups, "cpu_throttled_periods_total"),
        _total(groups, "cpu_periods_total"),
        _total(groups, "cpu_throttled_seconds_total"),
        _total(groups, "pressure_memory_waiting_seconds_total"),
        _total(groups, "oom_kills_total"),
    )


def _rate(new: float | None, old: float | None, seconds: float) -> float | None:
    if new is None or old is None or seconds <= 0 or new < old:
        return None
    return (new - old) / seconds


def cgroup_signals(
    old: _CgroupTotals | None, new: _CgroupTotals, groups: tuple[CgroupSample, ...]
) -> dict[str, float | None]:
    """CPU throttling, memory stall, working-set usage and OOM kills between two ticks."""
    usage = [
        s.memory_working_set_bytes / s.memory_limit_bytes
        for s in groups
        if s.memory_working_set_bytes is not None and s.memory_limit_bytes
    ]
    out: dict[str, float | None] = {
        "cpu_throttled": None,
        "memory_stall": None,
        "memory_usage": max(usage) if usage else None,
        "oom_kills": None,
    }
    if old is None:
        return out
    dt = new.t - old.t
    periods = _rate(new.periods, old.periods, 1.0)
    throttled = _rate(new.throttled_periods, old.throttled_periods, 1.0)
    if periods and throttled is not None:
        out["cpu_throttled"] = min(1.0, throttled / periods)
    else:
        seconds = _rate(new.throttled_seconds, old.throttled_seconds, dt)
        limit = max(1.0, max((s.cpu_limit_cores or 0.0) for s in groups) if groups else 1.0)
        out["cpu_throttled"] = None if seconds is None else min(1.0, seconds / limit)
    stall = _rate(new.memory_waiting, old.memory_waiting, dt)
    out["memory_stall"] = None if stall is None else min(1.0, stall)
    out["oom_kills"] = _rate(new.oom_kills, old.oom_kills, 1.0)
    return out


class LatencyCauses:
    """Correlation step: Snapshot -> Snapshot with `derived["serving"]` = ServingCauses.

    Call it once per tick in tick order (the sampler runs enrichers in one thread).
    """

    __name__ = "LatencyCauses"

    def __init__(self, config: Config) -> None:
        self.window = config.serving_window
        self.baseline = config.serving_baseline
        self._history: dict[HistoryKey, deque[Signals]] = {}
        self._cgroups: dict[str, _CgroupTotals] = {}
        self._lock = threading.Lock()

    def __call__(self, snapshot: Snapshot) -> Snapshot:
        """Record this tick's signals and score every target and model."""
        data = snapshot.data("serving", ServingData)
        if data is None:
            return snapshot
        with self._lock:
            reports = {}
            for target in data.targets:
                for key, signals in self._signals(target, snapshot):
                    history = self._history.setdefault(key, deque())
                    history.append(signals)
                    while history and history[0].t < signals.t - self.baseline - self.window:
                        history.popleft()
                    reports[key] = assess(list(history), self.window, self.baseline)
            self._forget(snapshot.taken_at)
        derived = dict(snapshot.derived)
        derived[DERIVED_KEY] = ServingCauses(reports, self.baseline)
        return snapshot.replace(derived=derived)

    def _signals(
        self, target: TargetStatus, snapshot: Snapshot
    ) -> Iterable[tuple[HistoryKey, Signals]]:
        if not target.up:
            return
        t = snapshot.taken_at
        pids = owner_pids(target, snapshot)
        shares = gpu_shares(pids, owner_gpus(pids, snapshot.data("nvml", NvmlData)))
        groups = owner_cgroups(pids, snapshot)
        totals = _cgroup_totals(t, groups)
        cg = cgroup_signals(self._cgroups.get(target.name), totals, groups) if groups else {}
        if groups:
            self._cgroups[target.name] = totals
        for m in target.models:
            yield (
                (target.name, m.model, m.version),
                Signals(
                    t=t,
                    latency_seconds=m.window.mean_seconds,
                    requests_per_second=m.window.requests_per_second,
                    in_flight=m.window.in_flight,
                    cotenant_sm=shares.cotenant_sm,
                    owner_sm=shares.owner_sm,
                    device_sm_active=shares.device_sm_active,
                    power_thermal=shares.power_thermal,
                    clock_ratio=shares.clock_ratio,
                    cpu_throttled=cg.get("cpu_throttled"),
                    memory_stall=cg.get("memory_stall"),
                    memory_usage=cg.get("memory_usage"),
                    oom_kills=cg.get("oom_kills"),
                ),
            )

    def _forget(self, now: float) -> None:
        horizon = now - self.baseline - self.window
        for key in [k for k, h in self._history.items() if not h or h[-1].t < horizon]:
            del self._history[key]
        targets = {k[0] for k in self._history}
        for name in [n for n in self._cgroups if n not in targets]:
            del self._cgroups[name]
