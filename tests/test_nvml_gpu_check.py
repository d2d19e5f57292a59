"""The pure parts of scripts/gpu_check.py, and its refusals without a GPU."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_check", None)


def test_parse_smi_gpus_with_unsupported_fields(gpu_check):
    text = (
        "GPU-478bad86-921b-0395-2f3f-4ae082da1bb5, 100, 681.59, 7498\n"
        "GPU-aaaa, [N/A], [Not Supported], 12\n"
        "garbage line\n"
    )
    got = gpu_check.parse_smi_gpus(text)
    assert got["GPU-478bad86-921b-0395-2f3f-4ae082da1bb5"] == {
        "util": 100.0,
        "power": 681.59,
        "memory_mib": 7498.0,
    }
    assert math.isnan(got["GPU-aaaa"]["util"])
    assert len(got) == 2


def test_parse_smi_apps(gpu_check):
    text = "415, 1944\n476, 5060\n[N/A], 3\n477, [N/A]\n"
    assert gpu_check.parse_smi_apps(text) == {415: 1944.0, 476: 5060.0}


def test_percentile_and_mean(gpu_check):
    values = [float(v) for v in range(1, 101)]
    assert gpu_check.percentile(values, 50) == 50.0
    assert gpu_check.percentile(values, 99) == 99.0
    assert math.isnan(gpu_check.percentile([], 50))
    assert gpu_check.mean([1.0, float("nan"), 3.0]) == 2.0


def test_compare_passes_on_agreeing_figures(gpu_check):
    rows = gpu_check.compare(
        [99, 100], [100, 100], [690, 700], [695, 698], [7500, 7500], [7498, 7499],
        {415: 1944.0, 476: 5060.0}, {415: 1944.0, 476: 5060.0}, {476: 0.9, 415: 0.1},
        heavy=476, light=415,
    )  # fmt: skip
    assert all(r.ok for r in rows), rows


def test_compare_flags_each_mismatch(gpu_check):
    rows = gpu_check.compare(
        [50], [100], [300], [700], [100], [7500],
        {476: 5000.0}, {476: 5060.0, 415: 1944.0}, {476: 0.1, 415: 0.2},
        heavy=476, light=415,
    )  # fmt: skip
    assert [r.ok for r in rows] == [False] * len(rows)


def test_latency_rows_against_the_goal(gpu_check):
    base = [0.001] * 100
    ok = gpu_check.latency_rows(base, base)
    assert all(r.ok for r in ok)
    slow = gpu_check.latency_rows([0.0011] * 100, base)
    assert not any(r.ok for r in slow)


def test_without_nvidia_smi_it_says_so(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    assert gpu_check.main() == 2
    assert "nvidia-smi not found" in capsys.readouterr().err


def test_without_torch_it_says_so(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    assert gpu_check.main() == 2
    assert "PyTorch is not installed" in capsys.readouterr().err
