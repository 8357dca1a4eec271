"""The message input: one line, Enter sends, Up/Down walk through what was sent before.

History lives in memory only (what the user typed is personal data; the store already keeps the
messages that matter). Opening a conversation seeds the history with its user messages, so Up
recalls what was asked there too.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.binding import Binding
from textual.widgets import Input

HISTORY_LIMIT = 500  # entries kept; older ones fall off the front


class InputHistory:
    """Shell-like history: ``previous``/``following`` move a cursor; the draft is kept aside."""

    def __init__(self, limit: int = HISTORY_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"history limit must be >= 1, got {limit}")
        self.limit = limit
        self.entries: list[str] = []
        self._cursor: int | None = None  # index into entries while browsing, else None
        self._draft = ""

    def push(self, text: str) -> None:
        """Remember a sent message (skipping blanks and an immediate repeat); stop browsing."""
        self._cursor = None
        if not text.strip() or (self.entries and self.entries[-1] == text):
            return
        self.entries.append(text)
        del self.entries[: -self.limit]

    def seed(self, texts: Iterable[str]) -> None:
        """Replace the history with ``texts`` (oldest first), e.g. a conversation's questions."""
        self.entries = []
        for text in texts:
            self.push(text)

    def previous(self, current: str) -> str | None:
        """The entry before the cursor; the first call saves ``current`` as the draft."""
        if not self.entries:
            return None
        if self._cursor is None:
            self._draft = current
            self._cursor = len(self.entries)
        if self._cursor == 0:
            return self.entries[0]
        self._cursor -= 1
        return self.entries[self._cursor]

    def following(self) -> str | None:
        """The entry after the cursor, the saved draft past the end, or None if not browsing."""
        if self._cursor is None:
            return None
        self._cursor += 1
        if self._cursor >= len(self.entries):
            self._cursor = None
            return self._draft
        return self.entries[self._cursor]


class ChatInput(Input):
    """``Input`` with history on Up/Down (single-line input has no other use for them)."""

    BINDINGS = [
        Binding("up", "history_previous", "Previous message", show=False),
        Binding("down", "history_next", "Next message", show=False),
    ]

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(placeholder=placeholder, id=id)
        self.history = InputHistory()

    def action_history_previous(self) -> None:
        entry = self.history.previous(self.value)
        if entry is not None:
            self._show(entry)

    def action_history_next(self) -> None:
        entry = self.history.following()
        if entry is not None:
            self._show(entry)

    def _show(self, text: str) -> None:
        self.value = text
        self.cursor_position = len(text)
