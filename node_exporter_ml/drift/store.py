"""Drift state in SQLite under --state.dir: references, observation windows, labels, results.

It has its own errors (`StoreError`, `StoreFullError`) and the encoding of stored reference
tables (`pack_table`, `unpack_table`); it knows nothing of the service or the web above it.

Every method is blocking and thread-safe (one connection behind a lock); callers on the event
loop run them in an executor. A method that writes returns only after its transaction has
committed, so an HTTP 2xx sent after it means the data is on disk.

Durability: the database runs in WAL mode with ``synchronous=FULL``. In WAL mode ``NORMAL``
already survives the process being killed (the WAL frames are in the OS page cache once
``COMMIT`` returns), but not a power cut or kernel panic; ``FULL`` fsyncs the WAL at every
commit, so an acknowledged write survives those too. The cost is one fsync per write request,
which the API amortises by writing each request's rows in one transaction.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from node_exporter_ml.drift.engine.table import Column, Table

log = logging.getLogger(__name__)

DB_NAME = "drift.sqlite3"
SCHEMA_VERSION = 1
RETAIN_FACTOR = 10
"""Observations and labels are kept for this many windows, so that late labels still join."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reference (
    model TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    format TEXT NOT NULL,
    data BLOB NOT NULL,
    options TEXT NOT NULL,
    n_rows INTEGER NOT NULL,
    n_columns INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS observation (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    ts REAL NOT NULL,
    obs_id TEXT,
    features TEXT NOT NULL,
    prediction TEXT,
    confidence REAL
);
CREATE INDEX IF NOT EXISTS observation_model_seq ON observation (model, seq);
CREATE INDEX IF NOT EXISTS observation_model_ts ON observation (model, ts);
CREATE INDEX IF NOT EXISTS observation_model_id ON observation (model, obs_id)
    WHERE obs_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS label (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    obs_id TEXT NOT NULL,
    label TEXT NOT NULL,
    ts REAL NOT NULL,
    UNIQUE (model, obs_id)
);
CREATE INDEX IF NOT EXISTS label_model_seq ON label (model, seq);
CREATE INDEX IF NOT EXISTS label_model_ts ON label (model, ts);
CREATE TABLE IF NOT EXISTS result (
    model TEXT PRIMARY KEY,
    evaluated_at REAL NOT NULL,
    report TEXT NOT NULL
);
"""


class StoreError(Exception):
    """The state directory or database cannot be used (named in the message)."""


class StoreFullError(StoreError):
    """The disk (or the database's size limit) is full: a write was not stored."""


@dataclass(frozen=True, slots=True)
class Reference:
    """A model's stored reference data, in the service's storage format (see `format`)."""

    model: str
    version: int
    format: str  # how `data` is encoded: the service writes TABLE_FORMAT (`pack_table`)
    data: bytes
    options: Mapping[str, Any]
    n_rows: int
    n_columns: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class Observation:
    """One feature row of a model's traffic with its optional prediction, confidence and id."""

    features: Mapping[str, Any]
    prediction: Any = None
    confidence: float | None = None
    obs_id: str | None = None
    ts: float | None = None  # None: the time it is stored


@dataclass(frozen=True, slots=True)
class LabeledPrediction:
    """A late label joined by id with the prediction made for that observation (or None)."""

    obs_id: str
    label: Any
    prediction: Any
    matched: bool
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """How a model's current window is chosen: the newest `rows`, or the last `seconds`."""

    rows: int = 10_000
    seconds: float | None = None
    max_rows: int = 1_000_000

    @property
    def kind(self) -> str:
        """The window's kind: "time" or "rows"."""
        return "time" if self.seconds is not None else "rows"


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _encode(value: Any) -> str:
    # NaN and infinities are kept (Python's json reads them back); the engine drops them.
    return _ENCODER.encode(value)


EncodedObservation = tuple[float | None, str | None, str, str | None, float | None]
"""An observation as stored: ts (None: when stored), id, features and prediction as JSON,
confidence."""


def encode_observations(rows: Sequence[Observation]) -> list[EncodedObservation]:
    """Observations as stored (pure: the drift worker encodes, the database thread inserts)."""
    return [
        (
            o.ts,
            o.obs_id,
            _encode(dict(o.features)),
            None if o.prediction is None else _encode(o.prediction),
            o.confidence,
        )
        for o in rows
    ]


def _require_reference(conn: sqlite3.Connection, model: str) -> None:
    """Raise KeyError unless the model has a reference."""
    if conn.execute("SELECT 1 FROM reference WHERE model = ?", (model,)).fetchone() is None:
        raise KeyError(model)


class Store:
    """The drift database; open() before use, close() when done."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, DB_NAME)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._lock_fd: int | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def open(self, *, lock: bool = True) -> None:
        """Create the state directory and schema if needed and open the database.

        `lock` takes the state directory's lock (the agent); a drift worker reading the
        agent's database opens it without, under the lock its agent holds.

        Raises:
            StoreError: the directory cannot be created or the database cannot be opened.
        """
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        except OSError as err:
            raise StoreError(f"--state.dir: {self.path}: cannot open database: {err}") from None
        if lock:
            self._lock_dir()
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            self._unlock_dir()
            raise StoreError(f"--state.dir: {self.path}: cannot open database: {err}") from None
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"--state.dir: {self.path}: WAL journal mode unavailable ({mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"--state.dir: {self.path}: schema version {row[0]}, expected {SCHEMA_VERSION}"
                )
        except sqlite3.Error as err:
            conn.close()
            self._unlock_dir()
            raise StoreError(f"--state.dir: {self.path}: {err}") from None
        except StoreError:
            conn.close()
            self._unlock_dir()
            raise
        self._conn = conn

    @property
    def is_open(self) -> bool:
        """True between open() and close()."""
        return self._conn is not None

    def _lock_dir(self) -> None:
        """Hold an exclusive lock on the state directory: a second agent on it exits 2."""
        path = os.path.join(self.state_dir, "lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise StoreError(f"--state.dir: {path}: cannot create the lock file: {err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"--state.dir: {self.state_dir}: in use by another agent (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def close(self) -> None:
        """Close the database (a checkpoint folds the WAL back into the main file)."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    self._conn.close()
                    self._conn = None
                    self._unlock_dir()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                _rollback(conn)
                if err.sqlite_errorcode == sqlite3.SQLITE_FULL:
                    raise StoreFullError(f"--state.dir: {self.path}: {err}") from None
                raise
            except BaseException:
                _rollback(conn)
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("drift store is not open")
        return self._conn

    # --- references -------------------------------------------------------------------------

    def put_reference(
        self,
        model: str,
        fmt: str,
        data: bytes,
        options: Mapping[str, Any],
        n_rows: int,
        n_columns: int,
    ) -> int:
        """Store (or replace) a model's reference; returns its new version."""
        blob = zlib.compress(data, 1)
        now = time.time()
        with self._tx() as conn:
            row = conn.execute("SELECT version FROM reference WHERE model = ?", (model,)).fetchone()
            version = (row[0] if row else 0) + 1
            # The blob is written through an incremental blob handle, not bound as a
            # parameter: the connection's statement cache would keep the last bound copy of
            # every reference for as long as the agent runs (measured: 12 MiB after 10 MiB).
            cur = conn.execute(
                "INSERT OR REPLACE INTO reference "
                "(model, version, format, data, options, n_rows, n_columns, updated_at) "
                "VALUES (?, ?, ?, zeroblob(?), ?, ?, ?, ?)",
                (model, version, fmt, len(blob), _encode(dict(options)), n_rows, n_columns, now),
            )
            assert cur.lastrowid is not None
            with conn.blobopen("reference", "data", cur.lastrowid) as handle:
                handle.write(blob)
        return version

    def get_reference(self, model: str) -> Reference | None:
        """The model's reference, or None when it has none."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT version, format, data, options, n_rows, n_columns, updated_at "
                "FROM reference WHERE model = ?",
                (model,),
            ).fetchone()
        if row is None:
            return None
        version, fmt, blob, options, n_rows, n_columns, updated_at = row
        return Reference(
            model=model,
            version=version,
            format=fmt,
            data=zlib.decompress(blob),
            options=json.loads(options),
            n_rows=n_rows,
            n_columns=n_columns,
            updated_at=updated_at,
        )

    def options(self, model: str) -> dict[str, Any] | None:
        """The options stored with the model's reference, or None when it has none."""
        with self._read() as conn:
            row = conn.execute("SELECT options FROM reference WHERE model = ?", (model,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def models(self) -> list[str]:
        """Every model with a reference, sorted."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT model FROM reference ORDER BY model")]

    def delete_model(self, model: str) -> bool:
        """Forget a model: reference, observations, labels and result; False if unknown."""
        with self._tx() as conn:
            found = conn.execute("DELETE FROM reference WHERE model = ?", (model,)).rowcount > 0
            conn.execute("DELETE FROM observation WHERE model = ?", (model,))
            conn.execute("DELETE FROM label WHERE model = ?", (model,))
            conn.execute("DELETE FROM result WHERE model = ?", (model,))
        return found

    # --- observations and labels ------------------------------------------------------------

    def add_observations(self, model: str, rows: Sequence[Observation]) -> int:
        """Append rows to the model's observations in one transaction; returns the count.

        Raises:
            KeyError: the model has no reference.
        """
        return self.add_encoded_observations(model, encode_observations(rows))

    def add_encoded_observations(self, model: str, rows: Sequence[EncodedObservation]) -> int:
        """`add_observations` of rows already encoded (by `encode_observations`, elsewhere).

        Raises:
            KeyError: the model has no reference.
        """
        now = time.time()
        # A generator, not a second list of every row: one row's parameters at a time.
        params = (
            (model, now if ts is None else ts, obs_id, features, prediction, confidence)
            for ts, obs_id, features, prediction, confidence in rows
        )
        with self._tx() as conn:
            _require_reference(conn, model)
            conn.executemany(
                "INSERT INTO observation (model, ts, obs_id, features, prediction, confidence) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                params,
            )
        return len(rows)

    def add_labels(self, model: str, labels: Sequence[tuple[str, Any]]) -> tuple[int, int]:
        """Store late labels by observation id (a later label for an id replaces the earlier).

        Returns:
            (stored, matched): how many labels were stored, and how many of them match an
            observation of the model still held.

        Raises:
            KeyError: the model has no reference.
        """
        now = time.time()
        with self._tx() as conn:
            _require_reference(conn, model)
            ids = [(model, obs_id) for obs_id, _ in labels]
            conn.executemany("DELETE FROM label WHERE model = ? AND obs_id = ?", ids)
            conn.executemany(
                "INSERT INTO label (model, obs_id, label, ts) VALUES (?, ?, ?, ?)",
                [(model, obs_id, _encode(label), now) for obs_id, label in labels],
            )
            matched = 0
            for obs_id, _ in labels:
                hit = conn.execute(
                    "SELECT 1 FROM observation WHERE model = ? AND obs_id = ? LIMIT 1",
                    (model, obs_id),
                ).fetchone()
                matched += hit is not None
        return len(labels), matched

    def window(self, model: str, window: Window, now: float | None = None) -> list[Observation]:
        """The model's current window of observations, oldest first."""
        with self._read() as conn:
            if window.seconds is not None:
                since = (now if now is not None else time.time()) - window.seconds
                cur = conn.execute(
                    "SELECT ts, obs_id, features, prediction, confidence FROM observation "
                    "WHERE model = ? AND ts >= ? ORDER BY seq DESC LIMIT ?",
                    (model, since, window.max_rows),
                )
            else:
                cur = conn.execute(
                    "SELECT ts, obs_id, features, prediction, confidence FROM observation "
                    "WHERE model = ? ORDER BY seq DESC LIMIT ?",
                    (model, window.rows),
                )
            rows = cur.fetchall()
        rows.reverse()
        return [
            Observation(
                features=json.loads(features),
                prediction=None if prediction is None else json.loads(prediction),
                confidence=confidence,
                obs_id=obs_id,
                ts=ts,
            )
            for ts, obs_id, features, prediction, confidence in rows
        ]

    def labeled(
        self, model: str, window: Window, now: float | None = None
    ) -> list[LabeledPrediction]:
        """The model's labels in the current window (by arrival), joined with predictions."""
        join = (
            "SELECT l.obs_id, l.label, ("
            "  SELECT o.prediction FROM observation o WHERE o.model = l.model"
            "  AND o.obs_id = l.obs_id ORDER BY o.seq DESC LIMIT 1),"
            " EXISTS (SELECT 1 FROM observation o WHERE o.model = l.model"
            "  AND o.obs_id = l.obs_id),"
            " (SELECT o.confidence FROM observation o WHERE o.model = l.model"
            "  AND o.obs_id = l.obs_id ORDER BY o.seq DESC LIMIT 1)"
            " FROM (SELECT * FROM label WHERE model = ? {where} ORDER BY seq DESC LIMIT ?) l"
        )
        with self._read() as conn:
            if window.seconds is not None:
                since = (now if now is not None else time.time()) - window.seconds
                cur = conn.execute(
                    join.format(where="AND ts >= ?"), (model, since, window.max_rows)
                )
            else:
                cur = conn.execute(join.format(where=""), (model, window.rows))
            rows = cur.fetchall()
        rows.reverse()
        return [
            LabeledPrediction(
                obs_id=obs_id,
                label=json.loads(label),
                prediction=None if prediction is None else json.loads(prediction),
                matched=bool(matched),
                confidence=confidence,
            )
            for obs_id, label, prediction, matched, confidence in rows
        ]

    def version(self, model: str) -> tuple[int, int, int]:
        """(reference version, last observation seq, last label seq): changes with any write."""
        with self._read() as conn:
            ref = conn.execute("SELECT version FROM reference WHERE model = ?", (model,)).fetchone()
            obs = conn.execute("SELECT max(seq) FROM observation WHERE model = ?", (model,))
            lab = conn.execute("SELECT max(seq) FROM label WHERE model = ?", (model,))
            return (ref[0] if ref else 0, obs.fetchone()[0] or 0, lab.fetchone()[0] or 0)

    def prune(self, model: str, window: Window, now: float | None = None) -> int:
        """Drop observations and labels older than RETAIN_FACTOR windows; returns rows dropped."""
        keep = window.rows * RETAIN_FACTOR
        dropped = 0
        with self._tx() as conn:
            for table in ("observation", "label"):
                row = conn.execute(
                    f"SELECT seq FROM {table} WHERE model = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
                    (model, keep),
                ).fetchone()
                if row is not None:
                    dropped += conn.execute(
                        f"DELETE FROM {table} WHERE model = ? AND seq <= ?",
                        (model, row[0]),
                    ).rowcount
                if window.seconds is not None:
                    since = (now if now is not None else time.time()) - (
                        window.seconds * RETAIN_FACTOR
                    )
                    dropped += conn.execute(
                        f"DELETE FROM {table} WHERE model = ? AND ts < ?",
                        (model, since),
                    ).rowcount
        return dropped

    def counts(self, model: str) -> tuple[int, int]:
        """(observations held, labels held) for the model."""
        with self._read() as conn:
            obs = conn.execute("SELECT count(*) FROM observation WHERE model = ?", (model,))
            lab = conn.execute("SELECT count(*) FROM label WHERE model = ?", (model,))
            return obs.fetchone()[0], lab.fetchone()[0]

    # --- results ----------------------------------------------------------------------------

    def put_result(self, model: str, evaluated_at: float, report: Mapping[str, Any]) -> None:
        """Keep the model's latest evaluation (served again after a restart)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO result (model, evaluated_at, report) VALUES (?, ?, ?)",
                (model, evaluated_at, _encode(dict(report))),
            )

    def results(self) -> dict[str, dict[str, Any]]:
        """Every model's latest stored evaluation report."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT r.model, r.report FROM result r JOIN reference f ON f.model = r.model"
            ).fetchall()
        out = {}
        for model, report in rows:
            try:
                out[model] = json.loads(report)
            except ValueError as err:  # a damaged row must not stop every start
                log.error("drift store: skipping the stored result of %s: %s", model, err)
        return out


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


# --- table encoding -------------------------------------------------------------------------

TABLE_FORMAT = "table-v1"
"""References are stored parsed and typed, so a restart does not parse the CSV again."""


def pack_table(table: Table) -> bytes:
    """A table as bytes: a JSON header, then each column as .npy (numbers) or JSON (objects).

    No pickle: object columns (strings, mixed values, None) are JSON lists.
    """
    import io

    import numpy as np

    header: dict[str, Any] = {"n_rows": table.n_rows, "columns": []}
    payloads = []
    for name, col in table.columns.items():
        if col.values.dtype.kind in "biufM":
            buf = io.BytesIO()
            np.save(buf, col.values, allow_pickle=False)
            payload, enc = buf.getvalue(), "npy"
        else:
            payload, enc = json.dumps(col.values.tolist()).encode(), "json"
        header["columns"].append(
            {"name": name, "dtype": col.dtype, "enc": enc, "size": len(payload)}
        )
        payloads.append(payload)
    head = json.dumps(header).encode()
    return len(head).to_bytes(4, "big") + head + b"".join(payloads)


def unpack_table(data: bytes) -> Table:
    """The inverse of `pack_table`."""
    import io

    import numpy as np

    size = int.from_bytes(data[:4], "big")
    header = json.loads(data[4 : 4 + size])
    pos = 4 + size
    columns = {}
    for meta in header["columns"]:
        chunk = data[pos : pos + meta["size"]]
        pos += meta["size"]
        if meta["enc"] == "npy":
            values = np.load(io.BytesIO(chunk), allow_pickle=False)
        else:
            items = json.loads(chunk)
            values = np.empty(len(items), dtype=object)
            values[:] = items
        columns[meta["name"]] = Column(meta["name"], meta["dtype"], values)
    return Table(columns, header["n_rows"])


def unpack_reference(ref: Reference) -> Table:
    """A stored reference's table; StoreError when it is in a format this version cannot read."""
    if ref.format != TABLE_FORMAT:
        raise StoreError(f"model {ref.model}: reference stored as {ref.format!r}, unreadable")
    return unpack_table(ref.data)
