"""Store opening and transactions: pragmas (R7), file modes (R8), corruption (R19), rollback."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lpm_local import locations
from lpm_local.errors import CorruptDatabase
from lpm_local.storage.store import PRAGMAS, Store
from lpm_local.storage.write_gate import gate_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count(store: Store, table: str) -> int:
    return store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# -- pragmas read back as set, private file modes (R7, R8) --------------------------------------


def test_pragmas_read_back_on_every_connection(tmp_path):
    expected = {**PRAGMAS, "busy_timeout": 5000}
    first = Store.open()
    second = Store.open()  # a second connection to the same file
    other = Store.open(tmp_path / "other.sqlite3")
    try:
        for s in (first, second, other):
            assert s.pragmas() == expected
    finally:
        for s in (first, second, other):
            s.close()
    with Store.open() as reopened:
        assert reopened.pragmas() == expected


def test_private_modes_under_umask_022():
    old = os.umask(0o022)
    try:
        with Store.open() as s:
            s.ensure_profile("default")  # a write transaction creates the journal
        db = locations.db_path()
        journal = db.with_name(db.name + "-journal")
        assert _mode(locations.data_dir()) == 0o700
        assert _mode(db) == 0o600
        assert journal.exists(), "journal_mode=TRUNCATE keeps the journal file"
        assert _mode(journal) == 0o600
        assert _mode(gate_path(db)) == 0o600
        assert sorted(os.listdir(db.parent)) == sorted([db.name, journal.name, gate_path(db).name])
    finally:
        os.umask(old)


def test_existing_database_mode_is_tightened():
    with Store.open():
        pass
    os.chmod(locations.db_path(), 0o644)
    with Store.open():
        assert _mode(locations.db_path()) == 0o600


# -- a corrupt file is detected at start and never overwritten (R19) ----------------------------


def _real_db(path: Path) -> Path:
    """A database of ~40 pages, mostly message leaf pages."""
    with Store.open(path) as s:
        c = s.create_conversation(s.ensure_profile().id, "t")
        with s.transaction():
            for i in range(300):
                s.add_message(c.id, "user", f"message {i} " + "x" * 400)
    return path


def _garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(20_000))


def _truncated(path: Path) -> None:
    _real_db(path)
    os.truncate(path, path.stat().st_size // 2)


def _flipped_page(path: Path) -> None:
    _real_db(path)
    page = 4096
    n_pages = path.stat().st_size // page
    with open(path, "r+b") as f:  # the store is closed: no SQLite lock to lose
        f.seek((n_pages // 2) * page)
        data = f.read(page)
        f.seek((n_pages // 2) * page)
        f.write(bytes(b ^ 0xFF for b in data))


@pytest.mark.parametrize("corrupt", [_garbage, _truncated, _flipped_page])
def test_corrupt_database_detected_at_open_and_left_untouched(corrupt):
    db = locations.db_path()
    corrupt(db)
    before_sha, before_files = _sha(db), sorted(os.listdir(db.parent))
    with pytest.raises(CorruptDatabase, match=r"not modified\. Move it aside \(mv .*\.corrupt'\)"):
        Store.open()
    with pytest.raises(CorruptDatabase) as info:
        Store.open()
    assert str(db) in str(info.value) and "restore a backup" in str(info.value)
    assert _sha(db) == before_sha
    assert sorted(os.listdir(db.parent)) == before_files


_KILL_MID_TRANSACTION = """
import os, signal, sys
from lpm_local.storage.store import Store
s = Store.open()
c = s.create_conversation(s.ensure_profile().id)
s.conn.execute("PRAGMA cache_size = 2")  # spill pages to the file before the commit
s.conn.execute("BEGIN IMMEDIATE")
for i in range(500):
    s.conn.execute("INSERT INTO messages (conversation_id, role, content, created_at) "
                   "VALUES (?, 'user', ?, 'x')", (c.id, "y" * 1000))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_hot_journal_after_kill_is_recovered_not_reported_corrupt():
    proc = subprocess.run([sys.executable, "-c", _KILL_MID_TRANSACTION], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    db = locations.db_path()
    assert db.with_name(db.name + "-journal").stat().st_size > 0, "expected a hot journal"
    with Store.open() as s:
        assert _count(s, "messages") == 0
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- transactions ------------------------------------------------------------------------------


def test_transaction_rolls_back_on_exception(store):
    p = store.ensure_profile()
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.create_conversation(p.id, "lost")
            store.set_setting("k", "v")
            raise RuntimeError("boom")
    assert store.list_conversations(p.id) == []
    assert store.get_setting("k") is None
    assert not store.conn.in_transaction


def test_nested_transaction_is_a_savepoint(store):
    p = store.ensure_profile()
    with store.transaction():
        store.create_conversation(p.id, "kept")
        with pytest.raises(ValueError):
            with store.transaction():
                store.create_conversation(p.id, "undone")
                raise ValueError
    assert [c.title for c in store.list_conversations(p.id)] == ["kept"]


def test_threads_sharing_a_store_do_not_lose_updates(store):
    errors = []

    def work():
        try:
            for _ in range(25):
                with store.transaction():
                    value = int(store.get_setting("n", "0"))
                    time.sleep(0.001)  # the other thread runs in this window
                    store.set_setting("n", str(value + 1))
        except Exception as error:  # surfaced below: a thread's exception is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_setting("n") == "50"


# -- deletion ----------------------------------------------------------------------------------


def test_deleted_text_leaves_no_bytes_in_the_files():
    marker = os.urandom(16).hex()
    with Store.open() as s:
        p = s.ensure_profile()
        c = s.create_conversation(p.id)
        s.add_message(c.id, "user", f"secret {marker} " * 50)
        s.add_message(s.create_conversation(p.id).id, "user", "kept")
        s.delete_conversation(c.id)  # secure_delete zeroes it: no VACUUM needed
    # Read only after close: an open()/close() on the live file would drop SQLite's locks.
    for path in locations.data_dir().iterdir():
        assert marker.encode() not in path.read_bytes(), path.name


def test_vacuum_runs_outside_transactions_only(store):
    store.vacuum()
    with store.transaction():
        with pytest.raises(RuntimeError, match="inside a transaction"):
            store.vacuum()


def test_explicit_path_keeps_its_existing_directory_mode(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with Store.open(shared / "x.sqlite3"):
        pass
    assert _mode(shared) == 0o755 and _mode(shared / "x.sqlite3") == 0o600
