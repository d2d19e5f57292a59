"""The serving collector's options: --serving.* flags and the config file's `serving:` section.

Read by the serving collector (targets, scrape limits, windows), its latency-cause
enricher (windows) and the process collector (the configured targets' owners).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from urllib.parse import urlsplit

from node_exporter_ml.options import (
    ConfigError,
    Section,
    YamlReader,
    duration_arg,
    flag,
    http_url,
    seconds_default,
    yaml_key,
)


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


def _read_target(r: YamlReader, raw: object, key: str) -> ServingTarget:
    m = r.mapping(raw, key, ("url", "name", "pid", "container_id", "pod"))
    if "url" not in m:
        raise ConfigError(f"{r.source}: {key}.url: missing (expected an http(s) URL)")
    url = r.string(m["url"], f"{key}.url")
    if not http_url(url):
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


def _read_targets(r: YamlReader, raw: object, key: str) -> tuple[ServingTarget, ...]:
    targets = tuple(_read_target(r, t, f"{key}[{i}]") for i, t in enumerate(r.items(raw, key)))
    labels = [t.label for t in targets]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"{r.source}: {key}: duplicate target name {dupes[0]!r}")
    return targets


@dataclass(frozen=True, slots=True)
class ServingOptions:
    """The serving collector's options (flags, then the file's `serving:` keys)."""

    window: float = flag(
        "--serving.window",
        60.0,
        type=duration_arg,
        metavar="DURATION",
        help=f"window of the served latency quantiles, mean and rate {seconds_default(60.0)}",
    )
    baseline: float = flag(
        "--serving.baseline",
        900.0,
        type=duration_arg,
        metavar="DURATION",
        help="window of the latency baseline regressions are measured against "
        + seconds_default(900.0),
    )
    discover: bool = flag(
        "--serving.discover",
        False,
        action=argparse.BooleanOptionalAction,
        help="probe inference processes' listening sockets for model servers",
    )
    targets: tuple[ServingTarget, ...] = yaml_key("targets", (), _read_targets)
    timeout: float = yaml_key("timeout", 2.0, YamlReader.duration)
    max_body_bytes: int = yaml_key("max_body_bytes", 16 * 1024 * 1024, YamlReader.integer)
    concurrency: int = yaml_key("concurrency", 16, YamlReader.integer)


SERVING_OPTIONS: Section[ServingOptions] = Section("serving", ServingOptions, file_key="serving")
