"""Two processes writing one database (R16): no "database is locked", no lost update.

Each worker does read-then-write increments of one counter inside ``store.transaction()``, with a
pause between the read and the write so the other process is sure to try in that window. With a
deferred ``BEGIN`` this fails within a few iterations (one side gets "database is locked" on its
lock upgrade); with ``BEGIN IMMEDIATE`` alone one process starves behind the other's loop and
times out; with the write gate they take turns. Both workers also open the database at the same
moment while it does not exist yet, so migrations race too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from lpm_local.storage.store import Store
from lpm_local.storage.write_gate import DatabaseBusy, WriteGate

_WORKER = """
import json, os, sqlite3, sys, time
from pathlib import Path
from lpm_local.storage.store import Store

n, go = int(sys.argv[1]), Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
counts = {"locked": 0, "other_errors": 0, "done": 0}
with Store.open() as store:
    for _ in range(n):
        try:
            with store.transaction():
                value = int(store.get_setting("counter", "0"))
                time.sleep(0.0005)
                store.set_setting("counter", str(value + 1))
            counts["done"] += 1
        except sqlite3.OperationalError as error:
            counts["locked" if "locked" in str(error) else "other_errors"] += 1
print(json.dumps(counts))
"""


def _race(tmp_path, n: int) -> None:
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(n), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)  # both interpreters up and polling
    go.touch()
    results = []
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        results.append(json.loads(out))
    assert results == [{"locked": 0, "other_errors": 0, "done": n}] * 2
    with Store.open() as store:
        assert store.get_setting("counter") == str(2 * n)  # no lost update


def test_two_processes_take_turns_without_lock_errors(tmp_path):
    _race(tmp_path, 40)


@pytest.mark.slow
def test_two_processes_300_read_then_write_transactions_each(tmp_path):
    # ~11 s here: each commit is ~20 ms of fsyncs (synchronous=FULL).
    _race(tmp_path, 300)


def test_write_gate_times_out_with_a_clear_error_and_recovers(tmp_path):
    db = tmp_path / "x.sqlite3"
    holder, waiter = WriteGate(db), WriteGate(db, timeout_s=0.2)
    with holder.held():
        start = time.monotonic()
        with pytest.raises(DatabaseBusy, match="busy in another lpm process for more than 0.2 s"):
            with waiter.held():
                pass
        assert time.monotonic() - start < 2
    # The abandoned waiter thread got the gate after the holder let go, and gave it back.
    with WriteGate(db, timeout_s=2).held():
        pass
