"""GPM profiling metrics (Hopper and newer): sample windows between ticks, and what they give.

GPM metrics are computed between two samples. Each tick takes a sample per scope (the
whole GPU, or each GPU instance under MIG) and measures the window since the previous
tick's; the ratios and PCIe rates of the GPU and MIG-instance samples come from there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from node_exporter_ml.nvml.binding import Handle, NvmlBinding
from node_exporter_ml.nvml.devices import (
    GPM_ANY_TENSOR_UTIL,
    GPM_DRAM_BW_UTIL,
    GPM_GRAPHICS_UTIL,
    GPM_IDS,
    GPM_PCIE_RX_PER_SEC,
    GPM_PCIE_TX_PER_SEC,
    GPM_SM_OCCUPANCY,
    GPM_SM_UTIL,
)

GPM_MIN_WINDOW_SECONDS = 0.1  # DCGM's hard minimum between two GPM samples (NVIDIA/DCGM#310)
MIB = 1024 * 1024

Scope = int | None  # None is the whole GPU; under MIG, a GPU instance


class GpmWindows:
    """The last GPM sample of each scope of one GPU and when it was taken."""

    def __init__(self) -> None:
        self._last: dict[Scope, tuple[Any, float]] = {}

    def measure(
        self, nvml: NvmlBinding, h: Handle, gpu_instances: Collection[int], now: float
    ) -> dict[Scope, dict[int, float]]:
        """GPM metrics between the previous tick's sample and one taken now, per scope.

        Scope None is the whole GPU; under MIG (`gpu_instances` not empty) the scopes are the
        GPU instances instead. A window shorter than GPM's minimum is not measured (the
        older sample stays); samples of scopes that went away are freed.
        """
        scopes: list[Scope] = [*sorted(gpu_instances)] if gpu_instances else [None]
        out: dict[Scope, dict[int, float]] = {}
        for scope in scopes:
            last = self._last.get(scope)
            if last is not None and now - last[1] < GPM_MIN_WINDOW_SECONDS:
                continue
            sample = nvml.gpm_sample(h, scope)
            if sample is None:
                continue
            if last is not None:
                out[scope] = nvml.gpm_metrics(last[0], sample, GPM_IDS)
                nvml.gpm_free(last[0])
            self._last[scope] = (sample, now)
        for scope in [s for s in self._last if s not in scopes]:
            nvml.gpm_free(self._last.pop(scope)[0])
        return out

    def drop(self) -> None:
        """Forget every sample of a lost GPU (not worth freeing through it)."""
        self._last.clear()


def activity_ratios(values: Mapping[int, float]) -> dict[str, float | None]:
    """The activity ratios (0-1) of one window, by the name GpuSample and GpuInstanceSample use."""

    def ratio(metric: int) -> float | None:
        percent = values.get(metric)
        return None if percent is None else percent / 100.0

    return {
        "graphics_active_ratio": ratio(GPM_GRAPHICS_UTIL),
        "sm_active_ratio": ratio(GPM_SM_UTIL),
        "sm_occupancy_ratio": ratio(GPM_SM_OCCUPANCY),
        "tensor_active_ratio": ratio(GPM_ANY_TENSOR_UTIL),
        "dram_active_ratio": ratio(GPM_DRAM_BW_UTIL),
    }


def pcie_rates(values: Mapping[int, float]) -> tuple[float | None, float | None]:
    """PCIe bytes per second (sent, received) over one window; GPM gives MiB/s."""
    tx, rx = values.get(GPM_PCIE_TX_PER_SEC), values.get(GPM_PCIE_RX_PER_SEC)
    return None if tx is None else tx * MIB, None if rx is None else rx * MIB
