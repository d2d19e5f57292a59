"""The collector registry: one `@register_collector` line per collector file.

Each line says what the collector produces and what it reads from a snapshot, as typed
keys (`@register_collector("cgroup", produces=CGROUP, reads={PROCESS: "cgroup selection"})`),
each read with the feature it feeds. Correlation steps (enrichers) register next to the
collector that owns them with `register_enricher`, with the steps they must run after and
what they read. At startup `check_enabled` warns once per disabled collector that an enabled
collector or enricher reads, naming the flag and the features lost.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from node_exporter_ml.collectors.base import AnyCollector, Collector
from node_exporter_ml.options import Section
from node_exporter_ml.sampler import Enricher
from node_exporter_ml.snapshot import DataKey

if TYPE_CHECKING:
    from node_exporter_ml.settings import Config

log = logging.getLogger(__name__)

D = TypeVar("D")

Reads = Mapping[DataKey[Any], str]
"""Keys read from a snapshot, each with the feature it feeds ("cgroup selection")."""

_NO_READS: Reads = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Registration:
    """A registered collector: its class, default, what it makes and reads, its options."""

    name: str
    factory: type[AnyCollector]
    default_enabled: bool
    help: str
    produces: DataKey[Any] | None = None
    reads: Reads = field(default_factory=dict)
    options: Section[Any] | None = None


@dataclass(frozen=True, slots=True)
class EnricherRegistration:
    """A correlation step: how to build it, its owners, its order and its reads.

    It runs while any of its owners (the collectors whose data it works on) is enabled.
    """

    name: str
    factory: Callable[[Config], Enricher]
    owners: tuple[str, ...]
    after: tuple[str, ...] = ()
    reads: Reads = field(default_factory=dict)


_REGISTRY: dict[str, Registration] = {}
_ENRICHERS: dict[str, EnricherRegistration] = {}


def register_collector(
    name: str,
    *,
    produces: DataKey[D],
    reads: Reads = _NO_READS,
    default_enabled: bool = True,
    options: Section[Any] | None = None,
) -> Callable[[type[Collector[D]]], type[Collector[D]]]:
    """Class decorator: make a collector known to the flags, the sampler and the checks.

    `produces` is the key of what its update() returns (named as the collector);
    `reads` the keys it uses from the previous or the current snapshot; `options` the
    flags and config-file keys it declares (composed into the parser and the file schema).
    """
    if produces.name != name:
        raise ValueError(f"collector {name!r} produces {produces.name!r}: a key names its maker")

    def decorate(cls: type[Collector[D]]) -> type[Collector[D]]:
        if name in _REGISTRY and _REGISTRY[name].factory is not cls:
            raise ValueError(f"collector {name!r} registered twice")
        cls.name = name
        doc = (cls.__doc__ or "").strip().splitlines()
        help_line = doc[0] if doc else ""
        _REGISTRY[name] = Registration(
            name, cls, default_enabled, help_line, produces, reads, options
        )
        return cls

    return decorate


def register_enricher(
    name: str,
    factory: Callable[[Config], Enricher],
    *,
    owners: tuple[str, ...],
    after: tuple[str, ...] = (),
    reads: Reads = _NO_READS,
) -> None:
    """Make a correlation step known; call it next to the collector that owns it."""
    if name in _ENRICHERS and _ENRICHERS[name].factory is not factory:
        raise ValueError(f"enricher {name!r} registered twice")
    _ENRICHERS[name] = EnricherRegistration(name, factory, owners, after, reads)


def load_collectors() -> dict[str, Registration]:
    """Import every module of `node_exporter_ml.collectors` and return the registry."""
    from node_exporter_ml import collectors

    for module in pkgutil.iter_modules(collectors.__path__):
        if module.name != "base":
            importlib.import_module(f"{collectors.__name__}.{module.name}")
    return dict(sorted(_REGISTRY.items()))


def active_enrichers(
    registry: Mapping[str, Registration], enabled: Collection[str]
) -> list[EnricherRegistration]:
    """The enrichers of `registry`'s collectors that run with `enabled`, in run order.

    Each runs after the steps its `after` names (those that run at all); otherwise in
    registration order.

    Raises:
        ValueError: the `after` declarations form a cycle.
    """
    active = [
        e for e in _ENRICHERS.values() if any(o in registry and o in enabled for o in e.owners)
    ]
    names = {e.name for e in active}
    ordered: list[EnricherRegistration] = []
    done: set[str] = set()
    while len(ordered) < len(active):
        ready = [
            e
            for e in active
            if e.name not in done and all(a in done or a not in names for a in e.after)
        ]
        if not ready:
            cycle = sorted(names - done)
            raise ValueError(f"enrichers {', '.join(cycle)} wait for each other")
        ordered.append(ready[0])
        done.add(ready[0].name)
    return ordered


def lost_features(
    registry: Mapping[str, Registration],
    enabled: Collection[str],
    enrichers: Iterable[EnricherRegistration],
) -> dict[str, list[str]]:
    """Per disabled collector that something enabled reads: the features it takes away.

    Readers are the enabled collectors and `enrichers`; a key whose collector is not
    registered at all is not counted (nothing could turn it on).
    """
    readers = [registry[n].reads for n in registry if n in enabled]
    readers += [e.reads for e in enrichers]
    lost: dict[str, list[str]] = {}
    for reads in readers:
        for key, feature in reads.items():
            if key.name in registry and key.name not in enabled:
                features = lost.setdefault(key.name, [])
                if feature not in features:
                    features.append(feature)
    return dict(sorted(lost.items()))


def check_enabled(
    registry: Mapping[str, Registration],
    enabled: Collection[str],
    enrichers: Iterable[EnricherRegistration],
) -> None:
    """Log one warning per disabled collector whose data an enabled part reads."""
    for name, features in lost_features(registry, enabled, enrichers).items():
        log.warning(
            "--no-collector.%s takes away: %s (--collector.%s turns it back on)",
            name,
            "; ".join(features),
            name,
        )
