"""Test collectors and helpers for the core (the collector contract exercised for real)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterable
from types import SimpleNamespace

from prometheus_client.core import GaugeMetricFamily, Metric

from node_exporter_ml.collectors.base import AsyncCollector, BlockingCollector, NoDataError
from node_exporter_ml.config import Config, FileConfig
from node_exporter_ml.registry import Registration, load_collectors
from node_exporter_ml.series import add_sample
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


_CORE = {f.name for f in dataclasses.fields(Config)}
REGISTRY = load_collectors()
"""Every collector module imported once, at import: before any test's event loop runs."""
_SECTIONS = {r.options.name: r.options for r in REGISTRY.values() if r.options is not None}


def with_options(config: Config, **values) -> Config:
    """`config` with declared options set by their flag dests (`serving_window`,
    `drift_state_dir`, `podresources_socket`): "<section>_<field>", file keys included."""
    sections = _SECTIONS
    changed = {}
    for dest, value in values.items():
        name = next((n for n in sections if dest.startswith(f"{n}_")), None)
        if name is None:
            raise TypeError(f"{dest}: no declared section has this option")
        section = sections[name]
        current = changed.get(name) or config.section(section)
        changed[name] = dataclasses.replace(current, **{dest[len(name) + 1 :]: value})
    return config.with_options(*changed.values())


def make_config(**kw) -> Config:
    """A Config from core fields and declared options named by their dests."""
    core = {k: v for k, v in kw.items() if k in _CORE}
    return with_options(Config(**core), **{k: v for k, v in kw.items() if k not in _CORE})


def flat(parsed: Config | FileConfig) -> SimpleNamespace:
    """The core's fields and every declared option by its dest (`serving_window`), as one
    namespace: what a flat Config held before each part declared its own options."""
    if isinstance(parsed, FileConfig):
        values = {"metrics": parsed.metrics}
        for name, fields in parsed.sections.items():
            values.update({f"{name}_{k}": v for k, v in fields.items()})
        return SimpleNamespace(**values)
    values = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(Config)}
    for section in parsed.sections or _SECTIONS.values():
        options = parsed.section(section)
        for field in dataclasses.fields(options):
            values[f"{section.name}_{field.name}"] = getattr(options, field.name)
    return SimpleNamespace(**values)


def config(*names: str, **kw) -> Config:
    kw.setdefault("interval", 0.2)
    return make_config(collectors=frozenset(names), **kw)


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
