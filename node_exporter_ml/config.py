"""Flags and the YAML config file into one frozen Config: the core's, and every part's options.

Clear errors, no I/O beyond reading the file. The core owns the web, sampler, path, log and
collector-selection flags and the file's `metrics:` section. Every other option is declared
once by its part (options.py; e.g. `NVML_OPTIONS` next to the nvml collector) and reaches the parser
and the file schema through the registry: adding an option touches only the file that
declares it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import yaml

from node_exporter_ml import __version__
from node_exporter_ml.cardinality import PER_PROCESS_MODES, MetricsPolicy
from node_exporter_ml.logformat import FORMATS as LOG_FORMATS
from node_exporter_ml.options import ConfigError, Section, YamlReader, existing_file, parse_duration
from node_exporter_ml.options import duration_arg as _duration_arg
from node_exporter_ml.options import seconds_default as _seconds
from node_exporter_ml.registry import load_collectors
from node_exporter_ml.settings import DEFAULT_LISTEN, Config, FileConfig

__all__ = [  # ConfigError, YamlReader and parse_duration are the core's to import from here
    "Config",
    "ConfigError",
    "FileConfig",
    "YamlReader",
    "build_parser",
    "declared_sections",
    "load_config_file",
    "parse_args",
    "parse_config_file",
    "parse_duration",
    "parse_listen_address",
    "reload_config",
]

_LOG_LEVELS = ("debug", "info", "warn", "error")


def declared_sections() -> tuple[Section[Any], ...]:
    """The option sections of every registered collector, in registry order."""
    return tuple(r.options for r in load_collectors().values() if r.options is not None)


def parse_listen_address(text: str) -> tuple[str, int]:
    """Split "host:port", ":port" or "[v6]:port" into (host, port); host "" means all."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port or :port, got {text!r}")
    return host.strip("[]"), int(port)


def _listen_arg(text: str) -> str:
    try:
        parse_listen_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


# --- the config file ------------------------------------------------------------------------


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _parse_metrics(r: YamlReader, raw: object) -> MetricsPolicy:
    m = r.mapping(raw, "metrics", ("drop_labels", "drop_families", "per_process", "max_processes"))
    labels = []
    for i, v in enumerate(r.items(m.get("drop_labels"), "metrics.drop_labels")):
        label = r.string(v, f"metrics.drop_labels[{i}]")
        if not _LABEL_NAME.match(label):
            raise r.fail(f"metrics.drop_labels[{i}]", "a label name", label)
        labels.append(label)
    globs = tuple(
        r.string(v, f"metrics.drop_families[{i}]")
        for i, v in enumerate(r.items(m.get("drop_families"), "metrics.drop_families"))
    )
    mode = r.optional(m, "metrics", "per_process", r.string, "series")
    if mode not in PER_PROCESS_MODES:
        raise r.fail("metrics.per_process", " or ".join(PER_PROCESS_MODES), mode)
    limit = r.optional(m, "metrics", "max_processes", r.integer, MetricsPolicy().max_processes)
    return MetricsPolicy(tuple(labels), globs, mode, limit)


def _file_sections(sections: Sequence[Section[Any]] | None) -> tuple[Section[Any], ...]:
    """The sections with a part in the config file (every declared one when None)."""
    chosen = declared_sections() if sections is None else tuple(sections)
    return tuple(s for s in chosen if s.file_key is not None)


def parse_config_file(
    text: str, source: str, sections: Sequence[Section[Any]] | None = None
) -> FileConfig:
    """Parse the YAML config file's text; `source` names it in errors.

    `sections` are the declared option sections whose keys the file may hold (every
    registered collector's when None), next to the core's `metrics:`.
    """
    r = YamlReader(source)
    try:
        raw = yaml.safe_load(text)
    except ValueError as err:  # an integer past Python's 4,300-digit limit
        raise ConfigError(f"{source}: expected valid YAML ({err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "document"
        raise ConfigError(
            f"{source}: {where}: expected valid YAML ({err.__class__.__name__})"
        ) from None
    in_file = _file_sections(sections)
    top = r.mapping(raw, "", [*(cast(str, s.file_key) for s in in_file), "metrics"])
    return FileConfig(
        metrics=_parse_metrics(r, top.get("metrics")),
        sections={s.name: s.from_file(r, top.get(cast(str, s.file_key))) for s in in_file},
    )


def load_config_file(
    path: str | None, sections: Sequence[Section[Any]] | None = None
) -> FileConfig:
    """Read and parse --config.file (every section's defaults when no file is given)."""
    if not path:
        return parse_config_file("", "defaults", sections)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: expected UTF-8 text") from None
    return parse_config_file(text, path, sections)


# --- flags ----------------------------------------------------------------------------------


def reload_config(config: Config) -> Config:
    """`config` with --config.file read again (flags are kept), as on SIGHUP.

    Raises:
        ConfigError: the file is now invalid.
    """
    sections = declared_sections() if config.sections is None else config.sections
    file = load_config_file(config.config_file, sections)
    options = {
        s.options: dataclasses.replace(config.section(s), **file.sections[s.name])
        for s in sections
        if s.name in file.sections
    }
    return dataclasses.replace(config, file=file, options={**config.options, **options})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other startup error; the usage is one --help away.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, as kingpin prints it for node_exporter."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(default, bool):
            shown = "true" if default else "false"
        elif default is None:
            shown = "none"
        else:
            shown = "%(default)s"
        return f"{text} (default: {shown})"


def build_parser(
    collectors: Mapping[str, bool], sections: Sequence[Section[Any]] | None = None
) -> argparse.ArgumentParser:
    """The flag parser: the core's flags, then every section's (registered ones when None).

    `collectors` maps each registered collector to whether it is on by default.
    """
    p = _Parser(
        prog="node-exporter-ml",
        description="Node agent for GPU inference fleets: Prometheus metrics for GPUs, "
        "inference processes, their pods, model-server latency and data drift.",
        formatter_class=_HelpFormatter,
    )
    a = p.add_argument
    a("--version", action="version", version=f"node-exporter-ml {__version__}")
    a(
        "--web.listen-address",
        dest="listen_address",
        type=_listen_arg,
        default=DEFAULT_LISTEN,
        metavar="ADDRESS",
        help="host:port or :port to serve metrics, the API and the landing page on",
    )
    a(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_true",
        help="serve on the socket systemd passes (socket activation, LISTEN_FDS) "
        "instead of --web.listen-address",
    )
    a(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="exporter-toolkit web config (TLS, basic auth)",
    )
    a(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path of the metrics endpoint",
    )
    a(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="leave out the agent's own process_* and python_* metrics",
    )
    a(
        "--web.max-requests",
        dest="max_requests",
        type=int,
        default=40,
        metavar="N",
        help="concurrent requests served before answering 503 (0: no limit)",
    )
    a(
        "--web.idle-timeout",
        dest="idle_timeout",
        type=_duration_arg,
        default=30.0,
        metavar="DURATION",
        help=f"close a connection idle, or sending its request headers, this long {_seconds(30.0)}",
    )
    a("--config.file", dest="config_file", metavar="FILE", help="YAML config file")
    a(
        "--sampler.interval",
        dest="interval",
        type=_duration_arg,
        default=5.0,
        metavar="DURATION",
        help=f"how often every collector is run and the metrics re-rendered {_seconds(5.0)}",
    )
    a(
        "--collector.timeout",
        dest="collector_timeout",
        type=_duration_arg,
        default=None,
        metavar="DURATION",
        help="per-collector time limit per tick (default: 0.8 x --sampler.interval)",
    )
    a(
        "--path.procfs",
        dest="procfs",
        default="/proc",
        metavar="DIR",
        help="procfs mountpoint (the host's, in a container)",
    )
    a(
        "--path.sysfs",
        dest="sysfs",
        default="/sys",
        metavar="DIR",
        help="sysfs mountpoint; --path.cgroupfs is DIR/fs/cgroup unless given",
    )
    a(
        "--path.cgroupfs",
        dest="cgroupfs",
        default=None,
        metavar="DIR",
        help="cgroup filesystem mountpoint (default: --path.sysfs + /fs/cgroup)",
    )
    a(
        "--collector.disable-defaults",
        dest="disable_defaults",
        action="store_true",
        help="start with every collector off; enable them one by one",
    )
    for name, default in collectors.items():
        a(
            f"--collector.{name}",
            dest=f"collector_{name}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"enable the {name} collector (default: {'on' if default else 'off'})",
        )
    a(
        "--log.level",
        dest="log_level",
        choices=_LOG_LEVELS,
        default="info",
        help="only log messages at this level or above",
    )
    a(
        "--log.format",
        dest="log_format",
        choices=LOG_FORMATS,
        default="logfmt",
        help="log line format on stderr, as promslog writes it",
    )
    for section in declared_sections() if sections is None else sections:
        section.add_flags(p)
    return p


_RESERVED_PATHS = ("/", "/healthz", "/readyz")
_RESERVED_PREFIXES = ("/api/", "/drift/")


def _check_telemetry_path(path: str) -> None:
    if not path.startswith("/") or path in _RESERVED_PATHS or path.startswith(_RESERVED_PREFIXES):
        raise ConfigError(
            f"--web.telemetry-path: expected a path starting with / other than "
            f"{', '.join(_RESERVED_PATHS)} and /api/..., /drift/..., got {path!r}"
        )


def parse_args(
    argv: Sequence[str] | None,
    collectors: Mapping[str, bool],
    sections: Sequence[Section[Any]] | None = None,
) -> Config:
    """Parse flags and the config file into a Config.

    `sections` are the parts' declared options (every registered collector's when None).

    Raises:
        ConfigError: a flag value or the config file is wrong (argparse errors exit 2 itself).
    """
    sections = declared_sections() if sections is None else tuple(sections)
    ns = build_parser(collectors, sections).parse_args(argv)
    if ns.cgroupfs is None:  # node_exporter's layout: cgroups are mounted under sysfs
        ns.cgroupfs = os.path.join(ns.sysfs, "fs", "cgroup")
    enabled = set()
    for name, default in collectors.items():
        flag = getattr(ns, f"collector_{name}")
        if flag is None:
            flag = default and not ns.disable_defaults
        if flag:
            enabled.add(name)
    if ns.max_requests < 0:
        raise ConfigError("--web.max-requests: expected an integer >= 0")
    for flag, path in (
        ("--path.procfs", ns.procfs),
        ("--path.sysfs", ns.sysfs),
        ("--path.cgroupfs", ns.cgroupfs),
    ):
        if not os.path.isdir(path):
            raise ConfigError(f"{flag}: {path}: expected a readable directory")
    existing_file("--web.config.file", ns.web_config_file)
    _check_telemetry_path(ns.telemetry_path)
    from_flags = {s.name: s.from_flags(ns) for s in sections}
    file = load_config_file(ns.config_file, sections)
    return Config(
        listen_address=ns.listen_address,
        systemd_socket=ns.systemd_socket,
        disable_exporter_metrics=ns.disable_exporter_metrics,
        web_config_file=ns.web_config_file,
        telemetry_path=ns.telemetry_path,
        max_requests=ns.max_requests,
        idle_timeout=ns.idle_timeout,
        config_file=ns.config_file,
        interval=ns.interval,
        collector_timeout=ns.collector_timeout,
        procfs=ns.procfs,
        sysfs=ns.sysfs,
        cgroupfs=ns.cgroupfs,
        collectors=frozenset(enabled),
        log_level=ns.log_level,
        log_format=ns.log_format,
        file=file,
        options={
            s.options: s.build({**from_flags[s.name], **file.sections.get(s.name, {})})
            for s in sections
        },
        sections=sections,
    )
