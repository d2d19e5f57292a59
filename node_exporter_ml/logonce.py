"""Log a persistent condition once, not every tick (nvitop's UNKNOWN_FUNCTIONS idea)."""

from __future__ import annotations

import logging
import threading


class OnceLogger:
    """Logs each key at most once until `forget(key)` (when the condition clears)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log `msg` under `key` unless it was logged already; True when it logged."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._logger.log(level, msg, *args)
        return True

    def forget(self, key: str) -> bool:
        """Allow `key` to log again; True when it had been logged."""
        with self._lock:
            if key in self._seen:
                self._seen.discard(key)
                return True
            return False
