"""oterm's "Export chat" Markdown: one conversation per file.

oterm (src/oterm/app/chat_export.py) writes each message as::

    *user*
    <text>

    ---

i.e. ``*{role}*``, the text, an empty line and ``---``. A message therefore starts at a role line
that opens the file or follows a ``---`` line; a ``---`` inside a message (a Markdown rule) is
text, because no role line follows it. ``tool`` messages (a tool's output) are skipped, as in
the oterm database importer; ``system`` is kept as data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .base import ImportedConversation, ParseContext, Role, make_conversation
from .fields import Place
from .textio import TextReader
from .transcript import MessageBuilder, read_lines

FORMAT = "oterm-markdown"
_ROLE = re.compile(r"^\*(user|assistant|system|tool)\*[ \t]*$")
_RULE = "---"


def sniff(head: str) -> bool:
    """True when the first non-blank line is a role line and a ``---`` rule follows a message."""
    lines = head.splitlines()
    first = next((line for line in lines if line.strip()), "")
    return _ROLE.match(first) is not None and _RULE in (line.rstrip() for line in lines)


def conversations(reader: TextReader, ctx: ParseContext) -> Iterator[ImportedConversation]:
    """The file's one conversation (nothing when it holds no message)."""
    builder = MessageBuilder(Place(reader.name), ctx, ref=FORMAT)
    held: list[tuple[int, str]] = []  # a "---" line: a separator if a role line comes next
    at_start = True
    for number, line in enumerate(read_lines(reader, ctx), start=1):
        found = _ROLE.match(line)
        if found is not None and (at_start or held):
            held = []
            role = found.group(1)
            if role == "tool":
                builder.flush()  # its lines are dropped until the next role line
            else:
                builder.begin(_role(role), "", number)
        elif line.rstrip() == _RULE and not held:
            held = [(number, line)]
        else:
            for n, kept in held:
                builder.add(kept, n)
            held = []
            builder.add(line, number)
        if line.strip():
            at_start = False
    builder.flush()
    conversation = make_conversation(None, None, builder.messages, FORMAT)
    if conversation is not None:
        yield conversation


def _role(name: str) -> Role:
    return "user" if name == "user" else "assistant" if name == "assistant" else "system"
