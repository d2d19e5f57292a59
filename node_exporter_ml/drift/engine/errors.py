"""The two errors of the drift engine: bad data and bad options (both are the caller's fault)."""

from __future__ import annotations


class DataError(ValueError):
    """The data cannot be read or evaluated; the message names the column or row at fault."""


class OptionsError(ValueError):
    """An evaluation option is unknown or has a bad value; the message names the option."""
