"""Text 0.0.4 and OpenMetrics formatting with a label-string cache, byte-identical to client_python.

client_python validates and escapes every label of every sample on every render; with
thousands of per-process series that is most of a tick's CPU (bench/nvml_tick.py). Our
series keep their label sets from tick to tick, so each label set is formatted once (with
client_python's own escaping functions) and reused. Families this fast path does not cover
(timestamps, exemplars, histograms, `_created` samples, non-legacy names) are formatted by
client_python itself. tests/test_textformat.py proves the output identical.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as om
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from node_exporter_ml.logonce import OnceLogger

log = logging.getLogger(__name__)
_ONCE = OnceLogger(log)

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


def _labels(key: LabelKey, escape: Callable[[str], str]) -> str:
    inner = ",".join(
        f'{om.escape_label_name(k, om.UNDERSCORES)}="{escape(v)}"' for k, v in sorted(key)
    )
    return "{" + inner + "}" if inner else ""


def _text_labels(key: LabelKey) -> str:
    return _labels(key, _escape_text)


def _om_labels(key: LabelKey) -> str:
    return _labels(key, _escape_om)


def _labels_ok(key: LabelKey) -> bool:
    return all(_LEGACY_LABEL.match(k) for k, _ in key)


class _FallbackError(Exception):
    """A label name that needs client_python's escaping: format the family with it."""


def _samples(
    metric: Metric, labels: dict[LabelKey, str], format_labels: Callable[[LabelKey], str]
) -> Iterator[str]:
    """One line a sample, each label set formatted once and kept in `labels`."""
    for s in metric.samples:
        key = tuple(s.labels.items())
        text = labels.get(key)
        if text is None:
            if not _labels_ok(key):
                raise _FallbackError
            text = labels[key] = format_labels(key)
        yield f"{s.name}{text} {_value(s.value)}\n"


def _family_text(metric: Metric, labels: dict[LabelKey, str]) -> str:
    mname = metric.name + "_total" if metric.type == "counter" else metric.name
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    header = f"# HELP {mname} {doc}\n# TYPE {mname} {metric.type}\n"
    return header + "".join(_samples(metric, labels, _text_labels))


def _family_openmetrics(metric: Metric, labels: dict[LabelKey, str]) -> str:
    if metric.unit:
        raise _FallbackError
    doc = _escape_om(metric.documentation)
    header = f"# HELP {metric.name} {doc}\n# TYPE {metric.name} {metric.type}\n"
    return header + "".join(_samples(metric, labels, _om_labels))


def _render(
    families: Iterable[Metric],
    labels: dict[LabelKey, str],
    family: Callable[[Metric, dict[LabelKey, str]], str],
    fallback: Callable[[Metric], str],
) -> list[str]:
    """Each family by the fast path, or by client_python where the fast path does not fit."""
    out: list[str] = []
    for metric in families:
        try:
            out.append(_format(metric, labels, family, fallback))
        except Exception:  # a malformed sample (e.g. a non-numeric value): a collector's bug
            # The family is left out; the rest of the exposition is still served.
            if _ONCE.log(logging.ERROR, metric.name, "formatting %s failed", metric.name):
                log.exception("formatting %s failed", metric.name)
    return out


def _format(
    metric: Metric,
    labels: dict[LabelKey, str],
    family: Callable[[Metric, dict[LabelKey, str]], str],
    fallback: Callable[[Metric], str],
) -> str:
    try:
        if not _fast(metric):
            raise _FallbackError
        return family(metric, labels)
    except _FallbackError:
        pass
    try:
        return fallback(metric)
    except UnicodeEncodeError:  # client_python encodes itself; see _encode
        return fallback(_utf8_safe(metric))


def _encode(text: str) -> bytes:
    """UTF-8, with any lone surrogate (a string no UTF-8 can hold) written as "?".

    Strings from outside are refused where they enter; this is the last guard, so that
    nothing stored can ever stop the exposition from rendering.
    """
    return text.encode("utf-8", "replace")


def _utf8_safe(metric: Metric) -> Metric:
    """A copy of `metric` whose HELP and label values all encode as UTF-8."""

    def safe(value: str) -> str:
        return _encode(value).decode("utf-8")

    copy = Metric(metric.name, safe(metric.documentation), metric.type, metric.unit)
    copy.samples = [
        s._replace(labels={k: safe(v) for k, v in s.labels.items()}) for s in metric.samples
    ]
    return copy


def render_text(families: Iterable[Metric], cache: LabelCache) -> bytes:
    """Text format 0.0.4, as prometheus_client.exposition.generate_latest writes it."""
    out = _render(families, cache.text, _family_text, lambda m: generate_latest(_One(m)).decode())
    cache.trim()
    return _encode("".join(out))


def _openmetrics_fallback(metric: Metric) -> str:
    body: bytes = generate_openmetrics(_One(metric))  # type: ignore[no-untyped-call]
    return body.decode().removesuffix("# EOF\n")


def render_openmetrics(families: Iterable[Metric], cache: LabelCache) -> bytes:
    """OpenMetrics 1.0 text, as prometheus_client's openmetrics generate_latest writes it."""
    out = _render(families, cache.openmetrics, _family_openmetrics, _openmetrics_fallback)
    out.append("# EOF\n")
    cache.trim()
    return _encode("".join(out))


def _value(value: float) -> str:
    return floatToGoString(value)  # type: ignore[no-untyped-call,no-any-return]
