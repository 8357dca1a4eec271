"""A bundle's ``conversations.jsonl``: one conversation per line, written and read back exactly.

Each line is ``{"title", "created_at", "updated_at", "exclude_from_memory", "source_ref",
"messages": [{"role", "content", "created_at", "source_ref"}]}``. Message text is kept byte for
byte (it is data: never cleaned, never interpreted). Reading is strict because a bundle is
untrusted: unknown keys, wrong types, roles outside the chat template's three, timestamps that
are not ISO 8601, text that cannot be UTF-8 (lone surrogates from ``\\ud800`` escapes) are all
refused with the line number, and nothing is written for a bundle that fails anywhere (the
caller holds one transaction).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from lpm_local.chat.encoding import ROLES
from lpm_local.data.bundle.format import MemberReader, field_of, parse_json
from lpm_local.data.sources import conversation_sha256
from lpm_local.errors import BadBundle, BadInput
from lpm_local.storage.records import Conversation, Message, NewMessage, to_utc_iso
from lpm_local.storage.store import Store

# Bigger than any message a person writes or an importer accepts (2M chars), so our own
# exports always come back; small enough to refuse a crafted multi-GB line early.
MAX_TEXT_CHARS = 16_000_000
MAX_TITLE_CHARS = 10_000
_CONVERSATION_KEYS = {
    "title",
    "created_at",
    "updated_at",
    "exclude_from_memory",
    "source_ref",
    "messages",
}
_MESSAGE_KEYS = {"role", "content", "created_at", "source_ref"}


def conversation_line(conversation: Conversation, messages: list[Message]) -> bytes:
    """One JSONL line (UTF-8, newline-terminated) for a conversation and its messages."""
    data = {
        "title": conversation.title,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "exclude_from_memory": conversation.exclude_from_memory,
        "source_ref": conversation.source_ref,
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "created_at": m.created_at,
                "source_ref": m.source_ref,
            }
            for m in messages
        ],
    }
    return json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class RestoredConversation:
    title: str | None
    created_at: str
    exclude_from_memory: bool
    source_ref: str | None
    messages: list[NewMessage]


def restore_conversations(
    reader: MemberReader,
    store: Store | None,
    profile_id: int | None,
    import_id: int | None,
    *,
    progress: Callable[[str, float | None], None] | None = None,
    cancel: Callable[[], None] | None = None,
    known: set[str] | None = None,
) -> tuple[int, int]:
    """Check every line and, given a store, add it to ``profile_id``; returns (convs, msgs).

    A conversation whose content hash (``conversation_sha256``) is in ``known`` is checked but
    not added (nor counted); the hashes of those added join ``known``.

    Raises ``BadBundle`` on the first bad line, or when the member's bytes do not match the
    manifest (checked once the last line is read, before the caller commits).
    """
    n_conversations = n_messages = 0
    for number, line in reader.lines():
        if cancel is not None:
            cancel()
        where = f"{reader.where}: line {number}"
        conversation = parse_conversation(parse_json(line, where), where)
        sha = conversation_sha256((m.role, m.content) for m in conversation.messages)
        if known is not None:
            if sha in known:
                continue
            known.add(sha)
        if store is not None and profile_id is not None:
            row = store.create_conversation(
                profile_id,
                conversation.title,
                import_id=import_id,
                source_ref=conversation.source_ref,
                created_at=conversation.created_at,
                exclude_from_memory=conversation.exclude_from_memory,
                content_sha256=sha,
            )
            store.add_messages(row.id, conversation.messages, import_id=import_id)
        n_conversations += 1
        n_messages += len(conversation.messages)
        if progress is not None and n_conversations % 100 == 0:
            progress(f"restoring chats: {n_messages:,} messages", reader.fraction)
    return n_conversations, n_messages


def parse_conversation(obj: object, where: str) -> RestoredConversation:
    if not isinstance(obj, dict):
        raise BadBundle("a conversation must be a JSON object", where=where)
    if unknown := sorted(set(obj) - _CONVERSATION_KEYS):
        raise BadBundle(f"unknown conversation field {unknown[0][:40]!r}", where=where)
    title = field_of(obj, "title", (str,), where, required=False)
    if title is not None:
        _text(title, "title", where, MAX_TITLE_CHARS)
    items = field_of(obj, "messages", (list,), where)
    messages = [_message(item, f"{where}: messages[{i}]") for i, item in enumerate(items)]
    source_ref = field_of(obj, "source_ref", (str,), where, required=False)
    if source_ref is not None:
        _text(source_ref, "source_ref", where, MAX_TITLE_CHARS)
    return RestoredConversation(
        title=title,
        created_at=_timestamp(field_of(obj, "created_at", (str,), where), where),
        exclude_from_memory=field_of(obj, "exclude_from_memory", (bool,), where),
        source_ref=source_ref,
        messages=messages,
    )


def _message(obj: object, where: str) -> NewMessage:
    if not isinstance(obj, dict):
        raise BadBundle("a message must be a JSON object", where=where)
    if unknown := sorted(set(obj) - _MESSAGE_KEYS):
        raise BadBundle(f"unknown message field {unknown[0][:40]!r}", where=where)
    role = field_of(obj, "role", (str,), where)
    if role not in ROLES:
        raise BadBundle(f"invalid role {role[:20]!r}", where=where, hint="use " + ", ".join(ROLES))
    content = _text(field_of(obj, "content", (str,), where), "content", where, MAX_TEXT_CHARS)
    source_ref = field_of(obj, "source_ref", (str,), where, required=False)
    if source_ref is not None:
        _text(source_ref, "source_ref", where, MAX_TITLE_CHARS)
    created_at = _timestamp(field_of(obj, "created_at", (str,), where), where)
    return NewMessage(role, content, created_at, source_ref)


def _text(value: str, name: str, where: str, limit: int) -> str:
    if len(value) > limit:
        raise BadBundle(f"{name} is longer than {limit:,} characters", where=where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadBundle(
            f"{name} holds a lone surrogate (not valid Unicode text)", where=where
        ) from None
    return value


def _timestamp(value: str, where: str) -> str:
    try:
        return to_utc_iso(value)
    except BadInput as exc:
        raise BadBundle(exc.what, where=where) from None
    except (OverflowError, ValueError):  # e.g. year 1 with a positive offset
        raise BadBundle(f"timestamp {value[:40]!r} is out of range", where=where) from None
