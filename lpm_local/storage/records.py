"""Immutable records read from the database, and the one timestamp format the store writes.

Records are frozen dataclasses built from ``sqlite3.Row``s: callers get plain values they cannot
mutate by accident, and a record never holds a live cursor or connection. Booleans stored as
INTEGER 0/1 come back as ``bool``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from lpm_local.errors import BadInput

REFIT_STATUSES = ("running", "committed", "no_improvement", "cancelled", "failed")


def utc_now() -> str:
    """Now as ISO 8601 UTC with microseconds, so text order is time order."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def to_utc_iso(value: str | datetime | None) -> str:
    """Normalise a timestamp to the store's format (``utc_now()``'s), ``None`` meaning now.

    Imported logs carry timestamps in many shapes; storing them all in one format keeps
    ``ORDER BY created_at`` a true time order. A naive timestamp is taken as UTC.
    """
    if value is None:
        return utc_now()
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadInput(f"not an ISO 8601 timestamp: {value[:40]!r}") from None
    if not isinstance(value, datetime):
        raise BadInput(f"not a timestamp: {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Profile:
    id: int
    name: str
    created_at: str
    memory_enabled: bool
    current_version_id: int | None
    # Free text kept with the profile, e.g. custom instructions found in an imported export.
    note: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Profile:
        return cls(
            id=row["id"],
            name=row["name"],
            created_at=row["created_at"],
            memory_enabled=bool(row["memory_enabled"]),
            current_version_id=row["current_version_id"],
            note=row["note"],
        )


@dataclass(frozen=True)
class Conversation:
    id: int
    profile_id: int
    title: str | None
    created_at: str
    updated_at: str
    exclude_from_memory: bool
    import_id: int | None
    source_ref: str | None
    # Filled by list_conversations()/get_conversation(); 0 where it was not counted.
    message_count: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Conversation:
        keys = row.keys()
        return cls(
            id=row["id"],
            profile_id=row["profile_id"],
            title=row["title"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            exclude_from_memory=bool(row["exclude_from_memory"]),
            import_id=row["import_id"],
            source_ref=row["source_ref"],
            message_count=row["message_count"] if "message_count" in keys else 0,
        )


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    created_at: str
    import_id: int | None
    source_ref: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Message:
        return cls(
            id=row["id"],
            conversation_id=row["conversation_id"],
            role=row["role"],
            content=row["content"],
            created_at=row["created_at"],
            import_id=row["import_id"],
            source_ref=row["source_ref"],
        )


@dataclass(frozen=True)
class NewMessage:
    """A message to add in bulk (``Store.add_messages``), e.g. from an importer."""

    role: str
    content: str
    created_at: str | datetime | None = None
    source_ref: str | None = None


@dataclass(frozen=True)
class MemoryVersion:
    id: int
    profile_id: int
    parent_id: int | None
    created_at: str
    backbone: str | None
    projector_sha256: str | None
    config_json: str | None
    sha256: str
    n_bytes: int
    train_loss: float | None
    heldout_loss: float | None
    trained_through_message_id: int | None
    reason: str | None
    # The safetensors bytes, already checked against ``sha256``; None in listings, which never
    # load blobs (a profile can hold many versions of several MB each).
    tensors: bytes | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> MemoryVersion:
        keys = row.keys()
        return cls(
            id=row["id"],
            profile_id=row["profile_id"],
            parent_id=row["parent_id"],
            created_at=row["created_at"],
            backbone=row["backbone"],
            projector_sha256=row["projector_sha256"],
            config_json=row["config_json"],
            sha256=row["sha256"],
            n_bytes=row["n_bytes"],
            train_loss=row["train_loss"],
            heldout_loss=row["heldout_loss"],
            trained_through_message_id=row["trained_through_message_id"],
            reason=row["reason"],
            tensors=bytes(row["tensors"]) if "tensors" in keys else None,
        )


@dataclass(frozen=True)
class ImportRecord:
    id: int
    profile_id: int
    file_sha256: str
    file_name: str | None
    format: str | None
    created_at: str
    n_conversations: int
    n_messages: int
    # The memory version current before this import, so "undo import" can restore it exactly.
    memory_version_before: int | None
    # What this import appended to the profile note (undo removes exactly these).
    note_added: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ImportRecord:
        raw = row["note_added"] if "note_added" in row.keys() else None
        return cls(
            id=row["id"],
            profile_id=row["profile_id"],
            file_sha256=row["file_sha256"],
            file_name=row["file_name"],
            format=row["format"],
            created_at=row["created_at"],
            n_conversations=row["n_conversations"] or 0,
            n_messages=row["n_messages"] or 0,
            memory_version_before=row["memory_version_before"],
            note_added=tuple(json.loads(raw)) if raw else (),
        )


@dataclass(frozen=True)
class RefitRecord:
    id: int
    profile_id: int
    started_at: str
    finished_at: str | None
    status: str
    base_version_id: int | None
    new_version_id: int | None
    steps: int | None
    detail: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RefitRecord:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class AuditEntry:
    id: int
    profile_id: int | None
    at: str
    action: str
    detail: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AuditEntry:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})
