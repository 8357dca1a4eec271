"""A full disk (issue 15.4): one line with advice, never a traceback, nothing half-done.

The disk is made "full" for one process with a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ
ignored so writes fail with EFBIG instead of killing it): SQLite then cannot grow the database
or its journal, exactly as on a full disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from lpm_local import locations
from lpm_local.storage.store import Store

ROOT = Path(__file__).resolve().parents[1]
LIMITED = textwrap.dedent(
    """
    import resource, runpy, signal, sys
    limit = int(sys.argv[1])
    sys.argv = ["lpm", *sys.argv[2:]]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    runpy.run_module("lpm_local.cli", run_name="__main__")
    """
)


def _lpm(*args: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    prefix = ["-c", LIMITED, str(fsize)] if fsize is not None else ["-m", "lpm_local.cli"]
    return subprocess.run(
        [sys.executable, *prefix, *args], capture_output=True, text=True, env=env, timeout=300
    )


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _export(path: Path, n: int, words: int = 50) -> Path:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"q{i} " + "w " * words},
                    {"role": "assistant", "content": f"a{i} " + "w " * words},
                ]
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_import_on_a_full_disk_is_one_line_and_writes_nothing(tmp_path):
    Store.open().close()
    size = locations.db_path().stat().st_size
    result = _lpm("import", str(_export(tmp_path / "big.jsonl", 3000)), fsize=size + 64 * 1024)
    _one_line_error(result, "Free some space", "nothing was half-written")
    with Store.open() as store:
        assert store._scalar("SELECT count(*) FROM messages") == 0
        assert store._scalar("SELECT count(*) FROM imports") == 0
        assert store._scalar("PRAGMA integrity_check") == "ok"


def test_a_wipe_on_a_full_disk_is_reported_and_finished_later(tmp_path):
    assert _lpm("import", str(_export(tmp_path / "chats.jsonl", 2000))).returncode == 0
    size = locations.db_path().stat().st_size
    # The intent row (an early page) can be written, the deleted rows' later pages cannot.
    limit = size // 2
    failed = _lpm("profile", "delete", "default", "--yes", fsize=limit)
    _one_line_error(failed, "could not finish", "finishes the next time lpm opens")
    # Still full: every command says so in one line (the unfinished wipe blocks the data).
    blocked = _lpm("profile", "list", fsize=limit)
    _one_line_error(blocked, "interrupted wipe could not be finished", "lpm profile list")
    # Space again: the next command finishes the wipe, nothing of the profile is left.
    listed = _lpm("profile", "list")
    assert listed.returncode == 0, listed.stderr
    with Store.open() as store:
        assert store._scalar("SELECT count(*) FROM messages") == 0
        assert store._scalar("SELECT count(*) FROM pending_wipes") == 0
