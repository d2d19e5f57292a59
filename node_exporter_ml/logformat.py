"""Log records as promslog writes them: one logfmt or JSON line per record, never more.

promslog (Prometheus' Go logging) writes `time=... level=INFO source=file.go:12 msg="..."`
with go-logfmt's quoting, or the same keys as a JSON object. A message is text from
anywhere (a config value, a model server's reply, an exception), so every value is
escaped: a quote, a newline or a control character never breaks or forges a line, and a
traceback becomes one escaped `err=` field.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Final

FORMATS: Final = ("logfmt", "json")

# slog's level names (promslog prints WARN, not WARNING).
_LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "ERROR", "FATAL": "ERROR"}
# What is written as a u-escape: controls (C0, DEL, C1), line breaks, lone surrogates.
_U_ESCAPED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def logfmt_value(value: str) -> str:
    r"""A logfmt value: bare when safe, else quoted with go-logfmt's escapes.

    Bare only when non-empty and every character is printable, not a space of any kind,
    and not `=`, `"` or `\`. Inside quotes `"`, `\`, newline, CR and tab are backslash
    escapes; other controls (C0, DEL, C1), U+2028/2029 and lone surrogates (undecodable
    bytes of a path) are `\u00XX`, so the line stays one line and encodes as UTF-8.
    """
    if value and all(c.isprintable() and not c.isspace() and c not in '="\\' for c in value):
        return value
    out = []
    for c in value:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif _U_ESCAPED.match(c):
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class _PromslogFormatter(logging.Formatter):
    """The fields promslog writes, in its order: time, level, source, msg, err."""

    def fields(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        """(key, value) pairs of one record; `err` holds the traceback, if any."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        pairs = [
            ("time", f"{stamp}.{int(record.msecs):03d}Z"),
            ("level", _LEVEL_NAMES.get(record.levelname, record.levelname)),
            ("source", f"{record.name}:{record.lineno}"),
            ("msg", record.getMessage()),
        ]
        err = ""
        if record.exc_info:
            err = self.formatException(record.exc_info)
        elif record.exc_text:
            err = record.exc_text
        if record.stack_info:
            err = f"{err}\n{self.formatStack(record.stack_info)}".lstrip("\n")
        if err:
            pairs.append(("err", err))
        return pairs


class LogfmtFormatter(_PromslogFormatter):
    """`time=... level=INFO source=module:line msg="..." err="..."` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """One logfmt line (no newline inside, whatever the message holds)."""
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in self.fields(record))


class JsonFormatter(_PromslogFormatter):
    """`{"time": ..., "level": ..., "source": ..., "msg": ..., "err": ...}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object on one line, non-ASCII text kept readable.

        json.dumps escapes C0 controls; DEL, C1 (NEL is a line break to some readers),
        U+2028/2029 and lone surrogates it leaves raw, so they are escaped here (they only
        occur in strings).
        """
        text = json.dumps(dict(self.fields(record)), ensure_ascii=False)
        return _U_ESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def formatter(name: str) -> logging.Formatter:
    """The formatter for --log.format (`logfmt` or `json`)."""
    if name == "json":
        return JsonFormatter()
    if name == "logfmt":
        return LogfmtFormatter()
    raise ValueError(f"unknown log format {name!r} (expected one of: {', '.join(FORMATS)})")
