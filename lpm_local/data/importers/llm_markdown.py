"""``llm logs`` Markdown (simonw/llm, ``llm logs`` without ``--json``/``--short``).

Each logged response is written (llm/cli.py, ``logs_list``) as::

    # 2024-05-01T12:00:00    conversation: 01hx... id: 01hy...

    Model: **gpt-4o-mini**

    ## Prompt

    <prompt, or "-- none --">

    ## System

    <system prompt: only when it changed since the previous response>

    ## Response

    <response>

In ``--cid``/``-c`` mode only the first header carries ``conversation: ... id: ...`` and the
model line; later ones are a bare ``# <time>``. Other sections (``## Options``, ``## Schema``,
``## Reasoning``, ``## Token usage``) and the ``### Prompt fragments`` / ``### System
fragments`` / ``### Tools`` / ``### Tool results`` / ``### Attachments`` blocks are metadata,
not what was said: skipped. A heading counts only in this fixed order, so a ``## Response``
line inside a prompt's own Markdown is text. Consecutive responses of one conversation id
make one conversation; the system prompt is kept as data (a ``system`` message). A response to
tool results (its prompt printed as ``-- none --``) continues the reply before it: one turn.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .base import (
    ImportedConversation,
    ImportedMessage,
    ParseContext,
    Role,
    make_conversation,
)
from .fields import Place, iso_utc, ref_part
from .textio import TextReader
from .transcript import MessageBuilder, read_lines

FORMAT = "llm-markdown"
_HEADER = re.compile(
    r"^# (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[ \t]+conversation: (\S+) id: (\S+))?[ \t]*$"
)
# Section -> (order, role of its text or None to skip it).
_SECTIONS: dict[str, tuple[int, Role | None]] = {
    "Prompt": (1, "user"),
    "Options": (2, None),
    "System": (3, "system"),
    "Schema": (4, None),
    "Reasoning": (5, None),
    "Response": (6, "assistant"),
    "Token usage": (7, None),
}
_RESPONSE, _LAST = _SECTIONS["Response"][0], _SECTIONS["Token usage"][0]
_SECTION = re.compile(r"^## (" + "|".join(_SECTIONS) + r")[ \t]*$")
_METADATA = re.compile(
    r"^### (?:Prompt fragments|System fragments|Tools|Tool results|Attachments)[ \t]*$"
)
_MODEL = re.compile(r"^Model: \*\*.*\*\*")
_NO_PROMPT = "-- none --"


def sniff(head: str) -> bool:
    """True when the first non-blank line is an ``llm logs`` header and a ``## Prompt`` follows."""
    lines = head.splitlines()
    first = next((line for line in lines if line.strip()), "")
    return _HEADER.match(first) is not None and "## Prompt" in (x.rstrip() for x in lines)


def conversations(reader: TextReader, ctx: ParseContext) -> Iterator[ImportedConversation]:
    """One conversation per run of responses with the same conversation id."""
    place = Place(reader.name)
    builder = MessageBuilder(place, ctx, ref=FORMAT)
    conv_id: str | None = None
    conv_time: str | None = None
    order = 0  # the last section seen in the current response (0: the header)
    start = 0  # index of the current response's first message
    in_fence = False
    for number, line in enumerate(read_lines(reader, ctx), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        header = None if in_fence else _HEADER.match(line)
        # A header starts the next response only after this one's Response (or at the start).
        if header is not None and order in (0, _RESPONSE, _LAST):
            builder.flush()
            new_id = header.group(2)
            if new_id is not None and new_id != conv_id:
                yield from _finish(builder, conv_id, conv_time)
                conv_id = new_id
                conv_time = iso_utc(header.group(1) + "Z", place, f"line {number}")
            order, start = 0, len(builder.messages)
            continue
        section = None if in_fence else _SECTION.match(line)
        if section is not None and _SECTIONS[section.group(1)][0] > order:
            order, role = _SECTIONS[section.group(1)]
            builder.flush()
            if order == _RESPONSE:
                # The log prints the system prompt after the prompt; it came first.
                turn = builder.messages[start:]
                builder.messages[start:] = sorted(turn, key=lambda m: m.role != "system")
            if role is not None:
                builder.begin(role, "", number)
            continue
        if order == 0 and (_MODEL.match(line) or not line.strip()):
            continue
        if not in_fence and order in (1, 3) and _METADATA.match(line):
            builder.flush()  # fragments, tools, attachments: until the next section
            continue
        if order == 1 and line.strip() == _NO_PROMPT and not "".join(builder.lines).strip():
            builder.flush()
            continue
        builder.add(line, number)
    yield from _finish(builder, conv_id, conv_time)


def _finish(
    builder: MessageBuilder, conv_id: str | None, created: str | None
) -> Iterator[ImportedConversation]:
    ref = f"{FORMAT}:{ref_part(conv_id)}" if conv_id else FORMAT
    messages: list[ImportedMessage] = []
    for message in builder.take():
        if messages and message.role == "assistant" == messages[-1].role:
            # A response to tool results (prompt "-- none --") continues the same reply.
            first = messages[-1]
            text = f"{first.content}\n\n{message.content}"
            if len(text) > builder.limits.max_message_chars:
                raise builder.place.error("", "a reply longer than the message limit")
            messages[-1] = ImportedMessage("assistant", text, first.created_at, first.source_ref)
        else:
            messages.append(message)
    conversation = make_conversation(None, created, messages, ref)
    if conversation is not None:
        yield conversation
