"""Claude.ai data export: ``conversations.json`` (also inside the export zip).

A JSON array of ``{uuid, name, created_at, chat_messages: [...]}``; each message has
``sender`` (``human`` or ``assistant``), ``text`` and ``content`` blocks. Newer exports leave
``text`` empty and put the words in ``content[{type: "text", text}]``; other block types
(``thinking``, ``tool_use``, ``tool_result``, images...) are not conversation text and are
skipped, as are attachments' extracted file contents (documents, not the user's words).
When a conversation records its branch (``current_leaf_message_uuid`` with
``parent_message_uuid`` on messages), only the branch the user last saw is kept.
"""

from __future__ import annotations

from typing import Any

from .base import ImportedConversation, ImportedMessage, ParseContext, make_conversation
from .fields import (
    Place,
    expect,
    get,
    iso_utc,
    join_text_parts,
    key_path,
    ref_part,
    short,
    text_value,
)
from .safe_json import JsonRecord

FORMAT = "claude"
_SENDERS = {"human": "user", "user": "user", "assistant": "assistant"}
_TEXT_BLOCKS = frozenset({"text"})


def matches(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("chat_messages"), list)


def conversation(
    record: JsonRecord, place: Place, ctx: ParseContext
) -> ImportedConversation | None:
    obj = expect(record.value, dict, place, "", "an object (a conversation)")
    title = get(obj, "name", "str", place, "")
    place = place.titled("conversation", title)
    conv_id = get(obj, "uuid", "str", place, "") or record.record.replace(" ", "")
    conv_ref = f"{FORMAT}:{ref_part(conv_id)}"
    raw = get(obj, "chat_messages", "list", place, "", required=True)
    items = [
        expect(m, dict, place, key_path("chat_messages", i), "an object (a message)")
        for i, m in enumerate(raw)
    ]
    leaf = get(obj, "current_leaf_message_uuid", "str", place, "")
    order = _branch(items, leaf, place) if leaf else range(len(items))
    messages = []
    for index in order:
        message = _message(items[index], index, conv_ref, place, ctx)
        if message is not None:
            messages.append(message)
    created = iso_utc(obj.get("created_at"), place, "created_at")
    return make_conversation(title, created, messages, conv_ref)


def _branch(items: list[dict], leaf: str, place: Place) -> list[int]:
    """Indices of the messages from the root to ``leaf`` via ``parent_message_uuid``."""
    by_id: dict[str, int] = {}
    for index, item in enumerate(items):
        uuid = get(item, "uuid", "str", place, key_path("chat_messages", index))
        if uuid:
            by_id[uuid] = index
    if leaf not in by_id:
        raise place.error(
            "current_leaf_message_uuid", f"refers to a missing message {short(leaf)!r}"
        )
    path: list[int] = []
    uuid: str | None = leaf
    while uuid in by_id:  # the root's parent is a sentinel uuid that names no message
        index = by_id.pop(uuid)  # pop: a cycle ends the walk instead of looping
        path.append(index)
        uuid = get(
            items[index], "parent_message_uuid", "str", place, key_path("chat_messages", index)
        )
    path.reverse()
    return path


def _message(
    item: dict, index: int, conv_ref: str, place: Place, ctx: ParseContext
) -> ImportedMessage | None:
    where = key_path("chat_messages", index)
    sender = get(item, "sender", "str", place, where, required=True)
    role = _SENDERS.get(sender)
    if role is None:
        raise place.error(key_path(where, "sender"), f"unknown sender {short(sender)!r}")
    text = get(item, "text", "str", place, where) or ""
    if not text.strip():
        blocks = get(item, "content", "list", place, where) or []
        text = join_text_parts(blocks, place, key_path(where, "content"), _TEXT_BLOCKS)
    text = text_value(text, place, where, ctx.limits.max_message_chars)
    if not text.strip():
        return None
    uuid = get(item, "uuid", "str", place, where) or str(index)
    created = iso_utc(item.get("created_at"), place, key_path(where, "created_at"))
    return ImportedMessage(role, text, created, f"{conv_ref}:{ref_part(uuid)}")
