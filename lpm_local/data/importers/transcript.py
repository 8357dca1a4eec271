"""Markdown and plain-text transcripts: one conversation per file.

Markdown: a speaker heading (``## User``, ``### Assistant``, ``## **System**``...) starts a
message that runs to the next speaker heading; headings inside fenced code blocks and other
headings (an answer's ``## Steps``) are content. A ``# Title`` before the first speaker is the
title. Plain text: a line starting ``User:``/``Assistant:`` (or ``Human:``, ``AI:``, ``You:``,
``ChatGPT:``, ``Claude:``, ``System:``, optionally in ``**bold**``) starts a message. Which of
the two a file is, is decided once from its head: any speaker heading makes it Markdown.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .base import ImportedConversation, ImportedMessage, ParseContext, Role, make_conversation
from .fields import Place, text_value
from .textio import TextReader

FORMAT = "transcript"
_WHO: dict[str, Role] = {
    "user": "user",
    "human": "user",
    "you": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "chatgpt": "assistant",
    "claude": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "system": "system",
}
_NAMES = "|".join(_WHO)
_HEADING = re.compile(
    rf"^ {{0,3}}#{{1,6}}[ \t]+(?:\*\*)?({_NAMES})(?:\*\*)?[ \t]*:?[ \t]*#*[ \t]*$", re.I
)
_PLAIN = re.compile(rf"^(?:\*\*)?({_NAMES})[ \t]*(?::\*\*|\*\*:|:)[ \t]?(.*)$", re.I | re.S)
_TITLE = re.compile(r"^ {0,3}#[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(?:```|~~~)")


def _marker(line: str, markdown: bool) -> tuple[Role, str] | None:
    """(role, text on the same line) when ``line`` starts a message."""
    match = (_HEADING if markdown else _PLAIN).match(line)
    if match is None:
        return None
    rest = "" if markdown else match.group(2)
    return _WHO[match.group(1).lower()], rest


def sniff_mode(head: str) -> str | None:
    """'markdown' or 'plain' when ``head`` has both a user and an assistant marker, else None."""
    for markdown in (True, False):
        roles: set[str] = set()
        in_fence = False
        for line in head.splitlines():
            if markdown and _FENCE.match(line):
                in_fence = not in_fence
            elif not in_fence and (found := _marker(line, markdown)):
                roles.add(found[0])
        if {"user", "assistant"} <= roles:
            return "markdown" if markdown else "plain"
    return None


def read_lines(reader: TextReader, ctx: ParseContext) -> Iterator[str]:
    """Lines ending in LF, CRLF or a lone CR (old Mac files); one endless line is refused.

    Shared by the line-based formats (this one, oterm and llm Markdown exports).
    """
    pending = ""
    while chunk := reader.read_chunk():
        pending += chunk
        held = pending.endswith("\r")  # may be the first half of a CRLF split across chunks
        if held:
            pending = pending[:-1]
        *complete, pending = pending.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if held:
            pending += "\r"
        yield from complete
        if len(pending) > ctx.limits.max_message_chars:  # one endless line: never a transcript
            raise Place(reader.name).error(
                "",
                "a line longer than the message limit",
                hint="raise ImportLimits.max_message_chars if this file is trusted",
            )
    if pending.rstrip("\r"):
        yield pending.rstrip("\r")


class MessageBuilder:
    """Collects the lines of the message being read, within the size limits (messages per
    conversation, characters per message and per conversation). ``ref`` prefixes each
    message's source reference."""

    def __init__(self, place: Place, ctx: ParseContext, ref: str = FORMAT):
        self.place, self.limits, self.ref = place, ctx.limits, ref
        self.messages: list[ImportedMessage] = []
        self.role: Role | None = None
        self.lines: list[str] = []
        self.start = 0
        self.size = self.total = 0

    def begin(self, role: Role, first: str, line_number: int) -> None:
        self.flush()
        self.role, self.lines, self.start, self.size = role, [], line_number, 0
        if first:
            self.add(first, line_number)

    def add(self, line: str, line_number: int) -> None:
        if self.role is None:
            return  # text before the first speaker: export headers, not conversation
        self.lines.append(line)
        self.size += len(line) + 1
        self.total += len(line) + 1
        if self.size > self.limits.max_message_chars or self.total > self.limits.max_record_chars:
            raise self.place.error(
                f"line {line_number:,}",
                "message or transcript longer than the limit",
                hint=(
                    "raise ImportLimits.max_message_chars / max_record_chars "
                    "if this file is trusted"
                ),
            )

    def flush(self) -> None:
        if self.role is None:
            return
        raw = "\n".join(self.lines).strip("\n").rstrip()
        text = text_value(raw, self.place, f"line {self.start:,}", self.limits.max_message_chars)
        if text.strip():
            if len(self.messages) >= self.limits.max_conversation_messages:
                # Checked as they come: 11 MB of "you:a / ai:b" lines are 2 million messages.
                raise self.place.error(
                    f"line {self.start:,}",
                    f"more than {self.limits.max_conversation_messages:,} messages in one "
                    "transcript",
                    hint="raise ImportLimits.max_conversation_messages if this file is trusted",
                )
            ref = f"{self.ref}:line{self.start}"
            self.messages.append(ImportedMessage(self.role, text, None, ref))
        self.role, self.lines = None, []

    def take(self) -> list[ImportedMessage]:
        """The messages so far (after a ``flush``); the builder starts a new conversation."""
        self.flush()
        messages, self.messages, self.total = self.messages, [], 0
        return messages


def conversations(
    reader: TextReader, mode: str, ctx: ParseContext
) -> Iterator[ImportedConversation]:
    """The file's one conversation (nothing when it holds no message)."""
    markdown = mode == "markdown"
    builder = MessageBuilder(Place(reader.name), ctx)
    title: str | None = None
    in_fence = False
    for number, line in enumerate(read_lines(reader, ctx), start=1):
        if markdown and _FENCE.match(line):
            in_fence = not in_fence
        found = None if in_fence else _marker(line, markdown)
        if found is not None:
            builder.begin(found[0], found[1], number)
        elif markdown and title is None and builder.role is None and (m := _TITLE.match(line)):
            title = text_value(m.group(1), builder.place, f"line {number}", 1000)
        else:
            builder.add(line, number)
    builder.flush()
    conversation = make_conversation(title, None, builder.messages, FORMAT)
    if conversation is not None:
        yield conversation
