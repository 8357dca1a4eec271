"""Writing parsed chat logs into the store: one transaction per file, provenance, dedup, undo.

Guarantees:

- A file is imported inside one ``store.transaction()``: the parsers stream lazily and may raise
  ``BadInput`` half way through a file, Ctrl-C or a ``cancel`` may arrive, the process may be
  killed -- in every case the transaction rolls back (or is never committed), so the file's
  conversations are all there or none are.
- Each file is identified by the sha256 of its bytes, recorded in ``imports`` (unique per
  profile) in the same transaction as its rows: importing the same file again adds nothing,
  and so does re-importing after a kill -9 that happened after the commit.
- Every conversation and message keeps its provenance (``import_id`` and the parser's
  ``source_ref``), and the import records the memory version that was current before it, so
  ``undo_import`` can drop exactly its rows and put the memory back bit for bit (a poisoned
  log must be removable without a trace in the memory the user chats with).
- Model compute never runs here: an import only asks for a refit (``request_refit``), which the
  process that owns the memory runtime picks up.

A bundle (``.lpm``) given to ``import_files`` is handed to ``lpm_local.data.bundle.restore``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lpm_local.data.importers import BUNDLE_FORMAT, ParsedFile, detect_format, parse_file
from lpm_local.data.sources import (  # re-exported: the import API in one place
    FileResult,
    ImportCancelled,  # noqa: F401  (re-exported; ruff's autofix had dropped it)
    Progress,
    added_notes,
    check_cancel,
    conversation_sha256,
    file_sha256,
    known_conversations,
    merge_notes,  # noqa: F401  (re-exported)
    remove_notes,
)
from lpm_local.errors import LpmError, visible
from lpm_local.memory.requests import clear_refit_request, pending_refit, request_refit
from lpm_local.storage.chats import title_from
from lpm_local.storage.records import ImportRecord, NewMessage, Profile
from lpm_local.storage.store import Store

REFIT_REASON = "import"


@dataclass
class ImportSummary:
    profile: str
    dry_run: bool
    files: list[FileResult]

    @property
    def duplicates(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "duplicate"]

    @property
    def conversations(self) -> int:
        return sum(f.conversations for f in self.files)

    @property
    def messages(self) -> int:
        return sum(f.messages for f in self.files)

    def by_format(self) -> dict[str, tuple[int, int, int]]:
        """format -> (files, conversations, messages), duplicates not counted."""
        table: dict[str, tuple[int, int, int]] = {}
        for f in self.files:
            if f.status != "duplicate":
                n, c, m = table.get(f.format, (0, 0, 0))
                table[f.format] = (n + 1, c + f.conversations, m + f.messages)
        return table

    def lines(self) -> list[str]:
        """The summary as a person reads it (no message text, only names and counts)."""
        verb = "would add" if self.dry_run else "added"
        out = []
        for fmt, (n, c, m) in sorted(self.by_format().items()):
            files = f"{n} file{'s' * (n != 1)}"
            out.append(f"{fmt}: {verb} {c:,} conversations, {m:,} messages ({files})")
        for f in self.duplicates:
            earlier = f"import #{f.import_id}" if f.import_id else "a file listed before it"
            out.append(f"skipped {visible(f.path.name)}: same content as {earlier}")
        for f in self.files:
            name = visible(f.path.name)
            if f.status != "duplicate" and f.skipped:
                out.append(
                    f"{name}: left out {f.skipped:,} conversation{'s' * (f.skipped != 1)} "
                    "the profile already holds (same messages)"
                )
            if f.status != "duplicate" and f.notes_added:
                undo = f"; `lpm imports undo {f.import_id}` removes it" if f.import_id else ""
                out.append(
                    f"{name}: {'would add' if self.dry_run else 'added'} {f.notes_added} custom "
                    f"instruction{'s' * (f.notes_added != 1)} to the profile note{undo}"
                )
        if not out:
            out.append("nothing to import")
        out.append(
            f"profile '{self.profile}': {verb} {self.conversations:,} conversations, "
            f"{self.messages:,} messages in total"
        )
        return out


@dataclass(frozen=True)
class UndoResult:
    import_id: int
    profile_id: int
    conversations: int
    messages: int
    # The memory version made current again (None: no memory, as before the import).
    memory_version: int | None
    # False when the pre-import version no longer exists (pruned or wiped): memory was cleared.
    memory_restored: bool
    # Custom instructions the import had added to the profile note, removed again.
    notes_removed: int = 0


def import_files(
    store: Store,
    paths: Iterable[Path | str],
    *,
    profile: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> ImportSummary:
    """Import chat logs (any supported format, or ``.lpm`` bundles) into ``profile``.

    ``profile`` None means the active profile. Files are imported in order, each in its own
    transaction; a ``BadInput`` (bad file) or ``ImportCancelled`` leaves that file unwritten
    and stops there: files before it stay imported (importing them again is a no-op), and the
    error carries their ``ImportSummary`` as ``error.completed``.
    ``dry_run`` parses and checks everything and writes nothing.
    """
    target = store.active_profile() if profile is None else store.get_profile(profile)
    seen: dict[str, FileResult] = {}
    results: list[FileResult] = []
    for path in paths:
        try:
            results.append(_import_one(store, target, Path(path), dry_run, progress, cancel, seen))
        except LpmError as error:
            # What was committed before the failing file, for the caller to report.
            done = ImportSummary(target.name, dry_run, results)
            error.completed = done  # type: ignore[attr-defined]
            raise
    return ImportSummary(target.name, dry_run, results)


def _import_one(
    store: Store,
    profile: Profile,
    path: Path,
    dry_run: bool,
    progress: Progress | None,
    cancel: threading.Event | None,
    seen: dict[str, FileResult],
) -> FileResult:
    fmt = detect_format(path)
    if fmt == BUNDLE_FORMAT:
        from lpm_local.data.bundle.restore import (
            import_bundle,  # torch, only when a bundle is given
        )

        restored = import_bundle(
            store, path, profile=profile.name, dry_run=dry_run, progress=progress, cancel=cancel
        )
        return restored.as_file_result()
    _report(progress, f"{path.name}: checking", None)
    sha = file_sha256(path, cancel)
    earlier = seen.get(sha) or _existing(store, profile, path, sha)
    if earlier is not None:
        return earlier
    counter = _Counter()
    with parse_file(path, progress=counter.reporter(progress, path.name)) as parsed:
        if dry_run:
            known = known_conversations(store, profile.id)
            conversations, messages, skipped = _consume(
                store, None, parsed, None, cancel, counter, known
            )
            note = store.get_profile_by_id(profile.id).note
            result = FileResult(
                path,
                parsed.format,
                "would add",
                conversations,
                messages,
                notes=len(parsed.profile_notes),
                skipped=skipped,
                notes_added=len(added_notes(note, parsed.profile_notes)[1]),
            )
        else:
            result = _write_file(store, profile, path, sha, parsed, cancel, counter)
    seen[sha] = FileResult(path, result.format, "duplicate", import_id=result.import_id)
    return result


def _existing(store: Store, profile: Profile, path: Path, sha: str) -> FileResult | None:
    record = store.find_import(profile.id, sha)
    if record is None:
        return None
    return FileResult(path, record.format or "?", "duplicate", import_id=record.id)


def _write_file(
    store: Store,
    profile: Profile,
    path: Path,
    sha: str,
    parsed: ParsedFile,
    cancel: threading.Event | None,
    counter: _Counter,
) -> FileResult:
    with store.transaction():
        # Re-checked under the write lock: another process may have imported it meanwhile.
        if (duplicate := _existing(store, profile, path, sha)) is not None:
            return duplicate
        before = store.get_profile_by_id(profile.id).current_version_id
        record = store.add_import(
            profile.id,
            file_sha256=sha,
            file_name=path.name,
            format=parsed.format,
            memory_version_before=before,
        )
        # The same conversations from another container of the export (json, zip, folder) or
        # from a bundle of this profile are recognised by content and added once.
        known = known_conversations(store, profile.id)
        conversations, messages, skipped = _consume(
            store, profile, parsed, record, cancel, counter, known
        )
        added: list[str] = []
        if parsed.profile_notes:
            note = store.get_profile_by_id(profile.id).note
            merged, added = added_notes(note, parsed.profile_notes)
            if added:
                store.set_profile_note(profile.id, merged)
                store.set_import_note_added(record.id, added)
        store.set_import_counts(record.id, conversations, messages)
        if messages:
            request_refit(store, profile.id, REFIT_REASON)
        store.audit(
            profile.id,
            "import",
            f"import #{record.id} ({parsed.format}): "
            f"{conversations} conversations, {messages} messages",
        )
    return FileResult(
        path,
        parsed.format,
        "added",
        conversations,
        messages,
        record.id,
        len(parsed.profile_notes),
        skipped=skipped,
        notes_added=len(added),
    )


def _consume(
    store: Store,
    profile: Profile | None,
    parsed: ParsedFile,
    record: ImportRecord | None,
    cancel: threading.Event | None,
    counter: _Counter,
    known: set[str],
) -> tuple[int, int, int]:
    """Read the whole stream; write each conversation when ``record`` is given (else count).

    A conversation whose content hash is in ``known`` is left out (and counted as skipped);
    the hashes of those added join ``known``. Returns (conversations, messages, skipped).
    """
    conversations = messages = skipped = 0
    for conversation in parsed.conversations:
        check_cancel(cancel)
        sha = conversation_sha256((m.role, m.content) for m in conversation.messages)
        if sha in known:
            skipped += 1
            continue
        known.add(sha)
        if record is not None and profile is not None:
            row = store.create_conversation(
                profile.id,
                conversation.title or _first_user_title(conversation.messages),
                import_id=record.id,
                source_ref=conversation.source_ref,
                created_at=conversation.created_at,
                content_sha256=sha,
            )
            store.add_messages(
                row.id,
                (
                    NewMessage(m.role, m.content, m.created_at, m.source_ref)
                    for m in conversation.messages
                ),
                import_id=record.id,
            )
        conversations += 1
        messages += len(conversation.messages)
        counter.messages = messages
    return conversations, messages, skipped


def _first_user_title(messages) -> str | None:
    """Logs without titles (ShareGPT, JSONL, transcripts) are named by their first question."""
    return next((title_from(m.content) for m in messages if m.role == "user"), None)


class _Counter:
    """Messages read so far, shown with the parser's byte progress: one line, one bar."""

    messages = 0

    def reporter(self, progress: Progress | None, name: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None

        def report(done: int, total: int) -> None:
            progress(f"{name}: {self.messages:,} messages", done / total if total else None)

        return report


def _report(progress: Progress | None, stage: str, fraction: float | None) -> None:
    if progress is not None:
        progress(stage, fraction)


# -- undo ----------------------------------------------------------------------------------------


def undo_import(store: Store, import_id: int) -> UndoResult:
    """Remove an import's conversations and messages and make the memory version that was
    current before it current again (bit for bit: the same stored blob). Versions made since
    stay in history, not current. A pending import-triggered refit is dropped when this was
    the profile's latest import, so the restored memory is not immediately refitted."""
    with store.transaction():
        record = store.get_import(import_id)
        target, restored = _version_before(store, record)
        latest = max(r.id for r in store.list_imports(record.profile_id)) == record.id
        store.delete_import(import_id)
        if record.note_added:
            # What the import added to the profile note goes with it (exports carry the note).
            note = store.get_profile_by_id(record.profile_id).note
            store.set_profile_note(record.profile_id, remove_notes(note, record.note_added))
        if store.get_profile_by_id(record.profile_id).current_version_id != target:
            store.set_current_version(record.profile_id, target)
        request = pending_refit(store, record.profile_id)
        if latest and request is not None and request.get("reason") == REFIT_REASON:
            clear_refit_request(store, record.profile_id)
        store.audit(
            record.profile_id,
            "import-undo",
            f"import #{import_id}: removed {record.n_conversations} conversations, "
            f"{record.n_messages} messages; memory version now {target}",
        )
    return UndoResult(
        import_id,
        record.profile_id,
        record.n_conversations,
        record.n_messages,
        target,
        restored,
        len(record.note_added),
    )


def _version_before(store: Store, record: ImportRecord) -> tuple[int | None, bool]:
    """(version to make current, whether it is the true pre-import one).

    Version ids can be reused after the newest version is deleted, so a version only counts if
    it still exists and is older than the import; otherwise the memory is cleared rather than
    left on a version that learned from the import.
    """
    if record.memory_version_before is None:
        return None, True
    for version in store.list_memory_versions(record.profile_id):
        if version.id == record.memory_version_before and version.created_at <= record.created_at:
            return version.id, True
    return None, False
