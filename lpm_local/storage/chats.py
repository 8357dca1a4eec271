"""Conversations, messages and imports: the history the memory learns from.

Message text is stored exactly as given (it is data, never markup); provenance (``import_id``,
``source_ref``) is kept per message so that an import can be undone and inspected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from lpm_local.chat.encoding import ROLES
from lpm_local.errors import BadInput, NotFound
from lpm_local.storage.connection import StoreCore
from lpm_local.storage.records import (
    Conversation,
    ImportRecord,
    Message,
    NewMessage,
    to_utc_iso,
    utc_now,
)

# A conversation with its message count: the count is an index-only lookup per row.
_CONVERSATION = (
    "SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) "
    "AS message_count FROM conversations c"
)

# The messages the memory may learn from: conversations of the profile not excluded by the user.
_LEARNABLE = (
    "FROM messages m JOIN conversations c ON c.id = m.conversation_id "
    "WHERE c.profile_id = ? AND c.exclude_from_memory = 0 AND m.id > ?"
)


def _checked(message: NewMessage) -> tuple[str, str, str]:
    """(role, content, created_at) of a message to store, or ``BadInput``."""
    if message.role not in ROLES:
        raise BadInput(
            f"invalid message role {str(message.role)[:40]!r}", hint="use " + ", ".join(ROLES)
        )
    if not isinstance(message.content, str):
        raise BadInput(f"message content must be text, not {type(message.content).__name__}")
    return message.role, message.content, to_utc_iso(message.created_at)


TITLE_LIMIT = 48  # characters: what fits in the sidebar and in `lpm chats list`


def title_from(text: str, limit: int = TITLE_LIMIT) -> str | None:
    """A conversation title from its first message: the words of it, shortened on a word.

    None for a message with no words, so the caller can fall back to its own wording.
    """
    words = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if not words:
        return None
    if len(words) <= limit:
        return words
    cut = words[:limit].rsplit(" ", 1)[0] or words[:limit]
    return cut + "…"


class ChatQueries(StoreCore):
    # -- conversations -------------------------------------------------------------------------

    def create_conversation(
        self,
        profile_id: int,
        title: str | None = None,
        *,
        import_id: int | None = None,
        source_ref: str | None = None,
        created_at: str | datetime | None = None,
        exclude_from_memory: bool = False,
        content_sha256: str | None = None,
    ) -> Conversation:
        """A new, empty conversation; ``created_at`` (default now) is also its ``updated_at``.

        ``content_sha256``: the hash of the messages about to be added (imports), for dedup.
        """
        at = to_utc_iso(created_at)
        with self.transaction():
            self._require("profiles", profile_id, "profile")
            if import_id is not None:
                self._require("imports", import_id, "import")
            conversation_id = self._insert(
                "conversations",
                {
                    "profile_id": profile_id,
                    "title": title,
                    "created_at": at,
                    "updated_at": at,
                    "exclude_from_memory": int(bool(exclude_from_memory)),
                    "import_id": import_id,
                    "source_ref": source_ref,
                    **({"content_sha256": content_sha256} if content_sha256 else {}),
                },
            )
            return self.get_conversation(conversation_id)

    def get_conversation(self, conversation_id: int) -> Conversation:
        row = self._row(
            f"{_CONVERSATION} WHERE c.id = ?", [conversation_id], f"conversation #{conversation_id}"
        )
        return Conversation.from_row(row)

    def list_conversations(self, profile_id: int) -> list[Conversation]:
        """A profile's conversations, most recently updated first, with message counts."""
        rows = self._rows(
            f"{_CONVERSATION} WHERE c.profile_id = ? ORDER BY c.updated_at DESC, c.id DESC",
            [profile_id],
        )
        return [Conversation.from_row(r) for r in rows]

    def search_conversations(self, profile_id: int, text: str) -> list[Conversation]:
        """The profile's conversations whose title or any message contains ``text`` (any case),
        most recently updated first.

        A scan, on purpose: a full-text index would keep the words of deleted and wiped
        messages in its own pages, and a person's history is small enough to read through.
        """
        needle = text.casefold()
        with self._lock:
            # Row by row under the lock: a long history is read through, never held in memory.
            cursor = self.conn.execute(
                "SELECT m.conversation_id, m.content FROM messages m JOIN conversations c "
                "ON c.id = m.conversation_id WHERE c.profile_id = ?",
                [profile_id],
            )
            try:
                hits = {cid for cid, content in cursor if needle in content.casefold()}
            finally:
                cursor.close()
        return [
            c
            for c in self.list_conversations(profile_id)
            if c.id in hits or needle in (c.title or "").casefold()
        ]

    def rename_conversation(self, conversation_id: int, title: str | None) -> Conversation:
        self._update_conversation(conversation_id, "title", title)
        return self.get_conversation(conversation_id)

    def set_conversation_excluded(self, conversation_id: int, excluded: bool) -> Conversation:
        """Keep a conversation but stop (or restart) the memory learning from it."""
        self._update_conversation(conversation_id, "exclude_from_memory", int(bool(excluded)))
        return self.get_conversation(conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation and its messages (cascade; the bytes are zeroed)."""
        sql = "DELETE FROM conversations WHERE id = ?"
        if self._write(sql, [conversation_id]).rowcount == 0:
            raise NotFound(f"conversation #{conversation_id} does not exist")

    def _update_conversation(self, conversation_id: int, column: str, value: object) -> None:
        sql = f"UPDATE conversations SET {column} = ? WHERE id = ?"
        if self._write(sql, [value, conversation_id]).rowcount == 0:
            raise NotFound(f"conversation #{conversation_id} does not exist")

    # -- messages ------------------------------------------------------------------------------

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        created_at: str | datetime | None = None,
        import_id: int | None = None,
        source_ref: str | None = None,
    ) -> Message:
        """Append a message; the conversation's ``updated_at`` moves forward to its time."""
        new = NewMessage(role, content, created_at, source_ref)
        with self.transaction():
            self.add_messages(conversation_id, [new], import_id=import_id)
            row = self._rows("SELECT * FROM messages WHERE id = last_insert_rowid()")[0]
            return Message.from_row(row)

    def add_messages(
        self, conversation_id: int, messages: Iterable[NewMessage], *, import_id: int | None = None
    ) -> int:
        """Append many messages in one transaction (an importer's path); returns how many.

        All are checked before any is written, so a bad one leaves the conversation unchanged.
        """
        rows = [(conversation_id, *_checked(m), import_id, m.source_ref) for m in messages]
        if not rows:
            return 0
        with self.transaction():
            self._require("conversations", conversation_id, "conversation")
            if import_id is not None:
                self._require("imports", import_id, "import")
            self.conn.executemany(
                "INSERT INTO messages (conversation_id, role, content, created_at, import_id, "
                "source_ref) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            # max(): an imported message with an old timestamp must not move a chat back in time.
            self._write(
                "UPDATE conversations SET updated_at = max(updated_at, ?) WHERE id = ?",
                [max(row[3] for row in rows), conversation_id],
            )
        return len(rows)

    def messages(self, conversation_id: int) -> list[Message]:
        """A conversation's messages in the order they were added."""
        rows = self._rows(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", [conversation_id]
        )
        if not rows:
            self._require("conversations", conversation_id, "conversation")
        return [Message.from_row(r) for r in rows]

    def memory_history(
        self, profile_id: int, *, after_message_id: int | None = None
    ) -> list[tuple[Conversation, list[Message]]]:
        """What the memory learns from: every conversation of the profile not excluded from
        memory, oldest first, each with its messages in order.

        With ``after_message_id``, only messages with a larger id (added later, e.g. since the
        last refit) and only the conversations that have some.
        """
        with self._snapshot():
            conversations = {
                row["id"]: Conversation.from_row(row)
                for row in self._rows(
                    f"{_CONVERSATION} WHERE c.profile_id = ? AND c.exclude_from_memory = 0",
                    [profile_id],
                )
            }
            rows = self._rows(
                "SELECT m.* " + _LEARNABLE + " ORDER BY c.created_at, c.id, m.id",
                [profile_id, after_message_id or 0],
            )
        history: list[tuple[Conversation, list[Message]]] = []
        for row in rows:
            message = Message.from_row(row)
            if not history or history[-1][0].id != message.conversation_id:
                history.append((conversations[message.conversation_id], []))
            history[-1][1].append(message)
        return history

    def count_user_messages(self, profile_id: int, *, after_message_id: int | None = None) -> int:
        """User turns the memory could learn from (used to schedule refits every K turns)."""
        sql = "SELECT count(*) " + _LEARNABLE + " AND m.role = 'user'"
        return int(self._scalar(sql, [profile_id, after_message_id or 0]))

    def last_message_id(self, profile_id: int) -> int | None:
        """The newest learnable message id: a refit records it as ``trained_through``."""
        return self._scalar("SELECT max(m.id) " + _LEARNABLE, [profile_id, 0])

    # -- imports -------------------------------------------------------------------------------

    def add_import(
        self,
        profile_id: int,
        *,
        file_sha256: str,
        file_name: str | None = None,
        format: str | None = None,
        memory_version_before: int | None = None,
        n_conversations: int = 0,
        n_messages: int = 0,
    ) -> ImportRecord:
        """Record an imported file; ``BadInput`` if this profile already imported it."""
        with self.transaction():
            self._require("profiles", profile_id, "profile")
            if self.find_import(profile_id, file_sha256) is not None:
                raise BadInput(f"{file_name or file_sha256}: this file was already imported")
            import_id = self._insert(
                "imports",
                {
                    "profile_id": profile_id,
                    "file_sha256": file_sha256,
                    "file_name": file_name,
                    "format": format,
                    "created_at": utc_now(),
                    "n_conversations": n_conversations,
                    "n_messages": n_messages,
                    "memory_version_before": memory_version_before,
                },
            )
            return self.get_import(import_id)

    def get_import(self, import_id: int) -> ImportRecord:
        row = self._row("SELECT * FROM imports WHERE id = ?", [import_id], f"import #{import_id}")
        return ImportRecord.from_row(row)

    def find_import(self, profile_id: int, file_sha256: str) -> ImportRecord | None:
        rows = self._rows(
            "SELECT * FROM imports WHERE profile_id = ? AND file_sha256 = ?",
            [profile_id, file_sha256],
        )
        return ImportRecord.from_row(rows[0]) if rows else None

    def list_imports(self, profile_id: int) -> list[ImportRecord]:
        rows = self._rows("SELECT * FROM imports WHERE profile_id = ? ORDER BY id", [profile_id])
        return [ImportRecord.from_row(r) for r in rows]

    def set_import_counts(self, import_id: int, n_conversations: int, n_messages: int) -> None:
        sql = "UPDATE imports SET n_conversations = ?, n_messages = ? WHERE id = ?"
        if self._write(sql, [n_conversations, n_messages, import_id]).rowcount == 0:
            raise NotFound(f"import #{import_id} does not exist")

    def set_import_note_added(self, import_id: int, parts: list[str]) -> None:
        """Record the parts ``import_id`` appended to its profile's note (for undo)."""
        sql = "UPDATE imports SET note_added = ? WHERE id = ?"
        if self._write(sql, [json.dumps(parts) if parts else None, import_id]).rowcount == 0:
            raise NotFound(f"import #{import_id} does not exist")

    def delete_import(self, import_id: int) -> None:
        """Undo an import's data: its conversations and messages go with it (cascade)."""
        if self._write("DELETE FROM imports WHERE id = ?", [import_id]).rowcount == 0:
            raise NotFound(f"import #{import_id} does not exist")
