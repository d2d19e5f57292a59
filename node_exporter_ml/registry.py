"""The collector registry: one `@register_collector` line per collector file."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node_exporter_ml.collectors.base import Collector
from node_exporter_ml.options import Section


@dataclass(frozen=True, slots=True)
class Registration:
    """A registered collector class, whether it is on by default, and its declared options."""

    name: str
    factory: type[Collector]
    default_enabled: bool
    help: str
    options: Section[Any] | None = None


_REGISTRY: dict[str, Registration] = {}


def register_collector(
    name: str, *, default_enabled: bool = True, options: Section[Any] | None = None
) -> Callable[[type[Collector]], type[Collector]]:
    """Class decorator: make a collector (and its flags and file keys) known to the agent."""

    def decorate(cls: type[Collector]) -> type[Collector]:
        if name in _REGISTRY and _REGISTRY[name].factory is not cls:
            raise ValueError(f"collector {name!r} registered twice")
        cls.name = name
        doc = (cls.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Registration(name, cls, default_enabled, doc[0] if doc else "", options)
        return cls

    return decorate


def load_collectors() -> dict[str, Registration]:
    """Import every module of `node_exporter_ml.collectors` and return the registry."""
    from node_exporter_ml import collectors

    for module in pkgutil.iter_modules(collectors.__path__):
        if module.name != "base":
            importlib.import_module(f"{collectors.__name__}.{module.name}")
    return dict(sorted(_REGISTRY.items()))
