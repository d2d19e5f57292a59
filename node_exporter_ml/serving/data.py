"""What the serving collector and the latency-cause enricher put into a Snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from node_exporter_ml.serving.causes import CauseReport
from node_exporter_ml.serving.window import WindowStats
from node_exporter_ml.snapshot import DataKey


@dataclass(frozen=True, slots=True)
class ModelStats:
    """One model of one target over the current window."""

    model: str
    version: str | None
    window: WindowStats


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """One model-server target in one tick: how its scrape went and its models' windows.

    The owner is what the config (or pod annotation) declared, `pid`, `container_id` or
    `pod` ("namespace/name"); without one, `socket_pid` is the process found listening
    on the target's port.
    """

    name: str
    url: str
    source: str
    up: bool
    reason: str | None = None
    framework: str | None = None
    pid: int | None = None
    container_id: str | None = None
    pod: str | None = None
    socket_pid: int | None = None
    models: tuple[ModelStats, ...] = ()
    scrape_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ServingData:
    """What the serving collector returns: every target, and its scrape-error counters."""

    targets: tuple[TargetStatus, ...] = ()
    errors_total: Mapping[tuple[str, str], int] = field(default_factory=dict)
    window_seconds: float = 60.0


SERVING = DataKey("serving", ServingData)


@dataclass(frozen=True, slots=True)
class ServingCauses:
    """What LatencyCauses puts in `snapshot.derived["serving"]`: a report per target and model."""

    reports: Mapping[tuple[str, str, str | None], CauseReport] = field(default_factory=dict)
    baseline_seconds: float = 900.0


SERVING_CAUSES = DataKey("serving", ServingCauses)
"""Where LatencyCauses puts its reports: `snapshot.derived_data(SERVING_CAUSES)`."""
