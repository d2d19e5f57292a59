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


_KEPT: list[bytes] = []


def churn(megabytes: int) -> int:
    """Allocate about that many MiB on the C heap in 60 KB blocks, each followed by a small
    object that is kept (as caches and results are): the blocks are freed between live
    objects, where glibc does not give them back by itself."""
    pairs = [(bytes(60_000), bytes(100)) for _ in range(megabytes * 2**20 // 60_000)]
    _KEPT.extend(small for _, small in pairs)
    return len(pairs)
