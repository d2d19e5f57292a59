"""LatencyCauses: the correlation step that joins serving targets to the node and scores causes.

It keeps, per target and model, the history of `Signals` over the baseline horizon
(the only state); the joins (`join.py`) and the scoring (`causes.py`) are pure. The serving
collector registers it as the `latency_causes` enricher, run after `workloads`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from node_exporter_ml.serving.causes import Signals, assess
from node_exporter_ml.serving.data import SERVING, SERVING_CAUSES, ServingCauses, TargetStatus
from node_exporter_ml.serving.join import gpu_shares, owner_cgroups, owner_gpus, owner_pids
from node_exporter_ml.serving.options import SERVING_OPTIONS
from node_exporter_ml.settings import Config
from node_exporter_ml.snapshot import NVML, CgroupSample, CpuQuota, Snapshot

HistoryKey = tuple[str, str, str | None]


_LEAF = "\0leaf"  # the throttling counters are the cgroup's own (its quota is not known)


@dataclass(frozen=True, slots=True)
class _CgroupTotals:
    """One cgroup's counters at one tick; `quota_path` says whose CPU counters they are."""

    t: float
    quota_path: str | None
    throttled_periods: float | None
    periods: float | None
    throttled_seconds: float | None
    limit_cores: float | None
    memory_waiting: float | None
    oom_kills: float | None


def _cgroup_totals(t: float, g: CgroupSample) -> _CgroupTotals:
    q = g.cpu_quota
    if q is None:  # the quota over the cgroup is not known: its own counters
        q = CpuQuota(
            _LEAF,
            g.cpu_limit_cores,
            g.cpu_periods_total,
            g.cpu_throttled_periods_total,
            g.cpu_throttled_seconds_total,
        )
    return _CgroupTotals(
        t,
        q.path,
        q.throttled_periods_total,
        q.periods_total,
        q.throttled_seconds_total,
        q.limit_cores,
        g.pressure_memory_waiting_seconds_total,
        g.oom_kills_total,
    )


def _rate(new: float | None, old: float | None, seconds: float) -> float | None:
    if new is None or old is None or seconds <= 0 or new < old:
        return None
    return (new - old) / seconds


def _throttled(old: _CgroupTotals | None, new: _CgroupTotals) -> float | None:
    """Share of CFS periods throttled between two ticks (0, known, when no quota applies)."""
    if new.quota_path is None:
        return 0.0  # no quota anywhere on the cgroup's path: nothing can throttle it
    if old is None or old.quota_path != new.quota_path:
        return None  # a new cgroup, or another cgroup's quota now: no delta yet
    periods = _rate(new.periods, old.periods, 1.0)
    throttled = _rate(new.throttled_periods, old.throttled_periods, 1.0)
    if periods and throttled is not None:
        return min(1.0, throttled / periods)
    seconds = _rate(new.throttled_seconds, old.throttled_seconds, new.t - old.t)
    return None if seconds is None else min(1.0, seconds / max(1.0, new.limit_cores or 0.0))


def _known_max(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def cgroup_signals(
    old: Mapping[str, _CgroupTotals], t: float, groups: tuple[CgroupSample, ...]
) -> tuple[dict[str, float | None], dict[str, _CgroupTotals]]:
    """CPU throttling, memory stall, working-set usage and OOM kills of this tick's cgroups.

    Deltas are taken per cgroup path against the same cgroup's previous tick, so a process
    that moved to another cgroup is followed from the cgroup it is in now (a cgroup seen
    for the first time gives its levels, not yet its rates). Returns the signals and the
    totals to keep for the next tick.
    """
    totals = {g.path: _cgroup_totals(t, g) for g in groups}
    throttled, stalls, ooms = [], [], []
    for path, new in totals.items():
        prev = old.get(path)
        throttled.append(_throttled(prev, new))
        if prev is not None:
            stall = _rate(new.memory_waiting, prev.memory_waiting, new.t - prev.t)
            stalls.append(None if stall is None else min(1.0, stall))
            ooms.append(_rate(new.oom_kills, prev.oom_kills, 1.0))
    usage = [
        s.memory_working_set_bytes / s.memory_limit_bytes
        for s in groups
        if s.memory_working_set_bytes is not None and s.memory_limit_bytes
    ]
    known_ooms = [v for v in ooms if v is not None]
    signals: dict[str, float | None] = {
        "cpu_throttled": _known_max(throttled),
        "memory_stall": _known_max(stalls),
        "memory_usage": max(usage) if usage else None,
        "oom_kills": sum(known_ooms) if known_ooms else None,
    }
    return signals, totals


class LatencyCauses:
    """Correlation step: Snapshot -> Snapshot with ServingCauses under SERVING_CAUSES.

    Call it once per tick in tick order (the sampler runs enrichers in one thread).
    """

    __name__ = "LatencyCauses"

    def __init__(self, config: Config) -> None:
        options = config.section(SERVING_OPTIONS)
        self.window = options.window
        self.baseline = options.baseline
        self._history: dict[HistoryKey, deque[Signals]] = {}
        self._cgroups: dict[str, dict[str, _CgroupTotals]] = {}
        self._lock = threading.Lock()

    def __call__(self, snapshot: Snapshot) -> Snapshot:
        """Record this tick's signals and score every target and model."""
        data = snapshot[SERVING]
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
        return snapshot.with_derived(SERVING_CAUSES, ServingCauses(reports, self.baseline))

    def _signals(
        self, target: TargetStatus, snapshot: Snapshot
    ) -> Iterable[tuple[HistoryKey, Signals]]:
        if not target.up:
            return
        t = snapshot.taken_at
        pids = owner_pids(target, snapshot)
        shares = gpu_shares(pids, owner_gpus(pids, snapshot[NVML]))
        groups = owner_cgroups(pids, snapshot)
        cg: dict[str, float | None] = {}
        if groups:
            cg, self._cgroups[target.name] = cgroup_signals(
                self._cgroups.get(target.name, {}), t, groups
            )
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
                    idle_clocked=shares.idle_clocked,
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
