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


class RequestError(DriftError):
    """A request's body or options are malformed or invalid (the caller's fault)."""


class TooLargeError(RequestError):
    """A request passes a configured limit: rows, columns, features, labels."""


class TooManyModelsError(DriftError):
    """A reference for one more model than drift.max_models allows (each model adds series)."""


class UnknownModelError(DriftError):
    """The model has no reference (it is created by PUT .../reference)."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


class UnavailableError(DriftError):
    """The service is not running, or the worker process of a task died (it is replaced)."""


class WorkerTimeoutError(UnavailableError):
    """The worker process of a task ran past its timeout (it is killed and replaced)."""
