"""Tasks for the drift worker tests, importable by a worker process (pickled by reference).

The test process wraps ``time.sleep`` and friends for its loop guard; these are the plain ones.
"""

from __future__ import annotations

import os
import time


def nap(seconds: float) -> None:
    """Sleep in the worker (a task that runs past its timeout)."""
    time.sleep(seconds)


def die(code: int) -> None:
    """End the worker process at once, as a crash or the OOM killer would."""
    os._exit(code)
