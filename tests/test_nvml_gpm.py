"""GPM sample windows and the ratios and rates derived from them, over a counting fake."""

from __future__ import annotations

from node_exporter_ml.nvml.devices import (
    GPM_DRAM_BW_UTIL,
    GPM_IDS,
    GPM_PCIE_RX_PER_SEC,
    GPM_PCIE_TX_PER_SEC,
    GPM_SM_UTIL,
)
from node_exporter_ml.nvml.gpm import (
    GPM_MIN_WINDOW_SECONDS,
    MIB,
    GpmWindows,
    activity_ratios,
    pcie_rates,
)


class FakeGpm:
    """Samples are numbered; metrics name the two samples they were computed from."""

    def __init__(self, supported: bool = True) -> None:
        self.supported = supported
        self.taken: list[tuple[int, int | None]] = []
        self.freed: list[int] = []

    def gpm_sample(self, h, gpu_instance=None):
        if not self.supported:
            return None
        self.taken.append((len(self.taken), gpu_instance))
        return len(self.taken) - 1

    def gpm_metrics(self, first, second, ids):
        assert tuple(ids) == GPM_IDS
        return {GPM_SM_UTIL: float(first * 100 + second)}

    def gpm_free(self, sample):
        self.freed.append(sample)


def test_a_window_is_measured_from_the_previous_ticks_sample_which_is_then_freed():
    nvml, windows = FakeGpm(), GpmWindows()
    assert windows.measure(nvml, "h", set(), 10.0) == {}
    assert windows.measure(nvml, "h", set(), 11.0) == {None: {GPM_SM_UTIL: 1.0}}
    assert windows.measure(nvml, "h", set(), 12.0) == {None: {GPM_SM_UTIL: 102.0}}
    assert nvml.freed == [0, 1]


def test_a_window_shorter_than_gpms_minimum_waits_for_the_next_tick():
    nvml, windows = FakeGpm(), GpmWindows()
    windows.measure(nvml, "h", set(), 10.0)
    assert windows.measure(nvml, "h", set(), 10.0 + GPM_MIN_WINDOW_SECONDS / 2) == {}
    assert len(nvml.taken) == 1
    assert windows.measure(nvml, "h", set(), 11.0) == {None: {GPM_SM_UTIL: 1.0}}


def test_under_mig_the_gpu_instances_are_the_scopes_and_the_gpu_sample_is_freed():
    nvml, windows = FakeGpm(), GpmWindows()
    windows.measure(nvml, "h", set(), 10.0)
    assert windows.measure(nvml, "h", {2, 1}, 11.0) == {}
    assert nvml.taken == [(0, None), (1, 1), (2, 2)]
    assert nvml.freed == [0]
    assert windows.measure(nvml, "h", {1, 2}, 12.0) == {
        1: {GPM_SM_UTIL: 103.0},
        2: {GPM_SM_UTIL: 204.0},
    }


def test_unsupported_samples_give_nothing_and_a_lost_gpu_frees_nothing():
    nvml, windows = FakeGpm(supported=False), GpmWindows()
    assert windows.measure(nvml, "h", set(), 10.0) == {}
    assert windows.measure(nvml, "h", set(), 11.0) == {}
    nvml.supported = True
    windows.measure(nvml, "h", set(), 12.0)
    windows.drop()
    assert windows.measure(nvml, "h", set(), 13.0) == {}  # a new first sample
    assert nvml.freed == []


def test_ratios_and_rates_of_a_window():
    values = {GPM_SM_UTIL: 42.0, GPM_DRAM_BW_UTIL: 0.0, GPM_PCIE_TX_PER_SEC: 2.0}
    assert activity_ratios(values) == {
        "graphics_active_ratio": None,
        "sm_active_ratio": 0.42,
        "sm_occupancy_ratio": None,
        "tensor_active_ratio": None,
        "dram_active_ratio": 0.0,
    }
    assert pcie_rates(values) == (2.0 * MIB, None)
    assert pcie_rates({GPM_PCIE_RX_PER_SEC: 0.5}) == (None, 0.5 * MIB)
