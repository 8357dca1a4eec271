"""``.lpm`` bundle import: restore an exported memory (and its chats) into a profile.

Anything the exporter would not have written is refused (``reader.py``, ``format.py``) *before*
the store is touched; then one transaction restores the memory blob byte for byte (the memory
after a restore is the memory that was exported, bit for bit), the chats with their timestamps
and provenance, and records the bundle as an import of its own (sha256-deduplicated, undoable
with ``lpm imports undo``, which puts back the memory that was current before it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from lpm_local.data.bundle.format import FORMAT
from lpm_local.data.bundle.history import restore_conversations
from lpm_local.data.bundle.reader import OpenBundle, open_bundle
from lpm_local.data.sources import (
    FileResult,
    Progress,
    added_notes,
    check_cancel,
    file_sha256,
    known_conversations,
)
from lpm_local.storage.profiles import validate_profile_name
from lpm_local.storage.records import Profile
from lpm_local.storage.store import Store


@dataclass(frozen=True)
class BundleImportResult:
    path: Path
    profile: str
    status: str  # "added", "would add" or "duplicate"
    import_id: int | None
    memory_version: int | None  # the restored version's new id (None: bundle had no memory)
    conversations: int
    messages: int
    backbone: str | None

    def as_file_result(self) -> FileResult:
        return FileResult(
            self.path, FORMAT, self.status, self.conversations, self.messages, self.import_id
        )


def import_bundle(
    store: Store,
    path: Path | str,
    *,
    profile: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> BundleImportResult:
    """Restore a bundle into ``profile`` (default: the profile named in the bundle, created if
    missing). The memory becomes current, bit for bit; chats are added; one transaction."""
    path = Path(path)
    with open_bundle(path) as bundle:
        name = validate_profile_name(profile or bundle.manifest.profile_name)
        sha = file_sha256(path, cancel)
        if dry_run:
            return _dry_run(store, bundle, name, sha, cancel)
        with store.transaction():
            owner = store.ensure_profile(name)
            if (record := store.find_import(owner.id, sha)) is not None:
                return _result(bundle, name, "duplicate", record.id, None, 0, 0)
            fresh = store.last_message_id(owner.id) is None
            record = store.add_import(
                owner.id,
                file_sha256=sha,
                file_name=path.name,
                format=FORMAT,
                memory_version_before=owner.current_version_id,
            )
            counts = _restore_history(store, owner, record.id, bundle, progress, cancel)
            version = _restore_memory(store, owner, bundle, fresh)
            if bundle.manifest.profile_note:
                merged, added = added_notes(
                    store.get_profile(name).note, [bundle.manifest.profile_note]
                )
                if added:  # recorded, so that undoing the restore removes it
                    store.set_profile_note(owner.id, merged)
                    store.set_import_note_added(record.id, added)
            store.set_import_counts(record.id, *counts)
            store.audit(
                owner.id,
                "bundle-import",
                f"import #{record.id}: memory version "
                f"{version}, {counts[0]} conversations, {counts[1]} messages",
            )
        return _result(bundle, name, "added", record.id, version, *counts)


def _dry_run(
    store: Store, bundle: OpenBundle, name: str, sha: str, cancel: threading.Event | None
) -> BundleImportResult:
    existing = [p for p in store.list_profiles() if p.name == name]
    if existing and (record := store.find_import(existing[0].id, sha)) is not None:
        return _result(bundle, name, "duplicate", record.id, None, 0, 0)
    counts = _restore_history(None, None, None, bundle, None, cancel)
    return _result(bundle, name, "would add", None, None, *counts)


def _restore_history(
    store: Store | None,
    owner: Profile | None,
    import_id: int | None,
    bundle: OpenBundle,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> tuple[int, int]:
    reader = bundle.history()
    if reader is None:
        return 0, 0
    # A bundle restored into the profile it came from (or any holding the same chats) adds
    # only the conversations that profile does not hold yet.
    known = known_conversations(store, owner.id) if store is not None and owner else set()
    return restore_conversations(
        reader,
        store,
        owner.id if owner else None,
        import_id,
        known=known,
        progress=progress,
        cancel=lambda: check_cancel(cancel),
    )


def _restore_memory(store: Store, owner: Profile, bundle: OpenBundle, fresh: bool) -> int | None:
    memory = bundle.manifest.memory
    if bundle.blob is None or memory is None:
        return None
    version = store.add_memory_version(
        owner.id,
        tensors=bundle.blob,
        backbone=bundle.manifest.backbone,
        projector_sha256=bundle.manifest.projector_sha256,
        config_json=memory.config_json,
        train_loss=memory.train_loss,
        heldout_loss=memory.heldout_loss,
        reason="bundle",
        # Into a profile that had no chats, the memory has seen every restored message.
        trained_through_message_id=store.last_message_id(owner.id) if fresh else None,
    )
    return version.id


def _result(
    bundle: OpenBundle,
    name: str,
    status: str,
    import_id: int | None,
    version: int | None,
    conversations: int,
    messages: int,
) -> BundleImportResult:
    return BundleImportResult(
        bundle.path,
        name,
        status,
        import_id,
        version,
        conversations,
        messages,
        bundle.manifest.backbone,
    )
