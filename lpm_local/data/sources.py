"""What every import source shares: its identity (sha256), cancellation, the result per file.

Chat logs (``importing``) and ``.lpm`` bundles (``bundle.archive``) are both import sources; this
module is what they have in common, so neither needs the other.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lpm_local.errors import LpmError

# (what is happening, fraction done or None): the convention of every long task in the app.
Progress = Callable[[str, "float | None"], None]

_HASH_CHUNK = 1 << 20


class ImportCancelled(LpmError):
    """The user cancelled an import; nothing of the file being imported was written."""


@dataclass(frozen=True)
class FileResult:
    """What happened to one file: ``status`` is "added", "would add" (dry run) or "duplicate"."""

    path: Path
    format: str
    status: str
    conversations: int = 0
    messages: int = 0
    import_id: int | None = None
    # Custom instructions found in the file (stored as the profile note).
    notes: int = 0


def file_sha256(path: Path | str, cancel: threading.Event | None = None) -> str:
    """The identity of an import source: sha256 of a file's bytes, or for a directory (an
    unzipped export) of the names and bytes of its top-level regular files in name order."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_file():
                digest.update(f"{len(entry.name)}:{entry.name}:".encode("utf-8", "surrogateescape"))
                _hash_into(digest, Path(entry.path), cancel)
    else:
        _hash_into(digest, path, cancel)
    return digest.hexdigest()


def _hash_into(digest: "hashlib._Hash", path: Path, cancel: threading.Event | None) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            check_cancel(cancel)
            digest.update(chunk)


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise ImportCancelled("import cancelled; nothing of the current file was written")


def merge_notes(existing: str | None, notes: Iterable[str]) -> str | None:
    """The profile note with each new note appended once (exports repeat them per file)."""
    parts = [existing] if existing else []
    for note in notes:
        if note and not any(note in part for part in parts):
            parts.append(note)
    return "\n\n".join(parts) or None
