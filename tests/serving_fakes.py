"""Build snapshot data from the real H100 neighbour recording (a fake at the NVML boundary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from node_exporter_ml.serving.data import ModelStats, ServingData, TargetStatus
from node_exporter_ml.serving.window import WindowStats
from node_exporter_ml.snapshot import GpuProcessSample, GpuSample, NvmlData
from tests.paths import NEIGHBOUR_NVML, NEIGHBOUR_SERVING, SERVING_FIXTURES

NVML_RECORDING = NEIGHBOUR_NVML
SERVING_RECORDING = NEIGHBOUR_SERVING
__all__ = ["NVML_RECORDING", "SERVING_FIXTURES", "SERVING_RECORDING", "load", "nvml_frame"]

# nvmlClocksEventReasons bits, named as the nvml collector names them.
CLOCK_EVENT_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def nvml_frame(recording: dict[str, Any], i: int) -> NvmlData:
    """NvmlData as the nvml collector reports frame `i` (ratios 0-1, hertz, watts)."""
    frame = recording["frames"][i]
    devices = []
    for static, d in zip(recording["devices"], frame["devices"], strict=True):
        utilization = {u["pid"]: u for u in d.get("process_utilization", [])}
        processes = tuple(
            GpuProcessSample(
                pid=p["pid"],
                used_memory_bytes=p["used_memory_bytes"],
                sm_ratio=utilization[p["pid"]]["sm"] / 100 if p["pid"] in utilization else 0.0,
                memory_ratio=utilization[p["pid"]]["mem"] / 100 if p["pid"] in utilization else 0.0,
            )
            for p in d.get("processes", [])
        )
        gpm = d.get("gpm", {})
        mask = d.get("clocks_event_reasons", 0)
        devices.append(
            GpuSample(
                index=static["index"],
                uuid=static["uuid"],
                name=static["name"],
                utilization_ratio=d["utilization"]["gpu"] / 100,
                memory_used_bytes=d["memory"]["used"],
                memory_total_bytes=d["memory"]["total"],
                power_watts=d["power_mw"] / 1000,
                power_limit_watts=static["power_limit_mw"] / 1000,
                temperature_celsius=d["temperature_c"],
                sm_clock_hertz=d["clock_mhz"]["sm"] * 1e6,
                max_sm_clock_hertz=static["max_clock_mhz"]["sm"] * 1e6,
                sm_active_ratio=gpm["sm_util"] / 100 if "sm_util" in gpm else None,
                sm_occupancy_ratio=gpm["sm_occupancy"] / 100 if "sm_occupancy" in gpm else None,
                tensor_active_ratio=gpm["tensor_util"] / 100 if "tensor_util" in gpm else None,
                dram_active_ratio=gpm["dram_bw_util"] / 100 if "dram_bw_util" in gpm else None,
                clock_events=frozenset(n for bit, n in CLOCK_EVENT_BITS.items() if mask & bit),
                processes=processes,
            )
        )
    return NvmlData(driver_version=recording["driver_version"], devices=tuple(devices))


def one_model(rate: float, latency: float, framework: str, **owner: Any) -> ServingData:
    """One scraped target "model" serving model "m" over a 60 s window at `rate` requests
    per second and `latency` seconds (mean and p50); `owner` sets `pid` or `socket_pid`."""
    stats = WindowStats(
        seconds=60.0, requests=rate * 60, requests_per_second=rate, mean_seconds=latency,
        quantiles=((0.5, latency),),
    )  # fmt: skip
    target = TargetStatus(
        name="model", url="http://127.0.0.1:8000/metrics", source="config", up=True,
        framework=framework, models=(ModelStats("m", None, stats),), **owner,
    )  # fmt: skip
    return ServingData(targets=(target,))
