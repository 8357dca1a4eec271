"""Readers while another process writes (issue 15.2): they wait, they never crash.

A long write transaction (an import of a big export) takes SQLite's EXCLUSIVE lock once its
dirty pages spill from the page cache; from then on every read of another process gets
"database is locked" after ``busy_timeout`` (5 s). ``lpm profile list`` and ``lpm memory status``
used to die there with a traceback, in ``Store.open``'s ``quick_check``. Here a second process
really holds such a lock for longer than the busy timeout.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lpm_local import locations
from lpm_local.storage.store import BUSY_TIMEOUT_MS, Store

ROOT = Path(__file__).resolve().parents[1]
HOLD_S = BUSY_TIMEOUT_MS / 1000 + 3  # longer than a reader's busy_timeout

# Writes enough rows in one transaction to spill the cache (-> EXCLUSIVE lock), says so, holds.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lpm_local.storage.store import Store
    store = Store.open(Path(sys.argv[1]))
    with store.transaction():
        store.conn.execute("PRAGMA cache_size = 50")
        for i in range(3000):
            store.conn.execute("INSERT INTO settings VALUES (?, ?)", [f"k{i}", "x" * 2000])
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
    print("committed", flush=True)
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


def _lpm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lpm_local.cli", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )


def _start_holder(db: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    # The scenario is real: a plain reader is refused at once.
    probe = sqlite3.connect(db, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        probe.execute("SELECT count(*) FROM profiles").fetchall()
    probe.close()
    return holder


def test_profile_list_and_memory_status_wait_for_a_writer():
    Store.open().close()
    holder = _start_holder(locations.db_path(), HOLD_S)
    try:
        started = time.monotonic()
        listed = _lpm("profile", "list")
        waited = time.monotonic() - started
        status = _lpm("memory", "status")
    finally:
        holder.wait(timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr and "default" in listed.stdout
    # It waited for the writer (past the busy timeout) and said so on one line.
    assert waited >= BUSY_TIMEOUT_MS / 1000
    assert listed.stderr.strip().splitlines() == [
        "waiting for another lpm process that is writing the database (an import?); up to 10 min"
    ]
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr and "profile" in status.stdout
    assert holder.returncode == 0


def test_a_read_that_waits_too_long_is_one_line(monkeypatch):
    from lpm_local.storage import connection
    from lpm_local.storage.write_gate import DatabaseBusy

    store = Store.open()
    holder = _start_holder(store.path, HOLD_S)
    try:
        monkeypatch.setattr(connection, "READ_WAIT_S", 1.0)
        with pytest.raises(DatabaseBusy, match="kept the database locked for more than 1 s"):
            store.list_profiles()
    finally:
        holder.wait(timeout=120)
        store.close()
    # Once the writer is done the same store reads normally.
    with Store.open() as again:
        assert again.active_profile().name == "default"


@pytest.mark.slow
def test_a_real_long_import_and_readers_together(tmp_path):
    """``lpm import`` of a big file in one process; ``profile list``, ``memory status`` and
    ``imports list`` in another, while it writes."""
    big = tmp_path / "big.jsonl"
    with big.open("w") as out:
        for i in range(40_000):
            turns = [
                {"role": ("user", "assistant")[k % 2], "content": f"m {i} {k} " + "w " * 40}
                for k in range(6)
            ]
            out.write(json.dumps({"messages": turns}) + "\n")
    Store.open().close()
    importer = subprocess.Popen(
        [sys.executable, "-m", "lpm_local.cli", "import", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        results = []
        while importer.poll() is None and len(results) < 6:
            for command in (("profile", "list"), ("memory", "status"), ("imports", "list")):
                results.append(_lpm(*command))
    finally:
        out, err = importer.communicate(timeout=600)
    assert importer.returncode == 0, err
    assert results
    for result in results:
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
