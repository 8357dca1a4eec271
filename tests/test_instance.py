"""One interactive instance per data dir (R17) and the lock file's mode (R8)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from lpm_local import locations
from lpm_local.errors import AlreadyRunning
from lpm_local.storage.instance import InstanceLock

# Tries the lock in a fresh process; prints how long the attempt took and its outcome.
_SECOND_INSTANCE = """
import json, sys, time
from lpm_local.errors import AlreadyRunning
from lpm_local.storage.instance import InstanceLock
start = time.monotonic()
try:
    InstanceLock().acquire()
    outcome = "acquired"
except AlreadyRunning as error:
    outcome = str(error)
print(json.dumps({"seconds": time.monotonic() - start, "outcome": outcome}))
"""


def _second_instance() -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _SECOND_INSTANCE], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_second_instance_fails_fast_with_a_clear_message():
    with InstanceLock() as first:
        result = _second_instance()
        assert result["seconds"] < 2
        assert result["outcome"] == (
            f"lpm is already running for {locations.data_dir()} (pid {os.getpid()}). "
            "Close it first, or use LPM_HOME to run a separate profile store."
        )
        # The first instance is unaffected: still holding, pid still recorded.
        assert first.held
        assert locations.lock_path().read_text().strip() == str(os.getpid())
        with pytest.raises(AlreadyRunning):
            InstanceLock().acquire()
    # Released: the next instance starts.
    assert _second_instance()["outcome"] == "acquired"


def test_same_process_second_lock_fails_and_release_is_idempotent():
    lock = InstanceLock().acquire()
    with pytest.raises(AlreadyRunning, match=r"\(pid \d+\)"):
        InstanceLock().acquire()
    lock.release()
    lock.release()
    with InstanceLock() as again:
        assert again.held
    assert not again.held


def test_lock_of_a_killed_instance_is_free():
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from lpm_local.storage.instance import InstanceLock; "
            "InstanceLock().acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}"):
            InstanceLock().acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with InstanceLock() as lock:  # the kernel dropped the flock: no stale lock after kill -9
        assert lock.held


def test_lock_file_and_dir_are_private_under_umask_022():
    old = os.umask(0o022)
    try:
        with InstanceLock():
            assert stat.S_IMODE(locations.lock_path().stat().st_mode) == 0o600
            assert stat.S_IMODE(locations.data_dir().stat().st_mode) == 0o700
    finally:
        os.umask(old)
