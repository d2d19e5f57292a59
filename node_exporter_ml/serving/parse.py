"""A fast, pure parser of Prometheus text (0.0.4) and OpenMetrics expositions.

prometheus_client's `text_string_to_metric_families` needs ~200 ms for 1 MB of text; a
model server's scrape every few seconds, times dozens of targets, cannot afford that. This
parser splits lines with str methods, parses each distinct label set once (a caller-owned
cache makes repeated scrapes of one target nearly free) and keeps the samples of a family
together without renaming anything: a counter without `_total` (Triton, TorchServe, TGI,
TF Serving) stays under its own name, colons (`vllm:`, `:tensorflow:`) are kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field

Labels = Mapping[str, str]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(?:,|\Z)')
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_BLANKS = re.compile(r"[ \t]+")
"""What separates a sample's tokens in the text format: spaces and tabs."""
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_ESCAPE = re.compile(r"\\[\\\"n]")
_SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count", "_created", "_gsum", "_gcount"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("_sum", "_count", "_created"),
    "counter": ("_total", "_created"),
    "info": ("_info",),
}
EMPTY_LABELS: Labels = {}
LABEL_CACHE_LIMIT = 50_000


class ParseError(ValueError):
    """The text is not a Prometheus exposition (line number and what was wrong)."""


@dataclass(slots=True)
class Family:
    """A metric family: its TYPE (untyped when none was given) and its samples in order."""

    name: str
    type: str = "untyped"
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def series(self, suffix: str = "") -> Iterator[tuple[Labels, float]]:
        """The (labels, value) of the samples named `name + suffix`."""
        wanted = self.name + suffix
        for name, labels, value in self.samples:
            if name == wanted:
                yield labels, value


@dataclass(slots=True)
class Exposition:
    """A parsed exposition: families by name, in the order they appeared."""

    families: dict[str, Family] = field(default_factory=dict)
    openmetrics: bool = False

    def get(self, name: str) -> Family | None:
        """The family called `name`, also under its other counter spelling (`x` / `x_total`)."""
        fam = self.families.get(name)
        if fam is None:
            other = name[:-6] if name.endswith("_total") else name + "_total"
            fam = self.families.get(other)
        return fam

    def names(self) -> Iterator[str]:
        """The names of the families that hold at least one sample."""
        return (n for n, f in self.families.items() if f.samples)


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], value)


def _blank(name: str) -> bool:
    return " " in name or "\t" in name


def _timestamp(token: str) -> tuple[int, int]:
    """A sample timestamp as (seconds, nanoseconds), the precision OpenMetrics keeps."""
    if "_" in token:
        raise ValueError(f"bad timestamp {token[:40]!r}")
    sec, dot, frac = token.partition(".")
    if dot and sec.lstrip("-").isdigit() and frac.isdigit():
        nanos = int(frac[:9].ljust(9, "0"))  # "-0.5" is minus half a second, as float() has it
        return int(sec), -nanos if sec.startswith("-") else nanos
    if not dot and token.lstrip("-").isdigit():
        return int(token), 0
    stamp = float(token)  # "1e3"; float() raises ValueError on anything else
    if not math.isfinite(stamp):
        raise ValueError(f"bad timestamp {token[:40]!r}")
    return int(stamp), round((stamp - int(stamp)) * 1e9)


def parse_labels(text: str) -> dict[str, str]:
    """Parse the inside of `{...}` (`a="x",b="y"`, trailing comma allowed)."""
    if "\\" not in text:
        # No escapes: no value holds a quote, so the quotes split names from values.
        parts = text.split('"')
        if len(parts) % 2 == 1 and parts[-1].strip() in ("", ","):
            fast: dict[str, str] = {}
            for i in range(0, len(parts) - 1, 2):
                head = parts[i].strip()
                if i:
                    if not head.startswith(","):
                        break
                    head = head[1:].lstrip()
                if not head.endswith("="):
                    break
                name = head[:-1].rstrip()
                if not _LABEL_NAME.match(name):
                    break
                fast[name] = parts[i + 1]
            else:
                return fast
    labels: dict[str, str] = {}
    pos, end = 0, len(text)
    while pos < end:
        if text[pos:].strip() == "":
            break
        m = _LABEL.match(text, pos)
        if m is None:
            raise ValueError(f"bad label set {{{text}}}")
        value = m.group(2)
        labels[m.group(1)] = _unescape(value) if "\\" in value else value
        pos = m.end()
    return labels


def _split_name(line: str) -> tuple[str, str]:
    """(name, rest) at the first blanks: spaces or, as the text format allows, tabs."""
    name, *rest = _BLANKS.split(line, 1)
    return name, rest[0] if rest else ""


def _split_labels(line: str, brace: int) -> tuple[str, str]:
    """Return (label text, rest after the closing brace), honouring quoted braces.

    The slow path: the caller takes the first "}" itself unless a value may hold a brace or
    an escaped quote (a backslash, an odd number of quotes, no "}" at all).
    """
    quoted, escaped = False, False
    for i in range(brace + 1, len(line)):
        ch = line[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "}" and not quoted:
            return line[brace + 1 : i], line[i + 1 :]
    raise ValueError("unterminated label set")


def parse_exposition(
    text: str,
    label_cache: MutableMapping[str, tuple[str, Labels]] | None = None,
    keep: Callable[[str], bool] | None = None,
) -> Exposition:
    """Parse a Prometheus text or OpenMetrics exposition.

    Args:
        text: the body as served.
        label_cache: optional memo of a sample's `name{labels}` text -> (name, labels),
            owned by the caller (one per target): the series of a server repeat scrape
            after scrape. Parsed label mappings are shared and must not be mutated.
        keep: optional filter on the names of TYPE-declared families: the samples of a
            family it rejects are skipped unparsed (a profile needs a few families of a
            scrape that may hold hundreds).

    Returns:
        The families by name; a sample with no TYPE line becomes an untyped family.

    Raises:
        ParseError: a line is neither a comment nor a valid sample.
    """
    cache: MutableMapping[str, tuple[str, Labels]] = {} if label_cache is None else label_cache
    if len(cache) > LABEL_CACHE_LIMIT:
        cache.clear()
    families: dict[str, Family] = {}
    owner: dict[str, Family] = {}  # sample name -> family, for names with suffixes
    fam: Family | None = None
    samples: list[tuple[str, Labels, float]] = []
    last_name = "\n"  # no sample yet: never a name, so a nameless `{a="b"} 1` is checked too
    openmetrics = False
    lineno = 0
    cached = cache.get
    number = float
    stamped: set[tuple[str, tuple[tuple[str, str], ...], tuple[int, int]]] = set()
    skipping = "\n"  # the name of a family whose samples are skipped (never a line prefix)
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        first = line[0]
        if first == "#":
            if line.startswith("# TYPE "):
                parts = line.split(None, 3)
                if len(parts) < 4 or not _NAME.match(parts[2]):
                    raise ParseError(f"line {lineno}: bad TYPE line")
                name, kind = parts[2], parts[3].strip().lower()
                if keep is not None and not keep(name):
                    skipping, fam, last_name = name, None, "\n"
                    continue
                skipping = "\n"
                fam = families.get(name)
                if fam is None:
                    fam = families[name] = Family(name, kind)
                else:
                    fam.type = kind
                samples, last_name = fam.samples, "\n"
                for suffix in _SUFFIXES.get(kind, ()):
                    owner[name + suffix] = fam
                owner[name] = fam
            elif line.startswith("# EOF"):
                openmetrics = True
                break
            continue
        if first == " " or first == "\t":
            line = line.strip()
            if not line:
                continue
        if line.startswith(skipping):
            continue
        brace = line.find("{")
        try:
            if brace >= 0:
                close = line.find("}", brace)
                head = line[: close + 1]
                hit = cached(head) if close > 0 else None
                if hit is not None:
                    name, labels = hit
                    rest = line[close + 1 :]
                elif _blank(name := line[:brace].rstrip()):
                    # `a_total 0 123 # {a="b"} 0.5`: the brace opens an exemplar.
                    name, rest = _split_name(line)
                    labels = EMPTY_LABELS
                else:
                    label_text = line[brace + 1 : close]
                    if close < 0 or "\\" in label_text or label_text.count('"') & 1:
                        label_text, rest = _split_labels(line, brace)
                        head = ""  # a brace inside a value: not memoised
                    else:
                        rest = line[close + 1 :]
                    labels = parse_labels(label_text) if label_text else EMPTY_LABELS
                    if head:
                        cache[head] = (name, labels)
            else:
                name, rest = _split_name(line)
                labels = EMPTY_LABELS
            try:
                value = number(rest)  # float() strips the surrounding blanks itself
                token = rest
            except ValueError:
                # "<value> <timestamp>", or an OpenMetrics exemplar after " # "
                parts = rest.split(None, 2)
                if not parts:
                    raise ValueError("missing value") from None
                token = parts[0]
                value = float(token)
                if len(parts) > 1 and parts[1] != "#":
                    stamp = (name, tuple(labels.items()), _timestamp(parts[1]))
                    if stamp in stamped:
                        continue  # the same series at the same instant: the first one counts
                    stamped.add(stamp)
            if "_" in token:  # float() takes "1_000"; the exposition format does not
                raise ValueError(f"bad value {token.strip()[:40]!r}")
        except (ValueError, IndexError) as err:
            raise ParseError(f"line {lineno}: {err}") from None
        if name != last_name:
            if fam is None or (name != fam.name and owner.get(name) is not fam):
                if not _NAME.match(name):
                    raise ParseError(f"line {lineno}: bad metric name {name[:60]!r}")
                fam = owner.get(name) or families.get(name)
                if fam is None:
                    fam = families[name] = owner[name] = Family(name)
                samples = fam.samples
            last_name = name
        samples.append((name, labels, value))
    return Exposition(families, openmetrics)
