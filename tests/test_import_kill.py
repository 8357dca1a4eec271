"""R2: kill -9 during an import of 5,000 messages: the count is before or before+5,000, and
importing the same file again adds nothing once it is in."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import write_chatgpt_export

from lpm_local.data.importing import import_files
from lpm_local.storage.store import Store

_CHILD = """
import sys
from lpm_local.data.importing import import_files
from lpm_local.storage.store import Store
store = Store.open()
print("ready", flush=True)
import_files(store, [sys.argv[1]])
print("done", flush=True)
"""
N_MESSAGES = 5_000


def _count(store: Store) -> int:
    return store.conn.execute("SELECT count(*) FROM messages").fetchone()[0]


def _template(tmp: Path) -> tuple[Path, int]:
    """A data dir with some history already in it; returns (LPM_HOME, messages before)."""
    home = tmp / "template"
    os.environ["LPM_HOME"] = str(home)
    with Store.open() as store:
        conv = store.create_conversation(store.active_profile().id, "typed before")
        for i in range(7):
            store.add_message(conv.id, "user", f"typed {i}")
        return home, _count(store)


def _kill_loop(tmp: Path, runs: int, monkeypatch) -> dict[str, int]:
    export = write_chatgpt_export(tmp / "conversations.json", 250, N_MESSAGES // 250)
    template, before = _template(tmp)
    outcomes = {"rolled back": 0, "committed": 0}
    duration = None
    for run in range(runs + 1):
        home = tmp / f"run{run}"
        shutil.copytree(template, home)
        monkeypatch.setenv("LPM_HOME", str(home))
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(export)],
            stdout=subprocess.PIPE,
            env={**os.environ, "LPM_HOME": str(home)},
        )
        assert child.stdout.readline().strip() == b"ready"
        started = time.monotonic()
        if duration is None:  # the first run measures an uninterrupted import
            assert child.wait(300) == 0
            duration = time.monotonic() - started
        else:
            time.sleep(random.Random(run).uniform(0, duration * 1.05))
            child.send_signal(signal.SIGKILL)
            child.wait()
        with Store.open() as store:
            assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            after_kill = _count(store)
            assert after_kill in (before, before + N_MESSAGES), (run, after_kill)
            if run:
                outcomes["committed" if after_kill > before else "rolled back"] += 1
            if after_kill == before:
                assert import_files(store, [export]).messages == N_MESSAGES
            again = import_files(store, [export])
            assert again.messages == 0 and again.files[0].status == "duplicate"
            assert _count(store) == before + N_MESSAGES
        shutil.rmtree(home)
    return outcomes


def test_kill_during_import_a_few_times(tmp_path, monkeypatch):
    outcomes = _kill_loop(tmp_path, 2, monkeypatch)
    assert sum(outcomes.values()) == 2


@pytest.mark.slow
def test_kill_during_import_50_times(tmp_path, monkeypatch):
    outcomes = _kill_loop(tmp_path, 50, monkeypatch)
    print(outcomes)
    assert outcomes["rolled back"] >= 10, outcomes  # most kills land inside the transaction
