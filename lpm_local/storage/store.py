"""``Store``: the one SQLite database of the app, opened safely.

Opening does, in this order (private files, a damaged file never overwritten, pragmas that are
really set, migrations that apply whole or not at all):

1. the data dir is created 0700 and the database file 0600 *before* SQLite opens it: SQLite
   creates files with the umask (0644 by default) and gives its journal the database file's
   mode, so creating the database private first makes the journal private too;
2. ``PRAGMA quick_check`` runs before anything could write: a file that is not a database or
   fails the check raises ``CorruptDatabase`` with recovery advice, and is left byte for byte as
   it was (only reading happens until the check passes). While another process holds a long
   write transaction (an import) the check, like every read, waits for it
   (``connection.read_waiting``) instead of failing with "database is locked". Something that
   is not a file at the path, or a database emptied after use, is refused the same way;
3. the safety pragmas are set on the connection and read back;
4. pending migrations are applied, each in its own ``BEGIN IMMEDIATE`` transaction.

Never ``open()`` the live database file from Python: SQLite's locks are POSIX advisory locks,
owned by the process, and closing *any* descriptor of that file drops all of them.

The queries live next door, one concept per file: profiles and settings (``store_profiles``),
conversations, messages and imports (``store_chats``), memory versions, refits and the audit log
(``store_memory``); ``store_core`` holds the connection and transactions.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils.migrations import Migrations

from lpm_local import locations
from lpm_local.errors import BadPath, CorruptDatabase
from lpm_local.storage.chats import ChatQueries
from lpm_local.storage.connection import read_waiting
from lpm_local.storage.disk_errors import StorageFailed, storage_error
from lpm_local.storage.memory_rows import MemoryQueries
from lpm_local.storage.migrations import migrations as MIGRATIONS
from lpm_local.storage.profiles import ProfileQueries
from lpm_local.storage.write_gate import WriteGate

BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another one's transaction to end

# Set on every connection; the values are what ``Store.pragmas()`` must read back.
PRAGMAS: dict[str, str | int] = {
    # Cascades from a profile to everything it owns rely on it (off by default in SQLite).
    "foreign_keys": 1,
    # Zero deleted content in the file, so a wipe leaves no bytes behind.
    "secure_delete": 1,
    # 2 = FULL: fsync the journal before and the database after each commit, so a power cut
    # leaves the old or the new state of a refit or an import, never half of one.
    "synchronous": 2,
    # TRUNCATE, not WAL: SQLite 3.40.1 has the WAL-reset bug (fixed in 3.51.3), and WAL keeps
    # deleted rows in the -wal file until a checkpoint. TRUNCATE also keeps the journal file
    # (empty) between transactions, so it keeps the 0600 mode it was created with.
    "journal_mode": "truncate",
}

# SQLite primary result codes that mean "the bytes are not a sound database".
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
# ... and "it cannot be opened at all" (a directory, no permission).
_SQLITE_CANTOPEN, _SQLITE_PERM = 14, 3


def _advice(path: Path, problem: str) -> str:
    return (
        f"{path}: {problem}; it was not modified. Move it aside "
        f"(mv '{path}' '{path}.corrupt') and start again, or restore a backup"
    )


def _refuse_lost_database(path: Path) -> None:
    """An empty (0-byte) database is new unless lpm committed to it before.

    SQLite treats an empty file as an empty database and would silently initialise it. That is
    right for the file ``create_private_file`` just made (or one a crash left before the first
    commit), and wrong when the data was lost (truncated by a tool or a failing disk): then the
    app must not paper over it with a fresh schema. The sign of an earlier commit is the
    rollback journal, which TRUNCATE mode leaves behind empty after every commit.
    """
    journal = path.with_name(path.name + "-journal")

    def looks_lost() -> bool:
        try:
            return path.stat().st_size == 0 and journal.is_file() and journal.stat().st_size == 0
        except OSError:
            return False

    if not looks_lost():
        return
    # Another process may be creating the database right now (its first transaction has made
    # the journal, not yet the pages): that transaction holds the write gate, so wait for it
    # and look again.
    gate = WriteGate(path, create=False)
    if gate.path.exists():
        with gate.held():
            if not looks_lost():
                return
    if looks_lost():
        raise CorruptDatabase(
            _advice(path, "the database is empty (0 bytes), though lpm has written it before")
        )


def _is_corruption(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(error)
    return "malformed" in text or "not a database" in text


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check``, which only reads; raises ``CorruptDatabase`` on any finding.

    "database is locked" is not corruption: the check waits for the other process's write
    transaction to end (``read_waiting``), however long an import takes, up to its bound. A hot
    journal left by a crash is rolled back by SQLite on this first read, its normal recovery.
    """
    gate = WriteGate(path, create=False)
    try:
        findings = read_waiting(
            gate, lambda: [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        )
    except sqlite3.DatabaseError as error:
        if _is_corruption(error):
            problem = f"not a usable SQLite database ({error})"
            raise CorruptDatabase(_advice(path, problem)) from None
        raise
    if findings != ["ok"]:
        first = " ".join(str(findings[0]).split())[:200]
        raise CorruptDatabase(_advice(path, f"database failed its integrity check ({first})"))


def _connect(path: Path) -> sqlite3.Connection:
    """A checked connection with every pragma of ``PRAGMAS`` in force."""
    # isolation_level=None: autocommit, so transactions are only the explicit ones (store_core).
    # check_same_thread=False: StoreCore serialises threads with its own lock.
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        # First, so the integrity check waits for another process's commit instead of failing.
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _check_integrity(conn, path)
        for name, value in PRAGMAS.items():
            conn.execute(f"PRAGMA {name} = {value}")
        # SQLite ignores some pragmas silently (e.g. journal_mode inside a transaction, or a
        # value it does not know): refuse to run on a connection that is not as configured.
        expected = {**PRAGMAS, "busy_timeout": BUSY_TIMEOUT_MS}
        for name, value in expected.items():
            actual = conn.execute(f"PRAGMA {name}").fetchone()[0]
            if actual != value:
                raise RuntimeError(f"PRAGMA {name} reads back {actual!r}, not {value!r}")
    except BaseException:
        conn.close()
        raise
    return conn


class Store(ProfileQueries, ChatQueries, MemoryQueries):
    """The app's database. Open with ``Store.open()``; use as a context manager or ``close()``."""

    @classmethod
    def open(cls, path: Path | None = None, *, migrate: bool = True) -> Store:
        """Open (creating if needed) the database at ``path``, default ``locations.db_path()``.

        ``migrate=False`` is for tests that build an older schema first.
        Raises ``CorruptDatabase`` if an existing file fails its integrity check.
        """
        if path is None:
            path = locations.db_path()
            locations.ensure_private_dir(path.parent)
        elif not Path(path).parent.exists():
            locations.ensure_private_dir(Path(path).parent)
        # (An explicit path in an existing directory leaves that directory's mode alone: it may
        # be the user's home.)
        path = Path(path)
        # Only creates the file or tightens its mode: the content is never touched here.
        created = locations.create_private_file(path)
        if not created:
            _refuse_lost_database(path)
        try:
            conn = _connect(path)
        except sqlite3.OperationalError as error:
            if getattr(error, "sqlite_errorcode", 0) & 0xFF not in (_SQLITE_CANTOPEN, _SQLITE_PERM):
                raise
            raise BadPath(
                f"{path}: cannot open the database ({error}). Check that it and its directory "
                "are yours and writable"
            ) from None
        store = cls(conn, path)
        try:
            if migrate:
                store.migrate()
                # A wipe killed half way finishes before anything else can read its data.
                # Imported here: wipe builds on the store.
                from lpm_local.data.wipe import resume_pending_wipes

                try:
                    resume_pending_wipes(store)
                except (sqlite3.OperationalError, OSError) as error:
                    failed = storage_error(error, path.parent)
                    if failed is None:
                        raise
                    raise StorageFailed(
                        f"an interrupted wipe could not be finished: {failed}. Until it "
                        "finishes the app does not open; any lpm command (e.g. `lpm profile "
                        "list`) finishes it once there is space"
                    ) from None
        except BaseException:
            store.close()
            raise
        return store

    def __enter__(self) -> Store:
        return self

    def migrate(self, migration_set: Migrations = MIGRATIONS) -> list[str]:
        """Apply pending migrations, each in its own ``BEGIN IMMEDIATE`` transaction.

        The pending list is re-read inside each transaction, so when two processes open a
        fresh database together, the second finds the work done. Returns the applied names.
        """
        applied: list[str] = []
        # A read first: opening an up-to-date database must not queue for the write gate
        # behind another process's long import.
        if not self.read_waiting(lambda: migration_set.pending(self.db)):
            return applied
        while True:
            with self.transaction():
                pending = migration_set.pending(self.db)
                if not pending:
                    return applied
                if not pending[0].transactional:
                    raise ValueError(f"migration {pending[0].name} must be transactional")
                # stop_before the rest: apply() runs exactly the first pending one, inside our
                # transaction (its own atomic() becomes a savepoint).
                migration_set.apply(self.db, stop_before=[m.name for m in pending[1:]])
                applied.append(pending[0].name)

    def vacuum(self) -> None:
        """Rebuild the file so freed pages (and what they held) leave it; used by wipe.

        ``VACUUM`` cannot run inside a transaction; it takes its own exclusive lock.
        """
        with self._lock:
            if self.conn.in_transaction:
                raise RuntimeError("vacuum() inside a transaction")
            with self._gate.held():
                self.conn.execute("VACUUM")
