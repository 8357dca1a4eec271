"""ShareGPT: ``{"id": ..., "conversations": [{"from": "human", "value": "..."}, ...]}``.

As a JSON array or as JSONL, one conversation per item/line. Speakers: ``human``/``user`` ->
user, ``gpt``/``assistant`` (and the ``chatgpt``/``bard``/``bing``/``model`` variants found in
the wild) -> assistant, ``system`` -> system; tool turns (``function_call``, ``observation``,
``tool``) are skipped. A top-level ``system`` string (a common variant) comes first.
"""

from __future__ import annotations

from typing import Any

from .base import ImportedConversation, ImportedMessage, ParseContext, Role, make_conversation
from .fields import Place, expect, get, key_path, ref_part, short, text_value
from .safe_json import JsonRecord

FORMAT = "sharegpt"
_SPEAKERS: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}
_SKIPPED = frozenset({"function_call", "observation", "tool", "function", "function_response"})


def matches(value: Any) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("conversations"), list):
        return False
    turns = value["conversations"]
    return not turns or (isinstance(turns[0], dict) and "from" in turns[0])


def conversation(
    record: JsonRecord, place: Place, ctx: ParseContext
) -> ImportedConversation | None:
    obj = expect(record.value, dict, place, "", "an object (a conversation)")
    conv_id = get(obj, "id", "id", place, "")
    conv_key = conv_id if conv_id is not None else record.record.replace(" ", "")
    conv_ref = f"{FORMAT}:{ref_part(conv_key)}"
    title = get(obj, "title", "str", place, "")
    place = place.titled("conversation", title)
    limit = ctx.limits.max_message_chars
    messages: list[ImportedMessage] = []
    system = text_value(get(obj, "system", "str", place, "") or "", place, "system", limit)
    if system.strip():
        messages.append(ImportedMessage("system", system, None, f"{conv_ref}:system"))
    turns = get(obj, "conversations", "list", place, "", required=True)
    for index, turn in enumerate(turns):
        where = key_path("conversations", index)
        turn = expect(turn, dict, place, where, "an object (a turn)")
        speaker = get(turn, "from", "str", place, where, required=True)
        if speaker.lower() in _SKIPPED:
            continue
        role = _SPEAKERS.get(speaker.lower())
        if role is None:
            raise place.error(key_path(where, "from"), f"unknown speaker {short(speaker)!r}")
        value = get(turn, "value", "str", place, where, required=True)
        text = text_value(value, place, key_path(where, "value"), limit)
        if text.strip():
            messages.append(ImportedMessage(role, text, None, f"{conv_ref}:{index}"))
    return make_conversation(title, None, messages, conv_ref)
