"""The agent's configuration as data: Config (flags and options) and FileConfig (the file).

Plain frozen values with no parsing and no knowledge of the registry, so the collector
framework (collectors/base.py, registry.py) can name them without importing the parser:
config.py builds them from the flags and the file, composing every collector's declared
options through the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from node_exporter_ml.cardinality import MetricsPolicy
from node_exporter_ml.options import Section

DEFAULT_LISTEN = ":9847"
OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True, slots=True)
class FileConfig:
    """What the YAML --config.file holds (reloaded on SIGHUP).

    `sections` maps each declared section's name to the values of its file fields
    (every field, defaults included); `metrics` is the core's own section.
    """

    metrics: MetricsPolicy = field(default_factory=MetricsPolicy)
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Config:
    """The agent's whole configuration: the core's flags, the file, and every part's options.

    A part reads its own options, typed, with `section(SECTION)`; a Config built without
    them (tests) gives that section's defaults.
    """

    listen_address: str = DEFAULT_LISTEN
    systemd_socket: bool = False
    disable_exporter_metrics: bool = False
    web_config_file: str | None = None
    telemetry_path: str = "/metrics"
    max_requests: int = 40
    idle_timeout: float = 30.0
    config_file: str | None = None
    interval: float = 5.0
    collector_timeout: float | None = None
    procfs: str = "/proc"
    sysfs: str = "/sys"
    """Only the root --path.cgroupfs defaults under; no collector reads sysfs itself."""
    cgroupfs: str = "/sys/fs/cgroup"
    collectors: frozenset[str] = frozenset()
    log_level: str = "info"
    log_format: str = "logfmt"
    file: FileConfig = field(default_factory=FileConfig)
    options: Mapping[type[Any], Any] = field(default_factory=dict, hash=False)
    """Each section's options object, keyed by its dataclass (compared, not hashed)."""
    sections: tuple[Section[Any], ...] | None = None
    """The sections the flags and the file were parsed with (None: every registered one)."""

    @property
    def timeout(self) -> float:
        """How long one collector may take in one tick."""
        return self.collector_timeout or max(0.1, self.interval * 0.8)

    def section(self, section: Section[OptionsT]) -> OptionsT:
        """The options a part declared in `section`, as parsed (its defaults if absent)."""
        found = self.options.get(section.options)
        return cast(OptionsT, found) if found is not None else section.build({})

    def with_options(self, *options: object) -> Config:
        """This configuration with these options objects in place of their sections'."""
        return dataclasses.replace(self, options={**self.options, **{type(o): o for o in options}})
