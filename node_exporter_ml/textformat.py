"""Text 0.0.4 and OpenMetrics formatting with a label-string cache, byte-identical to client_python.

client_python validates and escapes every label of every sample on every render; with
thousands of per-process series that is most of a tick's CPU (bench/nvml_tick.py). Our
series keep their label sets from tick to tick, so each label set is formatted once (with
client_python's own escaping functions) and reused. Families this fast path does not cover
(timestamps, exemplars, histograms, `_created` samples, non-legacy names) are formatted by
client_python itself. tests/test_textformat.py proves the output identical.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as om
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

_LEGACY_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LEGACY_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_FAST_TYPES = frozenset({"gauge", "counter"})
LabelKey = tuple[tuple[str, str], ...]


class _One:
    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Sequence[Metric]:
        return [self.metric]


class LabelCache:
    """Formatted label strings by label set, for both formats; bounded in size."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.text: dict[LabelKey, str] = {}
        self.openmetrics: dict[LabelKey, str] = {}
        self.max_entries = max_entries

    def trim(self) -> None:
        """Forget everything when a churn of label sets has filled the cache."""
        if len(self.text) > self.max_entries or len(self.openmetrics) > self.max_entries:
            self.text.clear()
            self.openmetrics.clear()


def _fast(metric: Metric) -> bool:
    if metric.type not in _FAST_TYPES or not _LEGACY_NAME.match(metric.name):
        return False
    created = metric.name + "_created"
    for s in metric.samples:
        if s.timestamp is not None or s.exemplar is not None or s.native_histogram is not None:
            return False
        if s.name == created:
            return False
    return True


def _escape_text(value: str) -> str:
    # client_python's text exposition passes False as the rune check (unused with UTF-8).
    return om._escape(value, om.ALLOWUTF8, False)  # type: ignore[arg-type]


def _escape_om(value: str) -> str:
    return om._escape(value, om.ALLOWUTF8, om._is_legacy_labelname_rune)


def _text_labels(key: LabelKey) -> str:
    inner = ",".join(
        f'{om.escape_label_name(k, om.UNDERSCORES)}="{_escape_text(v)}"' for k, v in sorted(key)
    )
    return "{" + inner + "}" if inner else ""


def _om_labels(key: LabelKey) -> str:
    inner = ",".join(
        f'{om.escape_label_name(k, om.UNDERSCORES)}="{_escape_om(v)}"' for k, v in sorted(key)
    )
    return "{" + inner + "}" if inner else ""


def _labels_ok(key: LabelKey) -> bool:
    return all(_LEGACY_LABEL.match(k) for k, _ in key)


class _FallbackError(Exception):
    """A label name that needs client_python's escaping: format the family with it."""


def _family_text(metric: Metric, labels: dict[LabelKey, str]) -> str:
    mname = metric.name + "_total" if metric.type == "counter" else metric.name
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    out = [f"# HELP {mname} {doc}\n# TYPE {mname} {metric.type}\n"]
    for s in metric.samples:
        key = tuple(s.labels.items())
        text = labels.get(key)
        if text is None:
            if not _labels_ok(key):
                raise _FallbackError
            text = labels[key] = _text_labels(key)
        out.append(f"{s.name}{text} {_value(s.value)}\n")
    return "".join(out)


def _family_openmetrics(metric: Metric, labels: dict[LabelKey, str]) -> str:
    doc = om._escape(metric.documentation, om.ALLOWUTF8, om._is_legacy_labelname_rune)
    out = [f"# HELP {metric.name} {doc}\n# TYPE {metric.name} {metric.type}\n"]
    for s in metric.samples:
        key = tuple(s.labels.items())
        text = labels.get(key)
        if text is None:
            if not _labels_ok(key):
                raise _FallbackError
            text = labels[key] = _om_labels(key)
        out.append(f"{s.name}{text} {_value(s.value)}\n")
    return "".join(out)


def render_text(families: Iterable[Metric], cache: LabelCache) -> bytes:
    """Text format 0.0.4, as prometheus_client.exposition.generate_latest writes it."""
    out: list[str] = []
    for metric in families:
        try:
            if not _fast(metric):
                raise _FallbackError
            out.append(_family_text(metric, cache.text))
        except _FallbackError:
            out.append(generate_latest(_One(metric)).decode())
    cache.trim()
    return "".join(out).encode("utf-8")


def render_openmetrics(families: Iterable[Metric], cache: LabelCache) -> bytes:
    """OpenMetrics 1.0 text, as prometheus_client's openmetrics generate_latest writes it."""
    out: list[str] = []
    for metric in families:
        try:
            if not _fast(metric) or metric.unit:
                raise _FallbackError
            out.append(_family_openmetrics(metric, cache.openmetrics))
        except _FallbackError:
            body = generate_openmetrics(_One(metric)).decode()  # type: ignore[no-untyped-call]
            out.append(body.removesuffix("# EOF\n"))
    out.append("# EOF\n")
    cache.trim()
    return "".join(out).encode("utf-8")


def _value(value: float) -> str:
    return floatToGoString(value)  # type: ignore[no-untyped-call,no-any-return]
