"""The connection half of ``Store``: explicit transactions, locking between threads, queries.

The connection runs in SQLite's autocommit mode (``isolation_level=None``): Python's sqlite3 never
opens a transaction behind our back, so every write happens inside ``transaction()``, which is
``BEGIN IMMEDIATE``. A deferred ``BEGIN`` takes its write lock only at the first write, and two
processes that both read first then deadlock: one gets "database is locked" at once, whatever
``busy_timeout`` says (~60% of transactions failed that way here). ``IMMEDIATE`` takes the write
lock up front, so the other process simply waits up to ``busy_timeout``. Around it, writers of
all processes queue at a ``WriteGate`` (see write_gate.py): SQLite's polling busy handler lets a
looping writer starve the others.

Readers never fail because a writer is busy: in TRUNCATE journal mode a long write transaction
(an import of a big export) takes SQLite's EXCLUSIVE lock as soon as its dirty pages spill from
the cache, and every read in another process then gets "database is locked" after
``busy_timeout``. ``read_waiting`` retries such a read, sleeping on the write gate (woken the
moment the writer commits), says once on stderr (through ``set_wait_notice``) that it is waiting,
and gives up with one line (``DatabaseBusy``) only after ``READ_WAIT_S``.

One ``Store`` may be shared by threads (the TUI's workers): an ``RLock`` is held for a whole
outermost transaction and for each read, so another thread can neither interleave statements
into a transaction nor see it half-done.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from lpm_local.errors import NotFound
from lpm_local.storage.records import Profile
from lpm_local.storage.write_gate import DatabaseBusy, WriteGate

# How long a read waits for another process's write transaction before it gives up. An import
# of a 200 MB export holds its transaction for minutes on a slow disk; a read that waits longer
# than this is stuck behind something else (a stopped process).
READ_WAIT_S = 600.0
# SQLite primary result codes for "another connection holds the lock".
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_wait_notice: Callable[[str], None] | None = None
T = TypeVar("T")


def set_wait_notice(notice: Callable[[str], None] | None) -> None:
    """Where a read that has to wait for another process says so, once (the CLI: stderr)."""
    global _wait_notice
    _wait_notice = notice


def is_busy(error: sqlite3.Error) -> bool:
    """True for "database is locked" / "database table is locked"."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(error)


def read_waiting(gate: WriteGate, read: Callable[[], T]) -> T:
    """``read()``, retried while another process's write transaction locks the database.

    Only for statements that hold no lock yet when they fail (a read outside a transaction, or
    the first one of a read snapshot): retrying them cannot see half of anything.
    """
    started = time.monotonic()
    noticed = False
    while True:
        try:
            return read()
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
        waited = time.monotonic() - started
        if waited > READ_WAIT_S:
            raise DatabaseBusy(
                f"{gate.path.parent}: another lpm process kept the database locked for more "
                f"than {READ_WAIT_S:g} s. Let it finish (or stop it) and try again"
            )
        if not noticed and _wait_notice is not None:
            _wait_notice(
                "waiting for another lpm process that is writing the database (an import?); "
                f"up to {READ_WAIT_S / 60:g} min"
            )
            noticed = True
        # Woken when the writer's transaction ends; a writer that does not use the gate (the
        # sqlite3 shell) is polled by SQLite's busy_timeout on the next try.
        gate.wait_for_writer(min(30.0, max(0.1, READ_WAIT_S - waited)))


class StoreCore:
    """Owns one SQLite connection; the query mixins in ``store_*.py`` build on it."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.path = path
        self.conn = conn
        # execute_plugins=False: no third-party sqlite-utils plugin runs on a connection that
        # holds personal data.
        self.db = Database(conn, execute_plugins=False)
        self._lock = threading.RLock()
        self._gate = WriteGate(path)
        self._savepoints = itertools.count()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. An open transaction (a bug) is rolled back by SQLite."""
        with self._lock:
            self.conn.close()

    def __enter__(self) -> StoreCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[StoreCore]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` if the block raises.

        Nested use opens a SAVEPOINT: an exception caught between the inner and the outer block
        undoes only the inner block's writes, and nothing is durable before the outermost
        ``COMMIT``.
        """
        with self._lock:
            if self.conn.in_transaction:
                yield from self._savepoint()
                return
            with self._gate.held():
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    # An error such as SQLITE_FULL may already have ended the transaction.
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
                try:
                    self.conn.execute("COMMIT")
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise

    def _savepoint(self) -> Iterator[StoreCore]:
        name = f"lpm_sp_{next(self._savepoints)}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                self.conn.execute(f"RELEASE SAVEPOINT {name}")
            raise
        self.conn.execute(f"RELEASE SAVEPOINT {name}")

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Several reads that must see one state of the database.

        A deferred ``BEGIN`` that only reads never asks for the write lock, so it cannot
        deadlock with a writer; inside a caller's transaction it simply joins it.
        """
        with self._lock:
            if self.conn.in_transaction:
                yield
                return
            self.conn.execute("BEGIN")
            try:
                # Take the shared lock now, waiting out a writer: no lock is held before it.
                self.read_waiting(
                    lambda: self.conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
                )
                yield
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")

    # -- queries -------------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a query and fetch every row while holding the lock (no lazy cursors escape)."""
        with self._lock:
            cursor = self.conn.cursor()
            # A per-cursor row factory: sqlite-utils expects plain tuples from the connection.
            cursor.row_factory = sqlite3.Row
            try:
                if self.conn.in_transaction:  # a lock may be held: never retry half-way
                    return cursor.execute(sql, params).fetchall()
                return self.read_waiting(lambda: cursor.execute(sql, params).fetchall())
            finally:
                cursor.close()

    def read_waiting(self, read: Callable[[], T]) -> T:
        """``read()`` (no lock held yet), waiting while another process writes."""
        return read_waiting(self._gate, read)

    def _row(self, sql: str, params: Sequence[Any], what: str) -> sqlite3.Row:
        """The first row of a query, or ``NotFound(what)``."""
        rows = self._rows(sql, params)
        if not rows:
            raise NotFound(f"{what} does not exist")
        return rows[0]

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None

    def _require(self, table: str, row_id: int, what: str) -> None:
        """``NotFound`` unless ``table`` has a row with this id."""
        if not self._rows(f"SELECT 1 FROM {table} WHERE id = ?", [row_id]):
            raise NotFound(f"{what} #{row_id} does not exist")

    def _profile(self, profile_id: int) -> Profile:
        sql = "SELECT * FROM profiles WHERE id = ?"
        return Profile.from_row(self._row(sql, [profile_id], f"profile #{profile_id}"))

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement in its own transaction (or in the caller's, when one is open)."""
        with self.transaction():
            return self.conn.execute(sql, params)

    def _insert(self, table: str, values: dict[str, Any]) -> int:
        """Insert one row in a transaction and return its id."""
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cursor = self._write(
            f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(values.values())
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    # -- diagnostics ---------------------------------------------------------------------------

    def pragmas(self) -> dict[str, Any]:
        """The safety pragmas as this connection reads them back: what SQLite really applied, for
        the checks (tests, `lpm doctor`) that must not trust what was asked."""
        names = ("foreign_keys", "secure_delete", "busy_timeout", "synchronous", "journal_mode")
        return {name: self._scalar(f"PRAGMA {name}") for name in names}
