"""OpenAI chat fine-tuning data: one ``{"messages": [{"role", "content"}, ...]}`` per line.

``content`` is a string, null (an assistant turn that only calls tools) or a list of parts
(``{type: "text", text}``; images and audio are skipped). ``developer`` is the newer name of
``system``. Tool results (``tool``/``function`` roles) and assistant turns that are only
``tool_calls`` carry no conversation text and are skipped. A JSON array of such objects is
accepted as well.
"""

from __future__ import annotations

from typing import Any

from .base import ImportedConversation, ImportedMessage, ParseContext, Role, make_conversation
from .fields import Place, expect, get, join_text_parts, key_path, short, text_value
from .safe_json import JsonRecord

FORMAT = "openai-jsonl"
_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_SKIPPED = frozenset({"tool", "function", "ipython"})
_TEXT_BLOCKS = frozenset({"text", "input_text", "output_text"})


def matches(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        return False
    messages = value["messages"]
    return not messages or (isinstance(messages[0], dict) and "role" in messages[0])


def conversation(
    record: JsonRecord, place: Place, ctx: ParseContext
) -> ImportedConversation | None:
    obj = expect(record.value, dict, place, "", "an object with a 'messages' list")
    conv_ref = f"{FORMAT}:{record.record.replace(' ', '')}"
    items = get(obj, "messages", "list", place, "", required=True)
    messages: list[ImportedMessage] = []
    for index, item in enumerate(items):
        where = key_path("messages", index)
        item = expect(item, dict, place, where, "an object (a message)")
        role_name = get(item, "role", "str", place, where, required=True)
        if role_name in _SKIPPED:
            continue
        role = _ROLES.get(role_name)
        if role is None:
            raise place.error(key_path(where, "role"), f"unknown role {short(role_name)!r}")
        content = item.get("content")
        if isinstance(content, list):
            text = join_text_parts(content, place, key_path(where, "content"), _TEXT_BLOCKS)
        else:
            text = get(item, "content", "str", place, where) or ""
        text = text_value(text, place, key_path(where, "content"), ctx.limits.max_message_chars)
        if text.strip():
            messages.append(ImportedMessage(role, text, None, f"{conv_ref}:{index}"))
    return make_conversation(None, None, messages, conv_ref)
