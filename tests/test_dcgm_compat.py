"""deploy/prometheus/rules/dcgm-compat.rules.yml under promtool, fed the NVML replays' values.

The input series are the nvml collector's golden expositions of two replays (an H100 with
GPM metrics, and a two-GPU node with reserved memory, violations and remapped rows), as two
scrape targets; one GPU is allocated to a pod. The expected DCGM_FI_* samples are computed
here from the same values with dcgm-exporter's units (default-counters.csv), independently
of the rules' PromQL, and promtool checks every one of them.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deployfiles import PROM, promtool

pytestmark = pytest.mark.integration

RULES = PROM / "rules" / "dcgm-compat.rules.yml"
GOLDEN = Path(__file__).parent / "fixtures" / "nvml" / "golden"
TARGETS = {
    "gpu-node-a:9847": GOLDEN / "h100-neighbour-frame24.prom",
    "10.0.0.7:9847": GOLDEN / "multi-gpu-frame03.prom",
}
JOB = "node-exporter-ml"
POD = {"namespace": "ml", "pod": "vllm-0", "container": "server"}

# dcgm-exporter field -> (our series, its label filter, factor to dcgm-exporter's unit)
FIELDS: dict[str, tuple[str, dict[str, str], float]] = {
    "DCGM_FI_DEV_SM_CLOCK": ("nodeml_gpu_sm_clock_hertz", {}, 1e-6),  # MHz
    "DCGM_FI_DEV_MEM_CLOCK": ("nodeml_gpu_memory_clock_hertz", {}, 1e-6),
    "DCGM_FI_DEV_MEMORY_TEMP": ("nodeml_gpu_memory_temperature_celsius", {}, 1),
    "DCGM_FI_DEV_GPU_TEMP": ("nodeml_gpu_temperature_celsius", {}, 1),
    "DCGM_FI_DEV_POWER_USAGE": ("nodeml_gpu_power_watts", {}, 1),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("nodeml_gpu_energy_joules_total", {}, 1000),  # mJ
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": ("nodeml_gpu_pcie_replays_total", {}, 1),
    "DCGM_FI_DEV_GPU_UTIL": ("nodeml_gpu_utilization_ratio", {}, 100),  # %
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("nodeml_gpu_memory_copy_utilization_ratio", {}, 100),
    "DCGM_FI_DEV_ENC_UTIL": ("nodeml_gpu_encoder_utilization_ratio", {}, 100),
    "DCGM_FI_DEV_DEC_UTIL": ("nodeml_gpu_decoder_utilization_ratio", {}, 100),
    "DCGM_FI_DEV_FB_FREE": ("nodeml_gpu_memory_free_bytes", {}, 1 / 1048576),  # MiB
    "DCGM_FI_DEV_FB_USED": ("nodeml_gpu_memory_used_bytes", {}, 1 / 1048576),
    "DCGM_FI_DEV_FB_RESERVED": ("nodeml_gpu_memory_reserved_bytes", {}, 1 / 1048576),
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": (
        "nodeml_gpu_remapped_rows_total", {"error": "correctable"}, 1),
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": (
        "nodeml_gpu_remapped_rows_total", {"error": "uncorrectable"}, 1),
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": ("nodeml_gpu_row_remap_failure", {}, 1),
    "DCGM_FI_DEV_POWER_VIOLATION": (
        "nodeml_gpu_clock_violation_seconds_total", {"policy": "power"}, 1e9),  # ns
    "DCGM_FI_DEV_THERMAL_VIOLATION": (
        "nodeml_gpu_clock_violation_seconds_total", {"policy": "thermal"}, 1e9),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("nodeml_gpu_graphics_active_ratio", {}, 1),
    "DCGM_FI_PROF_SM_ACTIVE": ("nodeml_gpu_sm_active_ratio", {}, 1),
    "DCGM_FI_PROF_SM_OCCUPANCY": ("nodeml_gpu_sm_occupancy_ratio", {}, 1),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": ("nodeml_gpu_tensor_active_ratio", {}, 1),
    "DCGM_FI_PROF_DRAM_ACTIVE": ("nodeml_gpu_dram_active_ratio", {}, 1),
    "DCGM_FI_PROF_PCIE_TX_BYTES": ("nodeml_gpu_pcie_transmit_bytes_per_second", {}, 1),
    "DCGM_FI_PROF_PCIE_RX_BYTES": ("nodeml_gpu_pcie_receive_bytes_per_second", {}, 1),
}  # fmt: skip


def _number(value: float) -> str:
    """A value promtool's series notation reads exactly (no exponent: `e+09` reads as a step)."""
    return format(Decimal(repr(value)), "f")


def _series(labels: dict[str, str], name: str) -> str:
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{body}}}"


def scrape_samples() -> list[tuple[str, dict[str, str], float]]:
    """(name, labels with job and instance, value) of every GPU-level sample of the replays."""
    out = []
    for instance, path in TARGETS.items():
        for fam in text_string_to_metric_families(path.read_text()):
            for s in fam.samples:
                if s.name.startswith("nodeml_gpu_") and "pid" not in s.labels:
                    out.append((s.name, {**s.labels, "job": JOB, "instance": instance}, s.value))
    return out


def gpu_labels(info: dict[str, str]) -> dict[str, str]:
    """dcgm-exporter's label set of a GPU, from our nodeml_gpu_info labels."""
    return {
        "job": info["job"],
        "instance": info["instance"],
        "gpu": info["gpu"],
        "uuid": info["uuid"],
        "UUID": info["uuid"],
        "modelName": info["name"],
        "pci_bus_id": info["pci_bus_id"],
        "device": f"nvidia{info['gpu']}",
        "Hostname": info["instance"].rsplit(":", 1)[0],
        "DCGM_FI_DRIVER_VERSION": info["driver_version"],
    }


def build_test(tmp_path: Path) -> tuple[Path, int]:
    samples = scrape_samples()
    infos = [labels for name, labels, _ in samples if name == "nodeml_gpu_info"]
    assert len(infos) == 3, "two replays: one H100, two GPUs"
    allocated = infos[0]  # the H100 is allocated to a pod
    alloc = {k: allocated[k] for k in ("job", "instance", "gpu", "uuid")} | POD
    series = [{"series": _series(labels, name), "values": f"{_number(value)}x5"}
              for name, labels, value in samples]  # fmt: skip
    series.append({"series": _series(alloc, "nodeml_gpu_allocation_info"), "values": "1x5"})
    tests, checked = [], 0
    for field, (ours, match, factor) in FIELDS.items():
        expected = []
        for name, labels, value in samples:
            if name != ours or any(labels.get(k) != v for k, v in match.items()):
                continue
            info = next(i for i in infos if (i["instance"], i["uuid"]) ==
                        (labels["instance"], labels["uuid"]))  # fmt: skip
            want = gpu_labels(info) | (POD if info is allocated else {})
            expected.append({"labels": _series(want, field), "value": value * factor})
        tests.append({"expr": field, "eval_time": "1m", "exp_samples": expected})
        checked += len(expected)
    doc = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "dcgm-compat.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, checked


def test_rules_are_valid():
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dcgm_names_labels_and_units_from_the_replays(tmp_path):
    path, checked = build_test(tmp_path)
    assert checked >= 50  # every field that the replays have, on each GPU that has it
    proc = promtool("test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_wrong_unit_is_caught(tmp_path):
    """The check above can fail: GPU utilisation left as a ratio is not dcgm-exporter's %."""
    broken = tmp_path / RULES.name
    broken.write_text(RULES.read_text().replace("nodeml_gpu_utilization_ratio * 100",
                                                "nodeml_gpu_utilization_ratio"))  # fmt: skip
    path, _ = build_test(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["rule_files"] = [str(broken)]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = promtool("test", "rules", str(path))
    assert proc.returncode != 0
    assert "DCGM_FI_DEV_GPU_UTIL" in proc.stdout + proc.stderr
