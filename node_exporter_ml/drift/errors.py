"""The drift service's errors: what went wrong, in the subsystem's words, never in HTTP's.

The drift web layer (`drift.web`) maps each to a status in one table, as it maps the engine's
(`drift.engine.errors`) and the store's (`drift.store.StoreError`); the drift collector turns
those raised at start into the agent's `StartupError`. Each crosses from a worker process to
the agent as a pickle, so each keeps its message in ``args``.
"""

from __future__ import annotations


class DriftError(Exception):
    """Base of the drift service's errors; the message names the fault."""


class TokenFileError(DriftError):
    """The drift token file (--drift.token-file) cannot be read or is empty."""
