"""Helpers for the nvml tests: a collector on a replay file with a controllable clock."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.nvml import NvmlCollector
from node_exporter_ml.snapshot import CollectorResult, NvmlData, Snapshot
from tests.helpers import make_config
from tests.paths import FIXTURES, NEIGHBOUR_NVML

NEIGHBOUR = NEIGHBOUR_NVML
NVML_FIXTURES = FIXTURES / "nvml"
START = 1_000_000.0


class Clock:
    """A hand-moved clock; `at_frame(i)` puts it in the middle of replay frame i."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def at_frame(self, i: int, period: float = 1.0) -> None:
        self.now = START + i * period + period / 2


def scenario(name: str) -> Path:
    return NVML_FIXTURES / f"{name}.nvml.json"


def make_collector(
    path: Path | str, clock: Clock, interval: float = 1.0, **kwargs: object
) -> NvmlCollector:
    config = make_config(nvml_replay=str(path), interval=interval)
    return NvmlCollector(CollectContext(config), clock=clock, **kwargs)  # type: ignore[arg-type]


def snapshot_of(data: NvmlData, workloads: dict[int, dict[str, str]] | None = None) -> Snapshot:
    return Snapshot(
        taken_at=START,
        results={"nvml": CollectorResult("nvml", True, 0.0, data)},
        workloads=workloads or {},
    )


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(collector: NvmlCollector, data: NvmlData, snapshot: Snapshot | None = None) -> bytes:
    """The collector's families as Prometheus text, through a real client_python registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(collector.families(data, snapshot or snapshot_of(data))))
    return generate_latest(registry)


def values(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse exposition text into {(sample name, labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: bytes, metric: str, /, **labels: str) -> float | None:
    """The one sample of `metric` whose labels include `labels` (None if absent)."""
    hits = [
        v for (n, ls), v in values(text).items() if n == metric and set(labels.items()) <= set(ls)
    ]
    assert len(hits) <= 1, f"{metric}{labels} matches {len(hits)} series"
    return hits[0] if hits else None


def run_to(
    collector: NvmlCollector, clock: Clock, last: int, step: int = 1, *, first: int = 0
) -> NvmlData:
    """Tick once per `step` frames from `first` to `last` (inclusive); the last tick's data."""
    data = None
    for i in range(first, last + 1, step):
        clock.at_frame(i)
        data = collector.update(None)
    assert data is not None
    return data
