"""Per-process energy and SM time of one GPU: a pure ledger, fed plain numbers every tick.

NVML has no per-process power. The ledger splits each interval's GPU energy between the
processes by their SM share (scaled down when the shares add up to more than 1) and puts
the rest, energy x (1 - busy), on the GPU's idle counter, so that processes plus idle add up
to the GPU's own energy counter. It also integrates each process's SM share into SM-busy
seconds. Without per-process shares (MIG) nothing is split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Key = tuple[int, int | None, int | None]  # pid, gpu_instance, compute_instance


@dataclass(frozen=True, slots=True)
class Tally:
    """The ledger's running totals after one interval."""

    sm_seconds: Mapping[Key, float]  # every process of the interval
    energy_joules: Mapping[Key, float]  # every process, when the interval was split; else empty
    idle_energy_joules: float | None  # None when the interval was not split


class EnergyLedger:
    """What one GPU's processes used since the agent first saw them, and the GPU's idle energy."""

    def __init__(self) -> None:
        self._integrated = 0.0  # joules from power x time, on GPUs without an energy counter
        self._last: float | None = None  # the GPU's energy at the end of the last interval
        self._sm_seconds: dict[Key, float] = {}
        self._energy: dict[Key, float] = {}
        self._idle = 0.0

    def gpu_energy(self, energy_mj: int | None, power_mw: int | None, dt: float) -> float | None:
        """The GPU's energy counter in joules; before Volta (no counter) power x time summed."""
        if energy_mj is not None:
            return energy_mj / 1000.0
        if power_mw is None:
            return None
        self._integrated += power_mw / 1000.0 * dt
        return self._integrated

    def interrupt(self) -> None:
        """The GPU was lost: the energy it used meanwhile is nobody's to attribute."""
        self._last = None

    def record(
        self,
        energy: float | None,
        processes: Sequence[Key],
        sm_shares: Mapping[Key, float] | None,
        dt: float,
    ) -> Tally:
        """Account one interval of `dt` seconds ending at GPU energy `energy` (joules).

        `sm_shares` is each process's SM share (0-1) over the interval, None when there are
        no per-process samples. Processes not in `processes` are forgotten. An energy counter
        that went backwards (a driver reload) gives the interval no energy.
        """
        previous, self._last = self._last, energy
        split = energy is not None and sm_shares is not None
        delta = (
            0.0 if energy is None or previous is None or energy < previous else energy - previous
        )
        shares = {k: sm_shares.get(k, 0.0) for k in processes} if sm_shares is not None else {}
        busy = sum(shares.values())
        scale = delta / busy if busy > 1.0 else delta
        for key, sm in shares.items():
            self._sm_seconds[key] = self._sm_seconds.get(key, 0.0) + min(sm, 1.0) * dt
            if split:
                self._energy[key] = self._energy.get(key, 0.0) + sm * scale
        present = set(processes)
        for state in (self._sm_seconds, self._energy):
            for key in [k for k in state if k not in present]:
                del state[key]
        if split:
            self._idle += delta * (1.0 - min(1.0, busy))
        return Tally(
            sm_seconds={k: self._sm_seconds.get(k, 0.0) for k in processes},
            energy_joules={k: self._energy[k] for k in processes} if split else {},
            idle_energy_joules=self._idle if split else None,
        )
