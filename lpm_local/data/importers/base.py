"""The normalised stream every importer produces, and the limits every importer obeys.

A parser turns one file (or directory, or zip) into ``ImportedConversation``s, yielded one at a
time so that a 200 MB export never sits in memory as Python objects all at once. Because the
stream is lazy, a ``BadInput`` may surface in the middle of it, after some conversations were
already yielded: the writer (``lpm_local.data.importing``) consumes the whole stream inside one
transaction and rolls back on any error, so a bad file never leaves a half import behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from .fields import clean_text

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")

_MIB = 1024 * 1024


@dataclass(frozen=True)
class ImportedMessage:
    """One message as the store will keep it.

    ``content`` is cleaned text (no NUL, no control characters but tab and newlines, no lone
    surrogates); ``created_at`` is ISO 8601 in UTC (``2024-05-01T12:00:00.000+00:00``) or None;
    ``source_ref`` says where in the source it came from, e.g. ``chatgpt:<conversation>:<node>``,
    stable across re-imports of the same file.
    """

    role: Role
    content: str
    created_at: str | None
    source_ref: str


@dataclass
class ImportedConversation:
    """One conversation, messages in reading order (root to leaf for branching formats)."""

    title: str | None
    created_at: str | None
    messages: list[ImportedMessage]
    source_ref: str


@dataclass
class ParsedFile:
    """A file opened for import: its detected format and the lazy stream of its conversations.

    ``profile_notes`` (e.g. ChatGPT custom instructions) are filled *while* ``conversations`` is
    consumed and are complete once it is exhausted. Closing (or leaving the ``with`` block)
    releases the open file, zip or database handle even if the stream was not read to the end.
    """

    path: Path
    format: str
    conversations: Iterator[ImportedConversation]
    profile_notes: list[str] = field(default_factory=list)
    # Releases what the parser opened up front (a zip), even if the stream never started.
    release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def close(self) -> None:
        close = getattr(self.conversations, "close", None)
        if close is not None:
            close()
        if self.release is not None:
            self.release()

    def __enter__(self) -> ParsedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ImportLimits:
    """Caps that keep a hostile or broken file from exhausting memory, disk or time (R11/R12)."""

    # Exports with images run to a few GiB at most; anything bigger is not a chat log.
    max_file_bytes: int = 2 * 1024 * _MIB
    # conversations.json inside a ChatGPT zip is the biggest member we read; 2 GiB is generous.
    max_member_bytes: int = 2 * 1024 * _MIB
    # Sum over the members we actually read (shards of one export).
    max_total_uncompressed_bytes: int = 4 * 1024 * _MIB
    # JSON compresses 10-20x, whitespace-heavy JSON ~50x; zip bombs reach 1000x and more.
    max_compression_ratio: float = 200.0
    # A ChatGPT export with images holds a few thousand files; 100k means a crafted archive.
    max_zip_members: int = 100_000
    # The heaviest users have ~10k conversations; 10^6 empty items must be refused fast.
    max_conversations: int = 100_000
    # ~500k tokens: bigger than any context window, so not a message a person wrote or read.
    max_message_chars: int = 2_000_000
    # Text of one JSON item / JSONL record / transcript / database chat, held at once.
    max_record_chars: int = 128 * _MIB
    # Estimated Python memory for one parsed record: JSON like [{},{},...] costs ~25 bytes of
    # objects per character, so the text cap alone would not keep R11's 512 MB bound.
    max_record_memory: int = 256 * _MIB
    # No real chat has this many turns; an app database with more is crafted.
    max_conversation_messages: int = 200_000
    # Real exports nest ~15 deep; this stops crafted nesting long before RecursionError.
    max_json_depth: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"ImportLimits.{f.name} must be a positive number, got {value!r}")
        if self.max_compression_ratio < 1:
            raise ValueError(
                "ImportLimits.max_compression_ratio must be >= 1, "
                f"got {self.max_compression_ratio!r}"
            )
        if self.max_json_depth < 8:
            raise ValueError(
                f"ImportLimits.max_json_depth must be >= 8, got {self.max_json_depth!r}"
            )


DEFAULT_LIMITS = ImportLimits()


@dataclass
class ParseContext:
    """What every parser needs besides its input: the limits, and where profile notes go."""

    limits: ImportLimits = DEFAULT_LIMITS
    profile_notes: list[str] = field(default_factory=list)

    def add_note(self, note: str) -> None:
        # Exports repeat the same custom instructions in every conversation: keep one copy.
        if note and note not in self.profile_notes:
            self.profile_notes.append(note)


_MAX_TITLE_CHARS = 500  # a title is a label in a list; longer ones are cut, not refused


def make_conversation(
    title: str | None, created_at: str | None, messages: list[ImportedMessage], source_ref: str
) -> ImportedConversation | None:
    """The conversation (title cleaned like message text), or None when no message was kept."""
    if not messages:
        return None
    if title:
        title = " ".join(clean_text(title)[:_MAX_TITLE_CHARS].split()) or None
    return ImportedConversation(title or None, created_at, messages, source_ref)
