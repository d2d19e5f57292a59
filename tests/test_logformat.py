"""Log lines as promslog writes them: one line per record, whatever the message holds."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_exporter_ml.logformat import JsonFormatter, LogfmtFormatter, formatter, logfmt_value

# A logfmt line: key=bare or key="quoted with \" \\ \n \t \uXXXX escapes", space separated.
_PAIR = re.compile(r'([a-z]+)=(?:"((?:[^"\\]|\\["\\nrt]|\\u[0-9a-f]{4})*)"|([^\s="\\]+))(?: |$)')
_UNESCAPE = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt reader (go-logfmt's grammar): fails on anything it does not know."""
    fields, pos = {}, 0
    while pos < len(line):
        m = _PAIR.match(line, pos)
        assert m, f"not logfmt at {pos}: {line[pos : pos + 40]!r}"
        key, quoted, bare = m.groups()
        if bare is not None:
            fields[key] = bare
        else:
            fields[key] = re.sub(
                r"\\(u[0-9a-f]{4}|.)",
                lambda e: chr(int(e[1][1:], 16)) if len(e[1]) == 5 else _UNESCAPE[e[1]],
                quoted,
            )
        pos = m.end()
    return fields


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f'bad "value"\nsecond line {msg}')
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("node_exporter_ml.test", logging.WARNING, "x.py", 7, msg, args,
                             exc_info)  # fmt: skip


HOSTILE = [
    'a "quoted" value',
    "two\nlines\r\nand a tab\t",
    'msg="forged" level=ERROR',
    "back\\slash \\n not a newline",
    "",
    "=",
    "nul\x00 bell\x07 esc\x1b[31m del\x7f nel\x85 ls\u2028 ps\u2029",
    "ünïcödé ✓ 日本",
    "nbsp\xa0zero-width\u200b undecodable path byte \udcff",
]


@pytest.mark.parametrize("msg", HOSTILE)
def test_logfmt_hostile_messages_stay_one_parseable_line(msg):
    line = LogfmtFormatter().format(_record(msg))
    assert len(line.splitlines()) == 1
    line.encode("utf-8")  # what stderr does: a lone surrogate would raise here
    fields = parse_logfmt(line)
    assert list(fields) == ["time", "level", "source", "msg"]
    assert fields["msg"] == msg
    assert fields["level"] == "WARN"
    assert fields["source"] == "node_exporter_ml.test:7"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["time"])


@pytest.mark.parametrize("msg", HOSTILE)
def test_json_hostile_messages_stay_one_parseable_line(msg):
    line = JsonFormatter().format(_record(msg))
    assert len(line.splitlines()) == 1
    line.encode("utf-8")
    doc = json.loads(line)
    assert doc["msg"] == msg
    assert list(doc) == ["time", "level", "source", "msg"]


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_exception_is_one_escaped_err_field(fmt):
    line = formatter(fmt).format(_record("collector %s failed", "nvml", exc=True))
    assert len(line.splitlines()) == 1
    fields = parse_logfmt(line) if fmt == "logfmt" else json.loads(line)
    assert fields["msg"] == "collector nvml failed"
    assert fields["err"].startswith("Traceback (most recent call last):\n")
    assert fields["err"].endswith('ValueError: bad "value"\nsecond line collector %s failed')


def test_bare_values_are_not_quoted():
    assert logfmt_value("INFO") == "INFO"
    assert logfmt_value("a b") == '"a b"'
    assert logfmt_value("") == '""'
    assert logfmt_value("x\x01") == '"x\\u0001"'


@given(st.text(st.characters(codec=None)))
def test_any_message_round_trips_through_both_formats(msg):
    record = _record(msg)
    line = LogfmtFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert parse_logfmt(line)["msg"] == msg
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert json.loads(line)["msg"] == msg


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="logfmt, json"):
        formatter("xml")


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_config_error_logged_at_reload_stays_one_line(fmt):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt))
    log = logging.getLogger("node_exporter_ml.test_logformat")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("reload failed: %s", 'config.yaml: line 3: "bad"\ncontinued')
    finally:
        log.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    parsed = parse_logfmt(line) if fmt == "logfmt" else json.loads(line)
    assert parsed["msg"] == 'reload failed: config.yaml: line 3: "bad"\ncontinued'


def test_unknown_log_format_flag_is_a_one_line_startup_error():
    bad = subprocess.run(
        [sys.executable, "-m", "node_exporter_ml", "--log.format=xml"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--log.format" in bad.stderr
    assert bad.stderr.count("\n") == 1
