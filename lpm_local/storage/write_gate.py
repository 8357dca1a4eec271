"""A fair queue for the writers of one database, across processes.

Why not just SQLite's ``busy_timeout``: its busy handler *polls*, sleeping up to 100 ms between
tries, while a writer that loops (an import, a CLI command, a test) frees the write lock for a few
microseconds between two transactions and takes it straight back. Measured here, with two
processes doing 300 transactions each (~20 ms per commit with ``synchronous=FULL``), one of them
waited for the other's whole run and failed with "database is locked" after 5 s.

A blocked ``flock`` is woken by the kernel the moment the holder lets go, so writers take turns
(measured: two looping processes interleave, longest wait ~2 transactions). Every outermost
``Store.transaction()`` holds this gate around ``BEGIN IMMEDIATE`` ... ``COMMIT``; SQLite's own
lock stays the real guarantee (and ``busy_timeout`` the backstop for writers that do not know
about the gate, e.g. the ``sqlite3`` shell).

The gate is a separate empty file next to the database (mode 0600), never the database itself:
a ``flock`` or ``close()`` on the database file would interfere with SQLite's POSIX locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from lpm_local import locations
from lpm_local.errors import LpmError

# Long enough to queue behind a legitimately long transaction (an import of a big export);
# short enough that a stopped process (Ctrl-Z) holding the gate gives an error, not a hang.
DEFAULT_TIMEOUT_S = 60.0


class DatabaseBusy(LpmError):
    """Another process kept the database's write gate for longer than the timeout."""


def gate_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-writer")


class WriteGate:
    def __init__(self, db_path: Path, timeout_s: float = DEFAULT_TIMEOUT_S, *, create: bool = True):
        """``create=False``: only wait on the gate, never create its file (for the integrity
        check, which must leave the directory of a corrupt database as it found it)."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.path = gate_path(db_path)
        self.timeout_s = timeout_s
        if create:
            locations.create_private_file(self.path)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the gate for the block. Each use opens its own descriptor: flocks of separate
        open files exclude each other even within one process (two ``Store``s on one file)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            acquired = self._acquire(fd)
        except BaseException:
            os.close(fd)
            raise
        if not acquired:
            # The waiting thread now owns fd and closes it once its flock returns.
            raise DatabaseBusy(
                f"{self.path.parent}: the database is busy in another lpm process for more "
                f"than {self.timeout_s:g} s. Let it finish (or close it) and try again"
            )
        try:
            yield
        finally:
            os.close(fd)  # releases the flock

    def wait_for_writer(self, timeout_s: float) -> bool:
        """Block until no process holds the gate (a writer's transaction ended), at most
        ``timeout_s``; True if it was free by then. Readers call this when SQLite says the
        database is locked: the kernel wakes them the moment the writer commits, instead of
        SQLite's polling."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # no lpm writer ever ran here: a foreign one, poll it
            time.sleep(min(timeout_s, 0.1))
            return True
        try:
            acquired = self._acquire(fd, timeout_s, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        if acquired:
            os.close(fd)  # a shared lock, released at once: only the wait mattered
        return acquired

    def _acquire(self, fd: int, timeout_s: float | None = None, mode: int = fcntl.LOCK_EX) -> bool:
        """Lock ``fd``; False on timeout, in which case ``fd`` belongs to the waiter thread."""
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        # flock has no timeout: block in a helper thread, wait for it with one.
        got_it, mutex = threading.Event(), threading.Lock()
        abandoned = False

        def wait() -> None:
            try:
                fcntl.flock(fd, mode)
            except OSError:
                # Not expected on a local file; going on without the gate costs fairness only,
                # SQLite's lock still serialises the writers.
                pass
            with mutex:
                if abandoned:
                    os.close(fd)
                else:
                    got_it.set()

        threading.Thread(target=wait, name="lpm-write-gate", daemon=True).start()
        if got_it.wait(self.timeout_s if timeout_s is None else timeout_s):
            return True
        with mutex:
            if got_it.is_set():  # granted just as the wait timed out
                return True
            abandoned = True
        return False
