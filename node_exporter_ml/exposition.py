"""Snapshot -> metric families -> bytes, rendered once per tick in every format we serve."""

from __future__ import annotations

import gzip
import logging
import platform
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as CONTENT_TYPE_OM

from node_exporter_ml import __version__
from node_exporter_ml.cardinality import (
    PROCESS_PREFIX,
    WORKLOAD_PREFIX,
    CardinalityLimiter,
    MetricsPolicy,
)
from node_exporter_ml.collectors.base import AnyCollector
from node_exporter_ml.logonce import OnceLogger
from node_exporter_ml.snapshot import Snapshot
from node_exporter_ml.textformat import LabelCache, render_openmetrics, render_text

log = logging.getLogger(__name__)

CONTENT_TYPE_TEXT = CONTENT_TYPE_PLAIN_0_0_4
CONTENT_TYPE_OPENMETRICS = CONTENT_TYPE_OM
GZIP_LEVEL = 6
MAX_SUBSETS = 16  # collect[] bodies kept per tick; others are formatted per request
_PER_COLLECTOR = frozenset({"nodeml_collector_success", "nodeml_collector_duration_seconds"})


Format = tuple[bool, bool]
"""(openmetrics, gzip): one of the four bodies a scrape can ask for."""


class Rendered:
    """One tick's metric families, and the bodies formatted from them so far.

    Families are collected once per tick. Each format (text or OpenMetrics, plain or
    gzipped) is formatted at most once per tick: the sampler pre-renders the formats
    scraped recently, and a scrape asking for a new one formats it once, off the loop.
    """

    def __init__(
        self,
        families: Sequence[Metric],
        taken_at: float,
        labels: LabelCache | None = None,
        owners: Sequence[str] | None = None,
    ) -> None:
        self.families = tuple(families)
        self.taken_at = taken_at
        # The collector each family came from; "" for the agent's own (always served).
        self.owners = tuple(owners) if owners is not None else ("",) * len(self.families)
        self._labels = labels if labels is not None else LabelCache()
        # Keyed by format and `collect[]` selection (None: every collector).
        self._bodies: dict[tuple[Format, frozenset[str] | None], bytes] = {}
        self._lock = threading.RLock()  # ensure() of a gzip body ensures the plain one

    def get(self, fmt: Format, only: frozenset[str] | None = None) -> bytes | None:
        """The body in this format if it was formatted already (never blocks)."""
        return self._bodies.get((fmt, only))

    def ensure(self, fmt: Format, only: frozenset[str] | None = None) -> bytes:
        """Format (once) and return the body; CPU work, call it off the event loop.

        `only` (a `collect[]` scrape) keeps these collectors' families and the agent's own,
        with `nodeml_collector_*` rows of these collectors only. At most MAX_SUBSETS bodies
        of selections are kept.
        """
        key = (fmt, only)
        with self._lock:
            body = self._bodies.get(key)
            if body is not None:
                return body
            om, gz = fmt
            if gz:  # compress the plain body of the same format, itself made once
                body = gzip.compress(self.ensure((om, False), only), GZIP_LEVEL, mtime=0)
            else:
                families = self.families if only is None else self.select(only)
                body = (render_openmetrics if om else render_text)(families, self._labels)
            if only is None or sum(k[1] is not None for k in self._bodies) < MAX_SUBSETS:
                self._bodies[key] = body
            return body

    def select(self, collectors: frozenset[str]) -> list[Metric]:
        """The families of `collectors` and the agent's own, self-health rows filtered."""
        out = []
        for owner, family in zip(self.owners, self.families, strict=True):
            if owner:
                if owner in collectors:
                    out.append(family)
                continue
            if family.name in _PER_COLLECTOR:
                kept = Metric(family.name, family.documentation, family.type, family.unit)
                kept.samples = [s for s in family.samples if s.labels["collector"] in collectors]
                family = kept
            out.append(family)
        return out

    @property
    def text(self) -> bytes:
        """Text format 0.0.4."""
        return self.ensure((False, False))

    @property
    def text_gzip(self) -> bytes:
        """Text format 0.0.4, gzipped."""
        return self.ensure((False, True))

    @property
    def openmetrics(self) -> bytes:
        """OpenMetrics 1.0 text."""
        return self.ensure((True, False))

    @property
    def openmetrics_gzip(self) -> bytes:
        """OpenMetrics 1.0 text, gzipped."""
        return self.ensure((True, True))


def self_health_families(
    snapshot: Snapshot, interval: float, render_failed: Collection[str] = ()
) -> Iterable[Metric]:
    """nodeml_collector_success/duration, snapshot timestamp and build info.

    A collector whose families could not be built (`render_failed`) counts as failed.
    """
    success = GaugeMetricFamily(
        "nodeml_collector_success",
        "1 when the collector's last update succeeded, else 0.",
        labels=["collector"],
    )
    duration = GaugeMetricFamily(
        "nodeml_collector_duration_seconds",
        "Seconds the collector's last update took.",
        labels=["collector"],
    )
    for name, result in sorted(snapshot.results.items()):
        success.add_metric([name], 1.0 if result.success and name not in render_failed else 0.0)
        duration.add_metric([name], result.duration_seconds)
    yield success
    yield duration
    yield GaugeMetricFamily(
        "nodeml_snapshot_timestamp_seconds",
        f"Unix time the served snapshot was taken; snapshots are taken every {interval:g}s.",
        value=snapshot.taken_at,
    )
    info = GaugeMetricFamily(
        "nodeml_build_info",
        "node-exporter-ml build information.",
        labels=["version", "python_version"],
    )
    info.add_metric([__version__, platform.python_version()], 1.0)
    yield info


class SnapshotCollector:
    """A prometheus_client collector over one snapshot and the collectors that made it."""

    def __init__(
        self,
        collectors: Sequence[AnyCollector],
        interval: float,
    ) -> None:
        self.collectors = {c.name: c for c in collectors}
        self.interval = interval
        self.snapshot: Snapshot | None = None
        self.limiter = CardinalityLimiter()
        self._once = OnceLogger(log)

    def collect(self) -> Iterable[Metric]:
        """Yield every family of the current snapshot (prometheus_client's Collector API)."""
        return (family for _, family in self.owned())

    def owned(self) -> Iterable[tuple[str, Metric]]:
        """(collector name, family) of the current snapshot; "" names the agent's own."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        families: list[Metric] = []
        owner: dict[str, str] = {}
        failed = set()
        for name, result in sorted(snapshot.results.items()):
            collector = self.collectors.get(name)
            if collector is None or not result.success:
                continue
            built = self._guarded(name, collector, result.data, snapshot)
            if built is None:
                failed.add(name)
            else:
                families.extend(built)
                owner.update((family.name, name) for family in built)
        health = self_health_families(snapshot, self.interval, failed)
        # The cardinality policy may rebuild families; each keeps its collector by name (a
        # per-workload sum by its per-process source's), and what the policy adds
        # (nodeml_series_dropped_total) is the agent's own ("").
        for family in self.limiter.apply([*health, *families]):
            source = family.name.replace(WORKLOAD_PREFIX, PROCESS_PREFIX, 1)
            yield owner.get(family.name) or owner.get(source, ""), family

    def _guarded(
        self, name: str, collector: AnyCollector, data: object, snapshot: Snapshot
    ) -> list[Metric] | None:
        # A bug in one collector's rendering must not take /metrics down for the others:
        # its families are left out and its nodeml_collector_success is 0.
        try:
            families = list(collector.families(data, snapshot))
        except Exception:
            if self._once.log(logging.ERROR, name, "rendering %s failed", name):
                log.exception("rendering %s failed", name)
            return None
        if self._once.forget(name):
            log.info("rendering %s works again", name)
        return families


class _Guarded:
    """A prometheus_client collector whose failure yields nothing instead of raising."""

    def __init__(self, inner: Any, once: OnceLogger) -> None:
        self.inner = inner
        self._once = once

    def collect(self) -> Iterable[Metric]:
        name = type(self.inner).__name__
        try:
            return list(self.inner.collect())
        except Exception:
            if self._once.log(logging.ERROR, name, "%s failed", name):
                log.exception("%s failed", name)
            return []


class Renderer:
    """Renders snapshots into `Rendered` bytes; call from a worker thread (it reads /proc)."""

    def __init__(
        self,
        collectors: Sequence[AnyCollector],
        interval: float,
        process_metrics: bool = True,
        policy: MetricsPolicy | None = None,
    ) -> None:
        self.source = SnapshotCollector(collectors, interval)
        self.source.limiter.policy = policy or MetricsPolicy()
        self.labels = LabelCache()  # formatted label sets, reused across ticks
        # The agent's own process_* and python_* metrics, like every client_python exporter
        # (--web.disable-exporter-metrics leaves them out, as node_exporter's flag does).
        self.exporter = CollectorRegistry(auto_describe=False)
        if process_metrics:
            once = OnceLogger(log)
            # Registered through a guard: a failure reading /proc yields nothing, not a crash.
            spare = CollectorRegistry()
            for inner in (
                ProcessCollector(registry=spare),
                PlatformCollector(registry=spare),
                GCCollector(registry=spare),
            ):
                self.exporter.register(_Guarded(inner, once))

    def render(self, snapshot: Snapshot, formats: Iterable[Format] = ((False, False),)) -> Rendered:
        """Collect one snapshot's families and pre-format `formats` (call off the loop)."""
        self.source.snapshot = snapshot
        owned = list(self.source.owned())
        own = list(self.exporter.collect())
        rendered = Rendered(
            [f for _, f in owned] + own,
            snapshot.taken_at,
            self.labels,
            owners=[o for o, _ in owned] + [""] * len(own),
        )
        for fmt in formats:
            rendered.ensure(fmt)
        return rendered


def wants_openmetrics(accept: str) -> bool:
    """True when the Accept header prefers OpenMetrics text (as Prometheus asks for it)."""
    best_q, best_om = 0.0, False
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == "application/openmetrics-text" and q > best_q:
            best_q, best_om = q, True
        elif media in ("text/plain", "*/*", "text/*") and q > best_q:
            best_q, best_om = q, False
    return best_om


def accepts_gzip(accept_encoding: str) -> bool:
    """True when Accept-Encoding allows gzip (and does not give it q=0)."""
    for part in accept_encoding.split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        if coding.lower() in ("gzip", "*"):
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00") for p in params)
    return False


def negotiate(headers: Mapping[str, str]) -> tuple[Format, str]:
    """The format a request asks for, and its content type."""
    om = wants_openmetrics(headers.get("Accept", ""))
    gz = accepts_gzip(headers.get("Accept-Encoding", ""))
    return (om, gz), (CONTENT_TYPE_OM if om else CONTENT_TYPE_TEXT)


MAX_COLLECT_PARAMS = 64


def select_collectors(values: Sequence[str], enabled: Sequence[str]) -> frozenset[str] | None:
    """The collectors a `collect[]` query asks for (node_exporter's filter); None for all.

    Raises:
        ValueError: a name that is not an enabled collector, or too many values (400).
    """
    if not values:
        return None
    if len(values) > MAX_COLLECT_PARAMS:
        raise ValueError(f"collect[]: at most {MAX_COLLECT_PARAMS} values")
    for name in values:
        if name not in enabled:
            shown = name if len(name) <= 64 else name[:64] + "..."
            raise ValueError(
                f"collect[]: unknown or disabled collector {shown!r} "
                f"(enabled: {', '.join(sorted(enabled)) or 'none'})"
            )
    return frozenset(values)
