"""What every import source shares: its identity (sha256), cancellation, the result per file.

Chat logs (``importing``) and ``.lpm`` bundles (``bundle.restore``) are both import sources; this
module is what they have in common, so neither needs the other.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lpm_local.errors import LpmError

if TYPE_CHECKING:
    from lpm_local.storage.store import Store

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
    # Conversations left out because the profile already holds the same ones (by content).
    skipped: int = 0
    # Custom instructions this file added to the profile note (0 when all were there already).
    notes_added: int = 0


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
    return added_notes(existing, notes)[0]


def added_notes(existing: str | None, notes: Iterable[str]) -> tuple[str | None, list[str]]:
    """(the merged note, the parts that were not in it yet): an import records the second so
    that undoing it removes exactly what it added."""
    parts = [existing] if existing else []
    added: list[str] = []
    for note in notes:
        if note and not any(note in part for part in parts):
            parts.append(note)
            added.append(note)
    return "\n\n".join(parts) or None, added


def remove_notes(note: str | None, parts: Iterable[str]) -> str | None:
    """``note`` without the ``parts`` an import appended (each with the blank line before it);
    a part the user has since edited is not found, and stays."""
    text = note or ""
    for part in parts:
        if text == part:
            text = ""
        elif text.endswith("\n\n" + part):
            text = text[: -len(part) - 2]
        elif ("\n\n" + part + "\n\n") in text:
            text = text.replace("\n\n" + part + "\n\n", "\n\n", 1)
        elif text.startswith(part + "\n\n"):
            text = text[len(part) + 2 :]
    return text or None


def conversation_sha256(messages: Iterable[tuple[str, str]]) -> str:
    """The identity of a conversation's content: its (role, text) sequence, nothing else (not
    the title, times or source), so another container of the same export or a bundle made
    from these rows hashes the same."""
    digest = hashlib.sha256()
    for role, content in messages:
        digest.update(json.dumps([role, content], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def known_conversations(store: Store, profile_id: int) -> set[str]:
    """Content hashes of the profile's conversations: stored ones, and computed for the rows
    that have none (typed here, or added before hashes were stored)."""
    rows = store._rows(
        "SELECT content_sha256 FROM conversations WHERE profile_id = ? AND content_sha256 "
        "IS NOT NULL",
        [profile_id],
    )
    known = {r[0] for r in rows}
    unhashed = store._rows(
        "SELECT c.id, m.role, m.content FROM conversations c JOIN messages m "
        "ON m.conversation_id = c.id WHERE c.profile_id = ? AND c.content_sha256 IS NULL "
        "ORDER BY c.id, m.id",
        [profile_id],
    )
    for _, group in itertools.groupby(unhashed, key=lambda r: r[0]):
        known.add(conversation_sha256((r[1], r[2]) for r in group))
    return known
