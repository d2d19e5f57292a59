"""The per-process energy ledger of one GPU, with plain numbers (no NVML)."""

from __future__ import annotations

import random

import pytest

from node_exporter_ml.nvml.energy import EnergyLedger, Key

A: Key = (100, None, None)
B: Key = (200, None, None)


def test_the_gpu_energy_is_its_counter_else_power_integrated_else_unknown():
    ledger = EnergyLedger()
    assert ledger.gpu_energy(5_000_000, 300_000, 1.0) == 5000.0
    assert ledger.gpu_energy(None, None, 1.0) is None
    assert ledger.gpu_energy(None, 300_000, 2.0) == 600.0
    assert ledger.gpu_energy(None, 100_000, 1.0) == 700.0  # a running sum


def test_the_first_interval_has_no_energy_to_split():
    tally = EnergyLedger().record(1000.0, [A], {A: 0.5}, 1.0)
    assert tally.energy_joules == {A: 0.0}
    assert tally.idle_energy_joules == 0.0
    assert tally.sm_seconds == {A: 0.5}


def test_energy_is_split_by_sm_share_and_the_rest_is_idle():
    ledger = EnergyLedger()
    ledger.record(1000.0, [A, B], {A: 0.0, B: 0.0}, 1.0)
    tally = ledger.record(1100.0, [A, B], {A: 0.3, B: 0.5}, 2.0)
    assert tally.energy_joules == pytest.approx({A: 30.0, B: 50.0})
    assert tally.idle_energy_joules == pytest.approx(20.0)
    assert tally.sm_seconds == pytest.approx({A: 0.6, B: 1.0})


def test_shares_over_one_are_scaled_down_and_nothing_is_idle():
    ledger = EnergyLedger()
    ledger.record(0.0, [A, B], {A: 0.0, B: 0.0}, 1.0)
    tally = ledger.record(90.0, [A, B], {A: 1.0, B: 0.8}, 1.0)
    assert tally.energy_joules == pytest.approx({A: 50.0, B: 40.0})
    assert tally.idle_energy_joules == 0.0
    assert tally.sm_seconds == pytest.approx({A: 1.0, B: 0.8})  # a share counts at most 1


def test_a_process_without_a_sample_used_nothing():
    ledger = EnergyLedger()
    ledger.record(0.0, [A, B], {}, 1.0)
    tally = ledger.record(10.0, [A, B], {A: 0.5}, 1.0)
    assert tally.energy_joules == {A: 5.0, B: 0.0}
    assert tally.sm_seconds == {A: 0.5, B: 0.0}


def test_without_shares_nothing_is_split_and_no_idle_counter_exists():
    ledger = EnergyLedger()
    ledger.record(0.0, [A], None, 1.0)
    tally = ledger.record(10.0, [A], None, 1.0)
    assert tally.energy_joules == {}
    assert tally.idle_energy_joules is None
    assert tally.sm_seconds == {A: 0.0}


def test_without_energy_nothing_is_split_but_sm_time_counts():
    ledger = EnergyLedger()
    tally = ledger.record(None, [A], {A: 0.25}, 4.0)
    assert (tally.energy_joules, tally.idle_energy_joules) == ({}, None)
    assert tally.sm_seconds == {A: 1.0}


def test_a_counter_that_went_backwards_gives_the_interval_no_energy():
    ledger = EnergyLedger()
    ledger.record(500.0, [A], {A: 0.0}, 1.0)
    assert ledger.record(10.0, [A], {A: 1.0}, 1.0).energy_joules == {A: 0.0}
    assert ledger.record(20.0, [A], {A: 1.0}, 1.0).energy_joules == {A: 10.0}


def test_energy_used_while_the_gpu_was_lost_is_nobodys():
    ledger = EnergyLedger()
    ledger.record(0.0, [A], {A: 0.0}, 1.0)
    ledger.record(10.0, [A], {A: 1.0}, 1.0)
    ledger.interrupt()
    tally = ledger.record(1000.0, [A], {A: 1.0}, 1.0)
    assert tally.energy_joules == {A: 10.0}
    assert tally.idle_energy_joules == 0.0


def test_a_process_that_went_away_starts_again_from_zero():
    ledger = EnergyLedger()
    ledger.record(0.0, [A, B], {A: 0.0, B: 0.0}, 1.0)
    ledger.record(10.0, [A, B], {A: 0.5, B: 0.5}, 1.0)
    ledger.record(20.0, [A], {A: 0.5}, 1.0)
    tally = ledger.record(30.0, [A, B], {A: 0.5, B: 0.5}, 1.0)
    assert tally.energy_joules == {A: 15.0, B: 5.0}
    assert tally.sm_seconds == {A: 1.5, B: 0.5}


def test_processes_and_idle_add_up_to_the_gpu_energy():
    rng = random.Random(13)
    ledger = EnergyLedger()
    energy, start = 1e6, 1e6
    ledger.record(energy, [], {}, 1.0)
    keys = [(pid, None, None) for pid in range(5)]
    for _ in range(200):
        energy += rng.uniform(0, 700)
        shares = {k: rng.uniform(0, 0.6) for k in keys}
        tally = ledger.record(energy, keys, shares, 1.0)
    total = sum(tally.energy_joules.values()) + (tally.idle_energy_joules or 0.0)
    assert total == pytest.approx(energy - start)
