"""Open WebUI export (Settings > Chats > Export, ``chat-export-<ms>.json``).

A JSON array of chat rows ``{id, title, chat: {...}, created_at, updated_at, ...}``. The chat
keeps its messages as a tree in ``chat.history.messages`` (id -> ``{id, parentId,
childrenIds, role, content, timestamp}``) with ``chat.history.currentId`` the message on
screen; we walk back from it through ``parentId``, so regenerated answers and edits off that
branch are left out. Very old chats only have the flat ``chat.messages`` list, read in order.
A system prompt set for the chat (``chat.params.system``) comes first. Assistant text has the
model's reasoning and tool calls inline as ``<details type="reasoning">`` blocks; those are
removed so that only the answer is learned from.
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
    join_text_parts,
    key_path,
    ref_part,
    render_path,
    short,
    text_value,
)
from .safe_json import JsonRecord

FORMAT = "openwebui"
_ROLES = frozenset({"user", "assistant", "system"})
_SKIPPED_ROLES = frozenset({"tool", "function"})
_TEXT_BLOCKS = frozenset({"text", "input_text", "output_text"})
_DETAILS = re.compile(
    r'<details type="(?:reasoning|tool_calls|code_interpreter)"[^>]*>.*?</details>\s*', re.S
)


def matches(value: Any) -> bool:
    """An export row (``chat`` with a history or a flat message list) or a bare chat."""
    if not isinstance(value, dict):
        return False
    chat = value.get("chat")
    if isinstance(chat, dict):
        return isinstance(chat.get("history"), dict) or isinstance(chat.get("messages"), list)
    return isinstance(value.get("history"), dict)


def conversation(
    record: JsonRecord, place: Place, ctx: ParseContext
) -> ImportedConversation | None:
    row = expect(record.value, dict, place, "", "an object (a chat)")
    # A full export row wraps the chat; a bare chat object is accepted as well.
    chat_path = "chat" if "chat" in row else ""
    chat = get(row, "chat", "dict", place, "", required=True) if chat_path else row
    title = get(row, "title", "str", place, "") or get(chat, "title", "str", place, chat_path)
    place = place.titled("chat", title)
    chat_id = get(row, "id", "str", place, "") or get(chat, "id", "str", place, chat_path)
    conv_ref = f"{FORMAT}:{ref_part(chat_id or record.record.replace(' ', ''))}"
    messages = _system_prompt(chat, chat_path, conv_ref, place, ctx)
    for msg_path, item in _visible_messages(chat, chat_path, place):
        message = _message(item, msg_path, conv_ref, place, ctx)
        if message is not None:
            messages.append(message)
    created = row.get("created_at", chat.get("timestamp"))
    return make_conversation(title, iso_utc(created, place, "created_at"), messages, conv_ref)


def _system_prompt(
    chat: dict, path: JsonPath, conv_ref: str, place: Place, ctx: ParseContext
) -> list:
    params = get(chat, "params", "dict", place, path) or {}
    where = key_path(key_path(path, "params"), "system")
    system = get(params, "system", "str", place, key_path(path, "params")) or ""
    text = text_value(system, place, where, ctx.limits.max_message_chars)
    return (
        [ImportedMessage("system", text, None, f"{conv_ref}:params.system")] if text.strip() else []
    )


def _visible_messages(chat: dict, path: JsonPath, place: Place) -> list[tuple[JsonPath, dict]]:
    """(path, message) pairs on the branch shown last, root first."""
    history = get(chat, "history", "dict", place, path)
    history_path = key_path(path, "history")
    tree = get(history, "messages", "dict", place, history_path) if history else None
    if not tree:
        flat = get(chat, "messages", "list", place, path) or []
        return [(key_path(key_path(path, "messages"), i), m) for i, m in enumerate(flat)]
    tree_path = key_path(history_path, "messages")
    current = get(history, "currentId", "str", place, history_path) or next(reversed(tree))
    if current not in tree:
        missing = f"refers to a missing message {short(current)!r}"
        raise place.error(key_path(history_path, "currentId"), missing)
    branch: list[tuple[str, dict]] = []
    seen: set[str] = set()
    node_id: str | None = current
    while node_id is not None:
        if node_id in seen:
            raise place.error(key_path(tree_path, node_id), "parentId links form a cycle")
        seen.add(node_id)
        where = key_path(tree_path, node_id)
        node = expect(tree[node_id], dict, place, where, "an object (a message)")
        branch.append((where, node))
        node_id = get(node, "parentId", "str", place, where)
        if node_id is not None and node_id not in tree:
            missing = f"refers to a missing message {short(node_id)!r}"
            raise place.error(key_path(where, "parentId"), missing)
    branch.reverse()
    return branch


def _message(
    item: Any, where: JsonPath, conv_ref: str, place: Place, ctx: ParseContext
) -> ImportedMessage | None:
    item = expect(item, dict, place, where, "an object (a message)")
    role = get(item, "role", "str", place, where, required=True)
    if role in _SKIPPED_ROLES:
        return None
    if role not in _ROLES:
        raise place.error(key_path(where, "role"), f"unknown role {short(role)!r}")
    content = item.get("content")
    if isinstance(content, list):
        text = join_text_parts(content, place, key_path(where, "content"), _TEXT_BLOCKS)
    else:
        text = get(item, "content", "str", place, where) or ""
    if role == "assistant":
        text = _DETAILS.sub("", text)
    text = text_value(text, place, key_path(where, "content"), ctx.limits.max_message_chars)
    if not text.strip():
        return None
    msg_id = get(item, "id", "str", place, where) or render_path(where)
    created = iso_utc(item.get("timestamp"), place, key_path(where, "timestamp"))
    return ImportedMessage(role, text, created, f"{conv_ref}:{ref_part(msg_id)}")
