"""The tasks the drift service sends to its worker processes (see `drift.worker`).

Each worker keeps one `DriftService` per configuration, never started: its parsing and
evaluation methods are pure, and for window reports it opens its own connection to the
service's SQLite store (WAL mode lets it read while the agent writes), with its own reference
cache. So the agent sends a method name and a body, and gets back a report or packed table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node_exporter_ml.drift.service import DriftService, Limits
from node_exporter_ml.drift.store import Window

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What a worker needs to build the service's twin: its state, window and limits."""

    state_dir: str
    window: Window
    limits: Limits


_SERVICES: dict[ServiceConfig, DriftService] = {}


def _twin(config: ServiceConfig) -> DriftService:
    service = _SERVICES.get(config)
    if service is None:
        # One configuration at a time in practice; a reload makes a new twin.
        for old in _SERVICES.values():
            old.store.close()
        _SERVICES.clear()
        service = _SERVICES[config] = DriftService(
            config.state_dir, window=config.window, limits=config.limits
        )
    return service


def call_method(config: ServiceConfig, method: str, *args: Any) -> Any:
    """``DriftService.<method>(*args)`` on this worker's twin of the agent's service."""
    service = _twin(config)
    if method == "window_report" and not service.store.is_open:
        service.store.open(lock=False)  # the agent holds the state directory's lock
    fn: Callable[..., Any] = getattr(service, method)
    return fn(*args)
