"""Path edge cases (issue 15.9): each gives one line (exit 2) or works, and the app changes
the mode only of files it created (or made in an earlier run), never a symlink's target.

Decisions, documented here and in docs/RELIABILITY.md:
- a symlinked database is followed (data on another volume is a reasonable set-up); its
  target's mode is left as its owner set it;
- a zero-length database file is initialised as new, unless lpm has committed to it before (an
  empty rollback journal beside it): then the data was lost and it is refused like a corrupt
  file, with the same advice, and left as it is;
- an app database (oterm, elia, llm) with a hot journal beside it is read from a private copy
  in which SQLite rolls the journal back; the user's files are not touched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lpm_local import locations
from lpm_local.data.importers import parse_file
from lpm_local.errors import BadPath, CorruptDatabase
from lpm_local.storage.store import Store

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "imports"


def _lpm(*args: str, home: Path | str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", LPM_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "lpm_local.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _one_line(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_lpm_home_dev_null_is_one_line():
    _one_line(_lpm("profile", "list", home="/dev/null"), "cannot create the data directory")


def test_a_file_in_the_way_of_the_data_dir_is_one_line(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    _one_line(_lpm("profile", "list", home=tmp_path), "cannot create the data directory")


def test_a_missing_parent_is_created_private(tmp_path):
    home = tmp_path / "missing" / "parent"
    result = _lpm("profile", "list", home=home)
    assert result.returncode == 0, result.stderr
    assert _mode(home / "data") == 0o700 and _mode(home / "data" / "lpm.sqlite3") == 0o600


def test_a_directory_at_the_database_path_is_one_line_and_untouched(tmp_path):
    db = tmp_path / "data" / "lpm.sqlite3"
    db.mkdir(parents=True)
    os.chmod(db, 0o755)
    _one_line(_lpm("profile", "list", home=tmp_path), "a directory is where this file should be")
    assert _mode(db) == 0o755 and list(db.iterdir()) == []


def test_a_symlinked_database_is_used_and_its_target_mode_left_alone(tmp_path):
    target = tmp_path / "elsewhere" / "real.sqlite3"
    target.parent.mkdir()
    Store.open(target).close()
    os.chmod(target, 0o640)
    (tmp_path / "home" / "data").mkdir(parents=True)
    (tmp_path / "home" / "data" / "lpm.sqlite3").symlink_to(target)
    result = _lpm("profile", "create", "work", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert _mode(target) == 0o640
    with Store.open(target) as store:
        assert "work" in [p.name for p in store.list_profiles()]


def test_a_dangling_symlink_is_one_line(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "lpm.sqlite3").symlink_to(tmp_path / "nowhere")
    _one_line(_lpm("profile", "list", home=tmp_path), "not a file")


def test_a_new_zero_length_file_is_initialised():
    db = locations.db_path()
    db.parent.mkdir(parents=True)
    db.write_bytes(b"")
    with Store.open() as store:
        assert store.active_profile().name == "default"


def test_a_database_emptied_after_use_is_refused_and_left_alone():
    Store.open().close()
    db = locations.db_path()
    journal = db.with_name(db.name + "-journal")
    assert journal.exists() and journal.stat().st_size == 0  # TRUNCATE mode after a commit
    db.write_bytes(b"")  # lost: truncated by something else
    with pytest.raises(CorruptDatabase, match="empty \\(0 bytes\\), though lpm has written it"):
        Store.open()
    assert db.stat().st_size == 0
    result = _lpm("profile", "list", home=locations.home_override())
    _one_line(result, "Move it aside")


def test_an_unreadable_database_is_one_line(tmp_path):
    if os.getuid() == 0:
        pytest.skip("root reads any file")
    Store.open().close()
    os.chmod(locations.db_path(), 0)
    _one_line(_lpm("profile", "list", home=locations.home_override()), "cannot open")


def test_create_private_file_refuses_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(BadPath, match="a directory is where this file should be"):
        locations.create_private_file(tmp_path / "d")


# Leaves a hot journal: a write transaction spilled to the file, then the process dies.
_CRASH_MID_WRITE = textwrap.dedent(
    """
    import os, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA cache_size = 1")
    conn.execute("BEGIN")
    conn.execute("UPDATE responses SET response = 'HALF WRITTEN ' || hex(randomblob(3000))")
    conn.execute("DELETE FROM responses WHERE rowid % 2 = 0")
    os._exit(0)
    """
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_app_database_with_a_hot_journal_is_read_as_it_was(tmp_path):
    clean = tmp_path / "clean" / "logs.db"
    clean.parent.mkdir()
    conn = sqlite3.connect(clean)
    conn.executescript((FIXTURES / "sqlite" / "llm_logs.sql").read_text())
    conn.close()
    crashed = tmp_path / "crashed" / "logs.db"
    crashed.parent.mkdir()
    shutil.copy(clean, crashed)
    subprocess.run([sys.executable, "-c", _CRASH_MID_WRITE, str(crashed)], check=True)
    journal = crashed.with_name("logs.db-journal")
    assert journal.stat().st_size > 0
    before = (_sha(crashed), _sha(journal))

    def messages(path: Path):
        with parse_file(path) as pf:
            return [[(m.role, m.content) for m in c.messages] for c in pf.conversations]

    assert messages(crashed) == messages(clean)
    assert (_sha(crashed), _sha(journal)) == before  # the user's files are untouched
