"""Fail a test when any callback holds the event loop for more than 20 ms (asyncio debug mode)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

SLOW_CALLBACK_SECONDS = 0.020


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.slow: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Executing") and " took " in msg:
            self.slow.append(msg)


@contextlib.contextmanager
def loop_guard(loop: asyncio.AbstractEventLoop) -> Iterator[list[str]]:
    """Collect every 'Executing <callback> took N seconds' asyncio reports while active."""
    capture = _Capture()
    logger = logging.getLogger("asyncio")
    old_debug, old_slow = loop.get_debug(), loop.slow_callback_duration
    logger.addHandler(capture)
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    try:
        yield capture.slow
    finally:
        loop.set_debug(old_debug)
        loop.slow_callback_duration = old_slow
        logger.removeHandler(capture)
