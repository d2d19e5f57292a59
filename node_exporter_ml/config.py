"""Flags and the YAML config file, parsed into one frozen Config; clear errors, no I/O beyond it."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import yaml

from node_exporter_ml import __version__
from node_exporter_ml.cardinality import PER_PROCESS_MODES, MetricsPolicy
from node_exporter_ml.logformat import FORMATS as LOG_FORMATS

DEFAULT_LISTEN = ":9847"
DEFAULT_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LOG_LEVELS = ("debug", "info", "warn", "error")
MAX_DURATION = 365 * 86400.0
MAX_INTEGER = 2**31 - 1
"""Largest count or size a config file may set (rows, bytes, concurrency)."""


class ConfigError(Exception):
    """A configuration problem, phrased as one line naming where and what was expected."""


def parse_duration(text: str) -> float:
    """Parse a Prometheus-style duration ("5s", "1m30s", "250ms", or bare seconds)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        if not _DURATION.match(text):
            raise ValueError(f"expected a duration like 5s, 1m or 250ms, got {text!r}") from None
        value = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    if not math.isfinite(value) or value <= 0:  # nan passes `<= 0`, and sleeps for ever
        raise ValueError(f"expected a positive duration, got {text!r}")
    if value > MAX_DURATION:
        raise ValueError(f"expected a duration of at most 365d, got {text!r}")
    return value


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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


@dataclass(frozen=True, slots=True)
class ServingTarget:
    """A model-server metrics endpoint to scrape, with an optional explicit owner."""

    url: str
    name: str | None = None
    pid: int | None = None
    container_id: str | None = None
    pod: str | None = None  # "namespace/name"

    @property
    def endpoint(self) -> tuple[str, int]:
        """(host, port) of the URL, the port defaulting by scheme; host "" when it has none."""
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def label(self) -> str:
        """The `target` label: the configured name, else host:port."""
        if self.name:
            return self.name
        host, port = self.endpoint
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ProcessMatch:
    """A rule that marks processes as inference processes by comm and/or cmdline regex."""

    comm: re.Pattern[str] | None = None
    cmdline: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class FileConfig:
    """What the YAML --config.file holds (reloaded on SIGHUP)."""

    serving_targets: tuple[ServingTarget, ...] = ()
    serving_timeout: float = 2.0
    serving_max_body_bytes: int = 16 * 1024 * 1024
    serving_concurrency: int = 16
    process_match: tuple[ProcessMatch, ...] = ()
    kube_pod_labels: tuple[str, ...] = ()
    drift_window_rows: int = 10_000
    drift_window_seconds: float | None = None
    drift_max_body_bytes: int = 64 * 1024 * 1024
    drift_max_rows: int = 1_000_000
    drift_max_columns: int = 1_000
    drift_max_models: int = 50
    drift_max_features: int = 200
    metrics: MetricsPolicy = field(default_factory=MetricsPolicy)


T = TypeVar("T")


class YamlReader:
    """Walks a YAML mapping, checking keys and types, and names the key on error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, expected: str, got: object) -> ConfigError:
        """The one-line error naming the file, the key, what was expected and what came."""
        try:
            shown = repr(got)[:200] if not isinstance(got, Mapping | list) else type(got).__name__
        except ValueError:  # an integer past Python's 4,300-digit repr limit
            shown = "a huge integer"
        return ConfigError(f"{self.source}: {key or 'top level'}: expected {expected}, got {shown}")

    def mapping(self, value: object, key: str, allowed: Sequence[str]) -> Mapping[str, Any]:
        """A mapping with only `allowed` keys ({} for None)."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, "a mapping", value)
        for k in value:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                raise ConfigError(
                    f"{self.source}: {where}: unknown key (expected one of: {', '.join(allowed)})"
                )
        return value

    def optional(
        self, m: Mapping[str, Any], key: str, name: str, read: Callable[[Any, str], T], default: T
    ) -> T:
        """`read` of m[name] (called `key.name` in errors), or `default` when it is absent."""
        return read(m[name], f"{key}.{name}") if name in m else default

    def string(self, value: object, key: str) -> str:
        """A non-empty string."""
        if not isinstance(value, str) or not value:
            raise self.fail(key, "a non-empty string", value)
        return value

    def integer(self, value: object, key: str, minimum: int = 1, maximum: int = MAX_INTEGER) -> int:
        """An integer from `minimum` to `maximum` (not a bool)."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}", value)
        if value > maximum:
            raise self.fail(key, f"an integer <= {maximum}", value)
        return value

    def duration(self, value: object, key: str) -> float:
        """Seconds, from a Prometheus-style duration ("2s", "500ms") or a number."""
        try:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ValueError
            return parse_duration(str(value))
        except ValueError:
            raise self.fail(key, "a duration like 2s or 500ms", value) from None

    def regex(self, value: object, key: str) -> re.Pattern[str]:
        """A compiled regular expression."""
        text = self.string(value, key)
        try:
            return re.compile(text)
        except re.error as err:
            raise self.fail(key, f"a regular expression ({err})", text) from None

    def items(self, value: object, key: str) -> list[Any]:
        """A list ([] for None)."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, "a list", value)
        return value


def _http_url(url: str) -> bool:
    """An http(s) URL with a host and, if any, a port in range."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range (99999)
    except ValueError:  # also a malformed IPv6 host ("http://[::1")
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _parse_target(r: YamlReader, raw: object, key: str) -> ServingTarget:
    m = r.mapping(raw, key, ("url", "name", "pid", "container_id", "pod"))
    if "url" not in m:
        raise ConfigError(f"{r.source}: {key}.url: missing (expected an http(s) URL)")
    url = r.string(m["url"], f"{key}.url")
    if not _http_url(url):
        raise r.fail(f"{key}.url", "an http(s) URL", url)
    owners = [k for k in ("pid", "container_id", "pod") if k in m]
    if len(owners) > 1:
        raise ConfigError(f"{r.source}: {key}: give at most one of pid, container_id, pod")
    pod = None
    if "pod" in m:
        pod = r.string(m["pod"], f"{key}.pod")
        if pod.count("/") != 1 or not all(pod.split("/")):
            raise r.fail(f"{key}.pod", "namespace/name", pod)
    return ServingTarget(
        url=url,
        name=r.optional(m, key, "name", r.string, None),
        pid=r.optional(m, key, "pid", r.integer, None),
        container_id=r.optional(m, key, "container_id", r.string, None),
        pod=pod,
    )


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


def parse_config_file(text: str, source: str) -> FileConfig:
    """Parse the YAML config file's text; `source` names it in errors."""
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
    top = r.mapping(raw, "", ("serving", "processes", "kube", "drift", "metrics"))
    serving = r.mapping(
        top.get("serving"), "serving", ("targets", "timeout", "max_body_bytes", "concurrency")
    )
    targets = tuple(
        _parse_target(r, t, f"serving.targets[{i}]")
        for i, t in enumerate(r.items(serving.get("targets"), "serving.targets"))
    )
    labels = [t.label for t in targets]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"{source}: serving.targets: duplicate target name {dupes[0]!r}")
    processes = r.mapping(top.get("processes"), "processes", ("match",))
    matches = []
    for i, raw_match in enumerate(r.items(processes.get("match"), "processes.match")):
        key = f"processes.match[{i}]"
        mm = r.mapping(raw_match, key, ("comm", "cmdline"))
        if not mm:
            raise ConfigError(f"{source}: {key}: expected comm and/or cmdline")
        matches.append(
            ProcessMatch(
                comm=r.optional(mm, key, "comm", r.regex, None),
                cmdline=r.optional(mm, key, "cmdline", r.regex, None),
            )
        )
    kube = r.mapping(top.get("kube"), "kube", ("pod_labels",))
    pod_labels = tuple(
        r.string(v, f"kube.pod_labels[{i}]")
        for i, v in enumerate(r.items(kube.get("pod_labels"), "kube.pod_labels"))
    )
    drift = r.mapping(
        top.get("drift"),
        "drift",
        (
            "window_rows",
            "window_seconds",
            "max_body_bytes",
            "max_rows",
            "max_columns",
            "max_models",
            "max_features",
        ),
    )
    defaults = FileConfig()
    return FileConfig(
        serving_targets=targets,
        serving_timeout=r.optional(
            serving, "serving", "timeout", r.duration, defaults.serving_timeout
        ),
        serving_max_body_bytes=r.optional(
            serving, "serving", "max_body_bytes", r.integer, defaults.serving_max_body_bytes
        ),
        serving_concurrency=r.optional(
            serving, "serving", "concurrency", r.integer, defaults.serving_concurrency
        ),
        process_match=tuple(matches),
        kube_pod_labels=pod_labels,
        drift_window_rows=r.optional(
            drift, "drift", "window_rows", r.integer, defaults.drift_window_rows
        ),
        drift_window_seconds=r.optional(drift, "drift", "window_seconds", r.duration, None),
        drift_max_body_bytes=r.optional(
            drift, "drift", "max_body_bytes", r.integer, defaults.drift_max_body_bytes
        ),
        drift_max_rows=r.optional(drift, "drift", "max_rows", r.integer, defaults.drift_max_rows),
        drift_max_columns=r.optional(
            drift, "drift", "max_columns", r.integer, defaults.drift_max_columns
        ),
        drift_max_models=r.optional(
            drift, "drift", "max_models", r.integer, defaults.drift_max_models
        ),
        drift_max_features=r.optional(
            drift, "drift", "max_features", r.integer, defaults.drift_max_features
        ),
        metrics=_parse_metrics(r, top.get("metrics")),
    )


def load_config_file(path: str | None) -> FileConfig:
    """Read and parse --config.file (an empty FileConfig when no file is given)."""
    if not path:
        return FileConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: expected UTF-8 text") from None
    return parse_config_file(text, path)


# --- flags ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """The agent's whole configuration: flags plus the config file."""

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
    cgroupfs: str = "/sys/fs/cgroup"
    collectors: frozenset[str] = frozenset()
    nvml_replay: str | None = None
    nvml_expected_gpus: int | None = None
    log_level: str = "info"
    log_format: str = "logfmt"
    state_dir: str = "/var/lib/node-exporter-ml"
    serving_window: float = 60.0
    serving_baseline: float = 900.0
    serving_discover: bool = False
    kube_api_url: str | None = None
    kube_kubeconfig: str | None = None
    kube_token_file: str = DEFAULT_TOKEN_FILE
    kube_ca_file: str = DEFAULT_CA_FILE
    kube_node_name: str | None = None
    kube_kubelet_url: str | None = None
    kube_pod_resources_socket: str = DEFAULT_POD_RESOURCES_SOCKET
    drift_interval: float = 60.0
    drift_token_file: str | None = None
    file: FileConfig = field(default_factory=FileConfig)

    @property
    def timeout(self) -> float:
        """How long one collector may take in one tick."""
        return self.collector_timeout or max(0.1, self.interval * 0.8)


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


def _seconds(value: float) -> str:
    """A default duration as the flag takes it: whole minutes past one as `15m`, else seconds."""
    if value > 60 and value % 60 == 0:
        return f"(default: {value / 60:g}m)"
    return f"(default: {value:g}s)"


def build_parser(collectors: Mapping[str, bool]) -> argparse.ArgumentParser:
    """The flag parser; `collectors` maps each registered collector to its default."""
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
        "--nvml.replay",
        dest="nvml_replay",
        metavar="FILE",
        help="drive the nvml collector from a replay file instead of the driver",
    )
    a(
        "--nvml.expected-gpus",
        dest="nvml_expected_gpus",
        type=int,
        default=None,
        metavar="N",
        help="GPUs this node should have; fewer is a `lost` health failure "
        "(default: the count seen at the first successful tick)",
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
    a(
        "--state.dir",
        dest="state_dir",
        default="/var/lib/node-exporter-ml",
        metavar="DIR",
        help="where the drift store (SQLite) keeps references and windows",
    )
    a(
        "--serving.window",
        dest="serving_window",
        type=_duration_arg,
        default=60.0,
        metavar="DURATION",
        help=f"window of the served latency quantiles, mean and rate {_seconds(60.0)}",
    )
    a(
        "--serving.baseline",
        dest="serving_baseline",
        type=_duration_arg,
        default=900.0,
        metavar="DURATION",
        help=f"window of the latency baseline regressions are measured against {_seconds(900.0)}",
    )
    a(
        "--serving.discover",
        dest="serving_discover",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="probe inference processes' listening sockets for model servers",
    )
    a(
        "--kube.api-url",
        dest="kube_api_url",
        metavar="URL",
        help="API server URL (default: --kube.kubeconfig's, else in-cluster from "
        "KUBERNETES_SERVICE_HOST)",
    )
    a(
        "--kube.kubeconfig",
        dest="kube_kubeconfig",
        metavar="FILE",
        help="kubeconfig to reach the API server outside a pod (client certificates or "
        "bearer tokens; exec plugins are refused)",
    )
    # Defaults are the in-cluster service account's files; a path given here must exist.
    a(
        "--kube.token-file",
        dest="kube_token_file",
        default=None,
        metavar="FILE",
        help=f"API server bearer token (default: {DEFAULT_TOKEN_FILE})",
    )
    a(
        "--kube.ca-file",
        dest="kube_ca_file",
        default=None,
        metavar="FILE",
        help=f"API server CA bundle (default: {DEFAULT_CA_FILE})",
    )
    a(
        "--kube.node-name",
        dest="kube_node_name",
        default=None,
        metavar="NAME",
        help="this node's name (default: $NODE_NAME)",
    )
    a(
        "--kube.kubelet-url",
        dest="kube_kubelet_url",
        metavar="URL",
        help="read pods from the kubelet's /pods endpoint instead of the API server",
    )
    a(
        "--kube.pod-resources-socket",
        dest="kube_pod_resources_socket",
        default=DEFAULT_POD_RESOURCES_SOCKET,
        metavar="PATH",
        help="the kubelet's pod-resources gRPC socket (which pod holds which GPU)",
    )
    a(
        "--drift.interval",
        dest="drift_interval",
        type=_duration_arg,
        default=60.0,
        metavar="DURATION",
        help=f"how often stored models' drift is re-evaluated {_seconds(60.0)}",
    )
    a(
        "--drift.token-file",
        dest="drift_token_file",
        metavar="FILE",
        help="bearer token required by the drift API's write endpoints",
    )
    return p


_RESERVED_PATHS = ("/", "/healthz", "/readyz")
_RESERVED_PREFIXES = ("/api/", "/drift/")


def _check_telemetry_path(path: str) -> None:
    if not path.startswith("/") or path in _RESERVED_PATHS or path.startswith(_RESERVED_PREFIXES):
        raise ConfigError(
            f"--web.telemetry-path: expected a path starting with / other than "
            f"{', '.join(_RESERVED_PATHS)} and /api/..., /drift/..., got {path!r}"
        )


def parse_args(argv: Sequence[str] | None, collectors: Mapping[str, bool]) -> Config:
    """Parse flags and the config file into a Config.

    Raises:
        ConfigError: a flag value or the config file is wrong (argparse errors exit 2 itself).
    """
    ns = build_parser(collectors).parse_args(argv)
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
    if ns.nvml_expected_gpus is not None and ns.nvml_expected_gpus < 1:
        raise ConfigError("--nvml.expected-gpus: expected an integer >= 1")
    for flag, path in (
        ("--path.procfs", ns.procfs),
        ("--path.sysfs", ns.sysfs),
        ("--path.cgroupfs", ns.cgroupfs),
    ):
        if not os.path.isdir(path):
            raise ConfigError(f"{flag}: {path}: expected a readable directory")
    for flag, path in (
        ("--nvml.replay", ns.nvml_replay),
        ("--kube.kubeconfig", ns.kube_kubeconfig),
        ("--web.config.file", ns.web_config_file),
        ("--drift.token-file", ns.drift_token_file),
        ("--kube.token-file", ns.kube_token_file),
        ("--kube.ca-file", ns.kube_ca_file),
    ):
        if path and not os.path.isfile(path):
            what = "expected a file, got a directory" if os.path.isdir(path) else "no such file"
            raise ConfigError(f"{flag}: {path}: {what}")
    _check_telemetry_path(ns.telemetry_path)
    for flag, url in (
        ("--kube.api-url", ns.kube_api_url),
        ("--kube.kubelet-url", ns.kube_kubelet_url),
    ):
        if url is not None and not _http_url(url):
            raise ConfigError(f"{flag}: expected an http(s) URL, got {url!r}")
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
        nvml_replay=ns.nvml_replay,
        nvml_expected_gpus=ns.nvml_expected_gpus,
        log_level=ns.log_level,
        log_format=ns.log_format,
        state_dir=ns.state_dir,
        serving_window=ns.serving_window,
        serving_baseline=ns.serving_baseline,
        serving_discover=ns.serving_discover,
        kube_api_url=ns.kube_api_url,
        kube_kubeconfig=ns.kube_kubeconfig,
        kube_token_file=ns.kube_token_file or DEFAULT_TOKEN_FILE,
        kube_ca_file=ns.kube_ca_file or DEFAULT_CA_FILE,
        kube_node_name=ns.kube_node_name or os.environ.get("NODE_NAME") or None,
        kube_kubelet_url=ns.kube_kubelet_url,
        kube_pod_resources_socket=ns.kube_pod_resources_socket,
        drift_interval=ns.drift_interval,
        drift_token_file=ns.drift_token_file,
        file=load_config_file(ns.config_file),
    )
