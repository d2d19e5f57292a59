"""Drift worker processes: parsing, typing and evaluation run here, never in the agent's process.

A `WorkerPool` holds up to `size` worker processes, each started on first use from a
``forkserver`` (a clean process that imported the drift engine once, never a fork of the
agent's threaded event loop), so a replacement starts in milliseconds. A task is a picklable
function and its arguments, sent over a pipe as one pickle; bodies and packed tables are bytes,
never a Python object per value. A worker is replaced after `WorkerLimits.max_tasks` tasks,
after a task that left it above `WorkerLimits.max_rss_bytes`, when a task runs past
`WorkerLimits.timeout` (it is killed) and when it dies; each replacement is counted by reason
(`REASONS`) for ``nodeml_drift_worker_restarts_total``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

REASONS = ("tasks", "memory", "timeout", "crashed")
"""Why a worker was replaced: task count, memory cap, a task's timeout, death."""

PRELOAD = ["node_exporter_ml.drift.service", "scipy.stats", "pandas", "pyarrow.parquet"]
"""What the forkserver imports once, so that every worker starts with the engine loaded."""


class WorkerError(Exception):
    """A task got no answer: its worker died or timed out (and was replaced)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    """When a worker is replaced (config file: ``drift.worker``)."""

    max_tasks: int = 500
    max_rss_bytes: int = 1024 * 1024 * 1024
    timeout: float = 300.0


BLOB_BYTES = 64 * 1024
"""Arguments of bytes this large cross the pipe as they are, outside the task's pickle."""


@dataclass(frozen=True, slots=True)
class Task:
    """A function and its arguments as sent: a pickle, then its large buffers out of band.

    A request body crosses the pipe once, straight from the agent's bytes object into the
    worker's (pickle protocol 5 out-of-band buffers), never copied into the pickle on the way.
    Objects may send their own buffers out of band too (``__reduce_ex__`` returning a
    ``pickle.PickleBuffer`` at protocol 5, as `drift.engine.columnar.Upload` does).
    """

    head: bytes
    buffers: list[pickle.PickleBuffer]
    """Released as they are sent: a task holds no body once written."""

    @classmethod
    def of(cls, fn: Callable[..., Any], args: tuple[Any, ...]) -> Task:
        """The task of ``fn(*args)``; bytes arguments of `BLOB_BYTES` or more go out of band.

        A bytearray argument (a body as read) arrives as bytes: out of band when large (and
        consumed by `send`), else copied into the pickle as bytes.
        """
        wrapped = tuple(_wrapped(a) for a in args)
        buffers: list[pickle.PickleBuffer] = []
        head = pickle.dumps((fn, wrapped), protocol=5, buffer_callback=buffers.append)
        return cls(head, buffers)

    def send(self, conn: multiprocessing.connection.Connection) -> None:
        """Write the task: the count of buffers, the head, then each buffer.

        Each buffer is released once written, and a bytearray behind one (a request body as
        the agent read it, passed as is, in a `drift.engine.columnar.Blob` or in an `Upload`) is
        emptied: it was read for this task, and the agent lets go of it while the worker
        works, instead of holding a copy of every body in flight.
        """
        conn.send_bytes(len(self.buffers).to_bytes(4, "big"))
        conn.send_bytes(self.head)
        self.buffers.reverse()
        while self.buffers:
            buffer = self.buffers.pop()
            with buffer.raw() as view:
                conn.send_bytes(view)
                owner = view.obj
            buffer.release()
            if isinstance(owner, bytearray):
                with contextlib.suppress(BufferError):  # still viewed elsewhere: left as is
                    owner.clear()
            del owner

    @staticmethod
    def receive(
        conn: multiprocessing.connection.Connection,
    ) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """Read a task written by `send` (the worker's side)."""
        count = int.from_bytes(conn.recv_bytes(), "big")
        head = conn.recv_bytes()
        buffers = [conn.recv_bytes() for _ in range(count)]
        fn, args = pickle.loads(head, buffers=buffers)
        return fn, tuple(args)


def _wrapped(arg: Any) -> Any:
    if isinstance(arg, bytes | bytearray):
        if len(arg) >= BLOB_BYTES:
            return pickle.PickleBuffer(arg)
        return bytes(arg)
    return arg


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: multiprocessing.context.BaseContext) -> None:
        parent, child = multiprocessing.Pipe(duplex=True)
        self.process = ctx.Process(  # type: ignore[attr-defined]
            target=serve, args=(child,), name="nodeml-drift-worker", daemon=True
        )
        self.process.start()
        child.close()
        self.conn: multiprocessing.connection.Connection = parent
        self.tasks = 0
        self.rss = 0

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def stop(self, *, kill: bool) -> None:
        """Ask it to exit (close its pipe), or kill it; then reap it."""
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.conn.close()
        self.process.join(timeout=None if kill else 5.0)
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.process.join()
        self.process.close()


class WorkerPool:
    """Up to `size` worker processes, started on first use; `call` runs one task in one."""

    def __init__(self, size: int = 2, limits: WorkerLimits | None = None) -> None:
        self.size = size
        self.limits = limits or WorkerLimits()
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(size):
            self._idle.put(None)  # a free slot without a process yet
        self._lock = threading.Lock()
        self._live: dict[int, _Worker] = {}
        self._restarts = dict.fromkeys(REASONS, 0)
        self._closed = False
        fix_mmap_threshold()

    def restarts(self) -> dict[str, int]:
        """Replacements so far, by reason (every reason present, 0 when none)."""
        with self._lock:
            return dict(self._restarts)

    def resident_memory_bytes(self) -> int:
        """The workers' resident memory, as measured after each one's latest task (0: none)."""
        with self._lock:
            return sum(w.rss for w in self._live.values())

    def pids(self) -> list[int]:
        """The live workers' process ids."""
        with self._lock:
            return sorted(self._live)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker and return its result or raise its exception.

        Blocks until a worker is free (call it from a thread, never the event loop).

        Raises:
            WorkerError: the worker died or timed out; it is replaced for the next task.
        """
        task = Task.of(fn, args)
        worker = self._idle.get()
        try:
            if self._closed:
                raise WorkerError("crashed", "the drift worker pool is shut down")
            if worker is None:
                worker = self._start()
            ok, value = self._run(worker, task)
            worker = self._after_task(worker)
        except WorkerError:
            worker = None
            raise
        finally:
            self._idle.put(worker)
        if not ok:
            raise value
        result: T = value
        return result

    def close(self) -> None:
        """Stop every worker (waits for running tasks: take each slot back first)."""
        self._closed = True
        for _ in range(self.size):
            worker = self._idle.get()
            if worker is not None:
                self._retire(worker, None)
        for _ in range(self.size):
            self._idle.put(None)

    # --- internals ------------------------------------------------------------------------

    def _start(self) -> _Worker:
        worker = _Worker(_context())
        with self._lock:
            self._live[worker.pid] = worker
        log.debug("drift worker %d started", worker.pid)
        return worker

    def _run(self, worker: _Worker, task: Task) -> tuple[bool, Any]:
        try:
            task.send(worker.conn)
            if not worker.conn.poll(self.limits.timeout):
                self._retire(worker, "timeout", kill=True)
                raise WorkerError(
                    "timeout",
                    f"the drift worker took longer than {self.limits.timeout:g} s and was stopped",
                )
            answer = worker.conn.recv_bytes()
        except (EOFError, OSError):
            worker.process.join(timeout=1.0)  # reaped, so its exit status is known
            code = worker.process.exitcode
            how = (
                f"killed by signal {-code}"
                if code is not None and code < 0
                else f"exit code {code}"
            )
            self._retire(worker, "crashed", kill=True)
            raise WorkerError(
                "crashed", f"the drift worker died ({how}) and was replaced"
            ) from None
        worker.tasks += 1
        ok, value = pickle.loads(answer)
        return bool(ok), value

    def _after_task(self, worker: _Worker) -> _Worker | None:
        worker.rss = _rss(worker.pid)
        if worker.tasks >= self.limits.max_tasks:
            self._retire(worker, "tasks")
            return None
        if worker.rss > self.limits.max_rss_bytes:
            self._retire(worker, "memory")
            return None
        return worker

    def _retire(self, worker: _Worker, reason: str | None, *, kill: bool = False) -> None:
        with self._lock:
            self._live.pop(worker.pid, None)
            if reason is not None:
                self._restarts[reason] += 1
        if reason is not None:
            log.info("drift worker %d replaced: %s", worker.pid, reason)
        worker.stop(kill=kill)


M_MMAP_THRESHOLD = -3
"""glibc's mallopt() parameter number (malloc.h)."""
MMAP_THRESHOLD = 128 * 1024


def fix_mmap_threshold() -> None:
    """Keep glibc from holding on to freed request bodies (a no-op on other C libraries).

    glibc raises its mmap threshold to the size of each large block freed, up to 32 MiB; after
    one upload of a few MiB, later bodies and their chunks come from the heap and their pages
    stay in the agent's resident set once freed (measured: 43 -> 106 MiB after one drift
    workload). A fixed threshold keeps every block over 128 KiB mmapped, so freeing it returns
    the pages; it also stops the trim threshold from growing.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, if glibc
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim; else a no-op).

    What a large request leaves behind in the agent, small blocks freed between blocks still
    in use (a received answer's objects, SQLite's and zlib's buffers), is free but resident:
    glibc only returns the top of a heap by itself. The agent calls this after such requests.
    """
    import ctypes

    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    malloc_trim(0)


def _rss(pid: int) -> int:
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


_CONTEXT: multiprocessing.context.BaseContext | None = None
_CONTEXT_LOCK = threading.Lock()


def _context() -> multiprocessing.context.BaseContext:
    """The forkserver context, its server preloading the engine (set once per process)."""
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _CONTEXT = ctx
        return _CONTEXT


# --- the worker's side ---------------------------------------------------------------------


def serve(conn: multiprocessing.connection.Connection) -> None:
    """The worker's loop: a task in, ``(ok, result or exception)`` out, until the pipe closes."""
    # Ctrl-C reaches the whole process group; the agent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Over the container's memory limit, the kernel kills this process, never the agent: the
    # request answers 503 and /metrics goes on. Raising one's own score needs no privilege.
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    while True:
        try:
            fn, args = Task.receive(conn)
        except (EOFError, OSError):
            return
        try:
            answer = (True, fn(*args))
        except Exception as err:  # noqa: BLE001 (the task's own error goes back to the caller)
            answer = (False, err)
        del fn, args
        # What the task freed goes back to the kernel before the agent measures this worker
        # (its memory cap), instead of staying resident under the next task's peak.
        trim_heap()
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # noqa: BLE001 (an unpicklable answer: its text still goes)
            data = pickle.dumps((False, RuntimeError(f"{type(err).__name__}: {answer[1]}")))
        try:
            conn.send_bytes(data)
        except OSError:
            return
