"""ChatGPT data export: ``conversations.json`` (or the 2026 shards ``conversations-000.json``...).

Each conversation is a tree in ``mapping`` (node id -> ``{id, message, parent, children}``);
what the user saw is the path from ``current_node`` back to the root through ``parent``, so
edited and regenerated branches off that path are left out. On the path we keep user, assistant
and visible system messages whose ``content_type`` is ``text`` or ``multimodal_text`` (string
parts only: image and audio pointers are dicts), and skip: nodes without a message (the root),
``tool`` messages, assistant messages addressed to a tool (``recipient`` other than ``all``),
messages hidden from the conversation (``metadata.is_visually_hidden_from_conversation``), and
every other content type (code, execution output, thoughts, reasoning recaps, browsing...).
Assistant text on either side of a tool call (text, code, its output, text) is one reply on
screen and becomes one assistant turn; citation markers (private-use characters) are removed.
Custom instructions (``user_editable_context``) become profile notes, not messages.
"""

from __future__ import annotations

import re
from typing import Any

from .base import ImportedConversation, ImportedMessage, ParseContext, make_conversation
from .fields import (
    JsonPath,
    Place,
    expect,
    get,
    iso_utc,
    key_path,
    ref_part,
    short,
    text_value,
    type_name,
)
from .safe_json import JsonRecord

FORMAT = "chatgpt"
_TEXT_TYPES = frozenset({"text", "multimodal_text"})
_ROLES = frozenset({"user", "assistant", "system"})
_NOTE_PREFIX = {
    "about_user_message": "About me (ChatGPT custom instructions): ",
    "about_model_message": "How I want replies (ChatGPT custom instructions): ",
}
# Older exports keep custom instructions only in the content, wrapped in boilerplate.
_CONTENT_FALLBACK = {
    "about_user_message": "user_profile",
    "about_model_message": "user_instructions",
}


# ChatGPT marks citations and entities in the text with private-use characters:
# "\ue200cite\ue202turn0search1\ue201" (U+E200 opens, U+E202 separates, U+E201 closes). They
# render as nothing (or a link) in ChatGPT and as garbage anywhere else: drop the whole span, and
# any stray marker left by a truncated one.
_CITATION = re.compile("\ue200[^\ue200\ue201]*\ue201|[\ue200-\ue203]")


def matches(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("mapping"), dict)


def conversation(
    record: JsonRecord, place: Place, ctx: ParseContext
) -> ImportedConversation | None:
    obj = expect(record.value, dict, place, "", "an object (a conversation)")
    title = get(obj, "title", "str", place, "")
    place = place.titled("conversation", title)
    mapping = get(obj, "mapping", "dict", place, "", required=True)
    current = get(obj, "current_node", "str", place, "")
    if not mapping:
        return None  # an empty chat: nothing to check further, nothing to import
    conv_id = get(obj, "conversation_id", "str", place, "") or get(obj, "id", "str", place, "")
    conv_ref = f"{FORMAT}:{ref_part(conv_id or record.record.replace(' ', ''))}"
    messages: list[ImportedMessage] = []
    for node_id in _current_path(mapping, current, place):
        message = _message(mapping[node_id], node_id, conv_ref, place, ctx)
        if message is None:
            continue
        if messages and message.role == "assistant" == messages[-1].role:
            # Text, a tool call (code, its output: skipped), more text: one reply on screen,
            # so one assistant turn (the first fragment's time and reference).
            first = messages[-1]
            text = f"{first.content}\n\n{message.content}"
            text = text_value(
                text, place, key_path("mapping", node_id), ctx.limits.max_message_chars
            )
            messages[-1] = ImportedMessage("assistant", text, first.created_at, first.source_ref)
        else:
            messages.append(message)
    created = iso_utc(obj.get("create_time"), place, "create_time")
    return make_conversation(title, created, messages, conv_ref)


def _current_path(mapping: dict, current: str | None, place: Place) -> list[str]:
    """Node ids from the root to ``current``, following ``parent`` links."""
    if current is None:
        if not mapping:
            return []
        # No current node recorded: the last leaf is the branch shown last.
        leaves = [k for k, n in mapping.items() if isinstance(n, dict) and not n.get("children")]
        current = leaves[-1] if leaves else next(reversed(mapping))
    if current not in mapping:
        raise place.error("current_node", f"refers to a missing node {short(current)!r}")
    path: list[str] = []
    seen: set[str] = set()
    node_id: str | None = current
    while node_id is not None:
        if node_id in seen:
            raise place.error(key_path("mapping", node_id), "parent links form a cycle")
        seen.add(node_id)
        where = key_path("mapping", node_id)
        node = expect(mapping[node_id], dict, place, where, "an object (a node)")
        parent = get(node, "parent", "str", place, where)
        if parent is not None and parent not in mapping:
            raise place.error(
                key_path(where, "parent"), f"refers to a missing node {short(parent)!r}"
            )
        path.append(node_id)
        node_id = parent
    path.reverse()
    return path


def _message(
    node: dict, node_id: str, conv_ref: str, place: Place, ctx: ParseContext
) -> ImportedMessage | None:
    where = key_path(key_path("mapping", node_id), "message")
    message = get(node, "message", "dict", place, key_path("mapping", node_id))
    if message is None:
        return None  # the root, or a placeholder node
    author = get(message, "author", "dict", place, where, required=True)
    role = get(author, "role", "str", place, key_path(where, "author"), required=True)
    content_path = key_path(where, "content")
    content = get(message, "content", "dict", place, where, required=True)
    content_type = get(content, "content_type", "str", place, content_path, required=True)
    metadata = get(message, "metadata", "dict", place, where) or {}
    if content_type == "user_editable_context":
        _add_notes(content, metadata, place, where, ctx)
        return None
    meta_path = key_path(where, "metadata")
    hidden = get(metadata, "is_visually_hidden_from_conversation", "bool", place, meta_path)
    recipient = get(message, "recipient", "str", place, where)
    channel = get(message, "channel", "str", place, where)
    if (
        role not in _ROLES
        or hidden
        or content_type not in _TEXT_TYPES
        or recipient not in (None, "all")
        or channel not in (None, "final")
    ):
        return None
    text = _CITATION.sub("", _parts_text(content, place, content_path))
    text = text_value(text, place, content_path, ctx.limits.max_message_chars)
    if not text.strip():
        return None
    created = iso_utc(message.get("create_time"), place, key_path(where, "create_time"))
    return ImportedMessage(role, text, created, f"{conv_ref}:{ref_part(node_id)}")


def _parts_text(content: dict, place: Place, path: JsonPath) -> str:
    parts = get(content, "parts", "list", place, path) or []
    texts = []
    for index, part in enumerate(parts):
        if isinstance(part, str):
            if part:
                texts.append(part)
        elif not isinstance(part, dict):  # dicts are image/audio/file pointers: not text
            where = key_path(key_path(path, "parts"), index)
            raise place.error(where, f"expected a string, got {type_name(part)}")
    return "\n".join(texts)


def _add_notes(content: dict, metadata: dict, place: Place, where: str, ctx: ParseContext) -> None:
    meta_path = key_path(where, "metadata")
    data = get(metadata, "user_context_message_data", "dict", place, meta_path) or {}
    data_path = key_path(meta_path, "user_context_message_data")
    content_path = key_path(where, "content")
    for key, prefix in _NOTE_PREFIX.items():
        text = get(data, key, "str", place, data_path)
        if not text:
            fallback = get(content, _CONTENT_FALLBACK[key], "str", place, content_path)
            text = _unwrap(fallback) if fallback else None
        if text and text.strip():
            note = text_value(text.strip(), place, content_path, ctx.limits.max_message_chars)
            ctx.add_note(prefix + note)


def _unwrap(text: str) -> str:
    """The user's own words from ``user_profile``/``user_instructions``: ChatGPT wraps them in
    a fixed preamble and a ``` fence."""
    first = text.find("```")
    last = text.rfind("```")
    return text[first + 3 : last] if 0 <= first < last else text
