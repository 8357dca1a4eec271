"""Chats as Markdown, JSON or JSON Lines, for `lpm chats export` and the TUI's export.

Message text is written exactly as stored: it is the user's data. Markdown is the transcript
format `lpm import` reads (``# Title``, then ``## User`` / ``## Assistant`` sections), so an
exported chat imports back; JSON keeps every field; JSON Lines is one chat per line with
OpenAI-style ``messages``, the shape most tools take.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lpm_local.storage.records import Conversation, Message, utc_now

FORMATS = ("md", "json", "jsonl")
EXPORT_VERSION = 1
_SPEAKER = {"user": "User", "assistant": "Assistant", "system": "System"}

Chat = tuple[Conversation, Sequence[Message]]


def chat_dict(chat: Conversation, messages: Sequence[Message] | None = None) -> dict[str, Any]:
    """One chat as plain data (also what `lpm chats list --json` prints, without messages)."""
    data: dict[str, Any] = {
        "id": chat.id,
        "title": chat.title,
        "created_at": chat.created_at,
        "updated_at": chat.updated_at,
        "message_count": chat.message_count,
        "learned": not chat.exclude_from_memory,
        "import_id": chat.import_id,
    }
    if messages is not None:
        data["messages"] = [
            {"id": m.id, "role": m.role, "content": m.content, "created_at": m.created_at}
            for m in messages
        ]
    return data


def render(chats: Sequence[Chat], fmt: str) -> str:
    """``chats`` (oldest first) as one text in ``fmt`` ("md", "json" or "jsonl")."""
    if fmt == "md":
        return "\n---\n\n".join(_markdown(chat, messages) for chat, messages in chats)
    if fmt == "json":
        payload = {
            "format": "lpm-local chats",
            "version": EXPORT_VERSION,
            "exported_at": utc_now(),
            "chats": [chat_dict(chat, messages) for chat, messages in chats],
        }
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    if fmt == "jsonl":
        return "".join(
            json.dumps(chat_dict(chat, messages), ensure_ascii=False) + "\n"
            for chat, messages in chats
        )
    raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")


def _markdown(chat: Conversation, messages: Sequence[Message]) -> str:
    title = " ".join((chat.title or "Untitled").split())
    facts = [f"chat #{chat.id}", f"created {chat.created_at[:16].replace('T', ' ')}"]
    facts.append(f"{len(messages)} messages")
    if chat.import_id is not None:
        facts.append("imported")
    if chat.exclude_from_memory:
        facts.append("not learned")
    parts = [f"# {title}\n\n_{' · '.join(facts)}_\n"]
    for message in messages:
        parts.append(f"\n## {_SPEAKER.get(message.role, message.role)}\n\n{message.content}\n")
    return "".join(parts)
