"""Test collectors and helpers for the core (the collector contract exercised for real)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from node_exporter_ml.collectors.base import AsyncCollector, BlockingCollector, NoDataError
from node_exporter_ml.config import Config
from node_exporter_ml.exposition import add_sample
from node_exporter_ml.registry import Registration
from node_exporter_ml.snapshot import Snapshot


class CountingCollector(BlockingCollector[dict[str, float]]):
    """Reports a growing set of things; `vanish` makes thing 0 disappear."""

    name = "counting"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.calls = 0
        self.vanish = False

    def update(self, previous: Snapshot | None) -> dict[str, float]:
        self.calls += 1
        things = {f"thing{i}": float(i + self.calls) for i in range(3)}
        if self.vanish:
            things.pop("thing0")
        return things

    def families(self, data: dict[str, float], snapshot: Snapshot) -> Iterable[Metric]:
        fam = GaugeMetricFamily("nodeml_test_thing_value", "A test value per thing.")
        for thing, value in sorted(data.items()):
            add_sample(fam, {"thing": thing}, value)
        yield fam


class SlowCollector(BlockingCollector[str]):
    """Blocks its worker thread until released (a hung NVML call)."""

    name = "slow"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.release = threading.Event()

    def update(self, previous: Snapshot | None) -> str:
        self.release.wait(10)
        return "late"

    def families(self, data: str, snapshot: Snapshot) -> Iterable[Metric]:
        yield GaugeMetricFamily("nodeml_test_slow", "Slow.", value=1)


class FailingCollector(BlockingCollector[None]):
    name = "failing"

    def update(self, previous: Snapshot | None) -> None:
        raise RuntimeError("device on fire")

    def families(self, data: None, snapshot: Snapshot) -> Iterable[Metric]:
        return []


class NoDataCollector(BlockingCollector[None]):
    name = "nodata"

    def update(self, previous: Snapshot | None) -> None:
        raise NoDataError("no NVIDIA devices visible")

    def families(self, data: None, snapshot: Snapshot) -> Iterable[Metric]:
        return []


class SleepyAsyncCollector(AsyncCollector[float]):
    name = "sleepy"

    async def update(self, previous: Snapshot | None) -> float:
        await asyncio.sleep(30)
        return 1.0

    def families(self, data: float, snapshot: Snapshot) -> Iterable[Metric]:
        return []


class BrokenRenderCollector(BlockingCollector[int]):
    name = "broken_render"

    def update(self, previous: Snapshot | None) -> int:
        return 1

    def families(self, data: int, snapshot: Snapshot) -> Iterable[Metric]:
        yield GaugeMetricFamily("nodeml_test_half", "Never seen.", value=1)
        raise ValueError("bug in rendering")


def registry(*classes: type) -> dict[str, Registration]:
    return {c.name: Registration(c.name, c, True, "") for c in classes}


def config(*names: str, **kw) -> Config:
    kw.setdefault("interval", 0.2)
    return Config(collectors=frozenset(names), **kw)


def wait_until(predicate, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


async def wait_ready(client, seconds=5.0):
    """Poll /readyz of an aiohttp test client until it answers 200 (else AssertionError)."""
    for _ in range(int(seconds / 0.02)):
        if (await client.get("/readyz")).status == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never ready")
