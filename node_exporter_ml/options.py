"""Declaring options: a part's flags and config-file keys, each declared once, next to its code.

A part (a collector, the drift API) describes its options as one frozen dataclass whose
fields are declared with `flag()` or `yaml_key()`, and names it in a `Section`; the registry
hands every section to config.py, which composes them into the argparse parser and the
YAML schema. The part reads its options back, typed, with `config.section(SECTION)`.
node_exporter's collectors declare their kingpin flags the same way, in their own file.

    @dataclass(frozen=True, slots=True)
    class NvmlOptions:
        replay: str | None = flag("--nvml.replay", None, help="...", check=existing_file)

    NVML_OPTIONS = Section("nvml", NvmlOptions)
    @register_collector("nvml", options=NVML_OPTIONS)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION = 365 * 86400.0
MAX_INTEGER = 2**31 - 1
"""Largest count or size a config file may set (rows, bytes, concurrency)."""

T = TypeVar("T")
OptionsT = TypeVar("OptionsT")


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


def duration_arg(text: str) -> float:
    """The argparse `type` of a duration flag: parse_duration, failing as argparse wants."""
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def seconds_default(value: float) -> str:
    """A default duration as the flag takes it: whole minutes past one as `15m`, else seconds."""
    if value > 60 and value % 60 == 0:
        return f"(default: {value / 60:g}m)"
    return f"(default: {value:g}s)"


def http_url(url: str) -> bool:
    """An http(s) URL with a host and, if any, a port in range."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range (99999)
    except ValueError:  # also a malformed IPv6 host ("http://[::1")
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# --- checks of a flag's value (each raises the one-line error naming the flag) ----------------


def existing_file(flag: str, path: object) -> None:
    """A path given to the flag must be a file."""
    if isinstance(path, str) and path and not os.path.isfile(path):
        what = "expected a file, got a directory" if os.path.isdir(path) else "no such file"
        raise ConfigError(f"{flag}: {path}: {what}")


def http_url_flag(flag: str, url: object) -> None:
    """A URL given to the flag must be http(s) with a host."""
    if isinstance(url, str) and not http_url(url):
        raise ConfigError(f"{flag}: expected an http(s) URL, got {url!r}")


def at_least(minimum: int) -> Callable[[str, object], None]:
    """An integer given to the flag must be `minimum` or more."""

    def check(flag: str, value: object) -> None:
        if isinstance(value, int) and value < minimum:
            raise ConfigError(f"{flag}: expected an integer >= {minimum}")

    return check


# --- the config file ------------------------------------------------------------------------


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

    def strings(self, value: object, key: str) -> tuple[str, ...]:
        """A list of non-empty strings (() for None)."""
        return tuple(self.string(v, f"{key}[{i}]") for i, v in enumerate(self.items(value, key)))


# --- declarations ---------------------------------------------------------------------------

_OPTION = "nodeml_option"
"""The dataclass field metadata key that holds a field's Flag or Key."""

UNSET: Any = object()
"""Flag.parsed_default when argparse's default is the field's default."""


@dataclass(frozen=True, slots=True)
class Flag:
    """How a field is set from the command line (argparse's add_argument, and a check)."""

    name: str
    help: str
    metavar: str | None = None
    convert: Callable[[str], Any] | None = None
    action: str | type[argparse.Action] | None = None
    choices: Sequence[str] | None = None
    parsed_default: Any = UNSET
    """What argparse holds when the flag is absent, if not the field's default (e.g. None,
    so that `check` sees only a value that was given)."""
    check: Callable[[str, Any], None] | None = None
    """Raises ConfigError naming the flag when the parsed value is wrong."""
    resolve: Callable[[Any], Any] | None = None
    """Turns the checked value into the field's value (e.g. a default from the environment)."""


@dataclass(frozen=True, slots=True)
class Key:
    """How a field is read from its section of the YAML config file (re-read on SIGHUP)."""

    name: str
    read: Callable[[YamlReader, Any, str], Any]
    """Reads the value at the key (called `section.name` in errors), or raises ConfigError."""


def flag(
    name: str,
    default: T,
    *,
    help: str,
    metavar: str | None = None,
    type: Callable[[str], Any] | None = None,
    action: str | type[argparse.Action] | None = None,
    choices: Sequence[str] | None = None,
    parsed_default: Any = UNSET,
    check: Callable[[str, Any], None] | None = None,
    resolve: Callable[[Any], Any] | None = None,
) -> T:
    """A dataclass field set by the flag `name` (its value is `default` when the flag is absent)."""
    spec = Flag(name, help, metavar, type, action, choices, parsed_default, check, resolve)
    field: T = dataclasses.field(default=default, metadata={_OPTION: spec})
    return field


def yaml_key(name: str, default: T, read: Callable[[YamlReader, Any, str], Any]) -> T:
    """A dataclass field read from the key `name` of its section of the config file."""
    field: T = dataclasses.field(default=default, metadata={_OPTION: Key(name, read)})
    return field


@dataclass(frozen=True, slots=True, eq=False)
class Section(Generic[OptionsT]):
    """A part's options: the dataclass of its flags and keys, and its config-file section.

    `name` prefixes the argparse dests (`nvml_replay`); `file_key` is the top-level YAML
    key of its file section (None when the part has no keys).
    """

    name: str
    options: type[OptionsT]
    file_key: str | None = None

    def fields(self) -> list[tuple[str, Flag | Key, Any]]:
        """(field name, its declaration, its default) in declaration order."""
        out = []
        for f in dataclasses.fields(self.options):  # type: ignore[arg-type]
            spec = f.metadata.get(_OPTION)
            if not isinstance(spec, Flag | Key):
                where = f"{self.options.__name__}.{f.name}"
                raise TypeError(f"{where}: declare it with flag() or yaml_key()")
            out.append((f.name, spec, f.default))
        return out

    def flags(self) -> list[tuple[str, Flag, Any]]:
        """The fields set by flags."""
        return [(n, s, d) for n, s, d in self.fields() if isinstance(s, Flag)]

    def keys(self) -> list[tuple[str, Key, Any]]:
        """The fields read from the config file."""
        return [(n, s, d) for n, s, d in self.fields() if isinstance(s, Key)]

    def dest(self, field_name: str) -> str:
        """The argparse dest of a flag field."""
        return f"{self.name}_{field_name}"

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        """Add this section's flags to the parser."""
        for name, spec, default in self.flags():
            kwargs: dict[str, Any] = {
                "dest": self.dest(name),
                "default": default if spec.parsed_default is UNSET else spec.parsed_default,
                "help": spec.help,
            }
            if spec.action is not None:
                kwargs["action"] = spec.action
            for arg, value in (
                ("metavar", spec.metavar),
                ("type", spec.convert),
                ("choices", spec.choices),
            ):
                if value is not None:
                    kwargs[arg] = value
            parser.add_argument(spec.name, **kwargs)

    def from_flags(self, ns: argparse.Namespace) -> dict[str, Any]:
        """The flag fields' values from parsed flags, checked.

        Raises:
            ConfigError: a flag's value is wrong (the message names the flag).
        """
        values = {}
        for name, spec, _ in self.flags():
            value = getattr(ns, self.dest(name))
            if spec.check is not None:
                spec.check(spec.name, value)
            values[name] = spec.resolve(value) if spec.resolve is not None else value
        return values

    def from_file(self, r: YamlReader, raw: object) -> dict[str, Any]:
        """The file fields' values from this section of the YAML file (defaults when absent).

        Raises:
            ConfigError: the section is wrong (the message names the file and the key).
        """
        where = self.file_key or self.name
        declared = self.keys()
        m = r.mapping(raw, where, [k.name for _, k, _ in declared])
        return {
            name: r.optional(m, where, k.name, functools.partial(k.read, r), default)
            for name, k, default in declared
        }

    def build(self, values: Mapping[str, Any]) -> OptionsT:
        """The options object from field values (the others keep their defaults)."""
        return self.options(**values)
