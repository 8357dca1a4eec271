"""The evidence side of a wipe: sampling what is deleted, removing bundles, scanning the files.

A wipe's report says what it deleted *and* that none of it is left. Counting rows proves
the database no longer references the data; it does not prove the bytes left the file (a free
page, a journal, an export lying in the data dir). So before deleting, a few of the values about
to go are sampled (32-byte windows of message texts and slot blobs), and afterwards every file
under the data dir is scanned for them.

The scan runs in a child process: reading the live database file from this process would be
harmless only while none of its connections holds a lock, and closing any descriptor of that
file drops all of this process's SQLite locks (they are POSIX locks, owned by the process).
A child has its own locks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lpm_local.data.bundle.format import PARTIAL_SUFFIX, read_manifest
from lpm_local.errors import LpmError

if TYPE_CHECKING:
    from lpm_local.storage.store import Store

SAMPLE_BYTES = 32
_MAX_PER_KIND = 4
# Fewer distinct bytes than this and a window could occur by chance (zeros, padding).
_MIN_DISTINCT = 8
_CHUNK = 1 << 20

_SCAN = r"""
import json, os, sys
root, needles = sys.argv[1], [bytes.fromhex(h) for h in json.load(sys.stdin)]
overlap = max((len(n) for n in needles), default=1) - 1
hits = set()
for folder, _, files in os.walk(root):
    for name in files:
        path = os.path.join(folder, name)
        if os.path.islink(path):
            continue
        try:
            with open(path, "rb") as fh:
                tail = b""
                while chunk := fh.read(1 << 20):
                    buf = tail + chunk
                    hits.update((path, i) for i, n in enumerate(needles) if n in buf)
                    tail = buf[-overlap:] if overlap else b""
        except OSError:
            pass
json.dump(sorted(hits), sys.stdout)
"""


@dataclass(frozen=True)
class Sample:
    kind: str  # "text" (a message) or "blob" (a memory version)
    value: bytes


def sample_values(store: Store, kind: str, profile_id: int | None) -> list[Sample]:
    """A few windows of the values a wipe of ``kind`` is about to delete (in its transaction)."""
    mine = "" if profile_id is None else "WHERE profile_id = ?"
    params = [] if profile_id is None else [profile_id]
    rows = store.conn.execute(
        f"SELECT substr(tensors, max(1, length(tensors) - {2 * SAMPLE_BYTES - 1}), {SAMPLE_BYTES})"
        f" FROM memory_versions {mine} ORDER BY id DESC LIMIT {_MAX_PER_KIND}",
        params,
    ).fetchall()
    samples = [Sample("blob", bytes(r[0])) for r in rows]
    if kind != "memory":
        mine = "" if profile_id is None else "WHERE c.profile_id = ?"
        # Newest (typed) and oldest (often imported) messages; the middle of their text.
        for order in ("DESC", "ASC"):
            rows = store.conn.execute(
                "SELECT substr(m.content, max(1, length(m.content) / 2 - 16), 32) FROM messages m"
                f" JOIN conversations c ON c.id = m.conversation_id {mine}"
                f" ORDER BY m.id {order} LIMIT {_MAX_PER_KIND // 2}",
                params,
            ).fetchall()
            samples += [Sample("text", r[0].encode("utf-8")) for r in rows]
    return [
        s
        for s in dict.fromkeys(samples)
        if len(s.value) >= SAMPLE_BYTES // 2 and len(set(s.value)) >= _MIN_DISTINCT
    ]


def scan_for_samples(store: Store, root: Path, samples: list[Sample]) -> list[str]:
    """Files under ``root`` (relative names) holding a sample that is not legitimately still
    in the database (a value shared with data outside the wipe, e.g. one file imported into
    two profiles, is not a leftover)."""
    if not samples:
        return []
    needles = json.dumps([s.value.hex() for s in samples])
    done = subprocess.run(
        [sys.executable, "-I", "-c", _SCAN, str(root)],
        input=needles,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise LpmError(f"could not scan {root} to verify the wipe: {done.stderr.strip()[-200:]}")
    leftovers = set()
    for path, index in json.loads(done.stdout):
        if not _still_referenced(store, samples[index]):
            leftovers.add(os.path.relpath(path, root))
    return sorted(leftovers)


def _still_referenced(store: Store, sample: Sample) -> bool:
    if sample.kind == "blob":
        sql = "SELECT 1 FROM memory_versions WHERE instr(tensors, ?) > 0 LIMIT 1"
    else:
        sql = "SELECT 1 FROM messages WHERE instr(CAST(content AS BLOB), ?) > 0 LIMIT 1"
    with store.transaction():  # holds the store's lock; a short read
        return store.conn.execute(sql, [sample.value]).fetchone() is not None


def remove_bundles(
    root: Path, kind: str, profile_name: str | None, *, skip_prefix: str = "lpm.sqlite3"
) -> list[Path]:
    """Overwrite with zeros and delete the bundles under ``root`` that hold wiped data: those
    of ``profile_name`` (all of them for kind "all") and every partial export.

    Files named like the database (``skip_prefix``: the db, its journal, its write gate) are
    never opened here (see the module docstring); symlinks are never followed or removed.
    """
    removed = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if name.startswith(skip_prefix) or path.is_symlink() or not path.is_file():
                continue
            if name.endswith(PARTIAL_SUFFIX) or _bundle_in_scope(path, kind, profile_name):
                _shred(path)
                removed.append(path)
    return removed


def _bundle_in_scope(path: Path, kind: str, profile_name: str | None) -> bool:
    try:
        manifest = read_manifest(path)
    except (LpmError, OSError):
        return False  # not a readable bundle: not ours to delete
    return manifest is not None and (kind == "all" or manifest.profile_name == profile_name)


def _shred(path: Path) -> None:
    """Zero the file's bytes in place (so its blocks do not keep them), then unlink it."""
    size = path.stat().st_size
    zeros = bytes(min(size, _CHUNK))
    with open(path, "r+b") as fh:
        left = size
        while left:
            left -= fh.write(zeros[: min(left, _CHUNK)])
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()
