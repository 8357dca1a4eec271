"""The message input: several lines, Enter sends, Up/Down walk through what was sent before.

It is a ``TextArea``: a paste keeps every line (Textual's ``Input`` keeps only the first). A
newline is typed with Ctrl+J, which every terminal sends apart from Enter (a line feed, where
Enter is a carriage return), tmux included. Shift+Enter and Alt+Enter also work where the
terminal reports them as such (the kitty keyboard protocol: kitty, WezTerm, foot, Ghostty,
iTerm2 with CSI u); elsewhere a terminal sends them as a plain Enter, or Escape then Enter, and
Textual reads that as Enter, which sends. Up on the first line and Down on the last walk the
history; elsewhere they move the cursor as usual.

History lives in memory only (what the user typed is personal data; the store already keeps the
messages that matter). Opening a conversation seeds the history with its user messages, so Up
recalls what was asked there too.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual import events
from textual.message import Message
from textual.widgets import TextArea

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


NEWLINE_KEYS = ("shift+enter", "ctrl+j", "alt+enter")  # fixed: listed in the help screen
NEWLINE_HINT = "Ctrl+J new line"  # the one key every terminal sends; help lists the others


class ChatInput(TextArea):
    """A multi-line ``TextArea`` that sends on Enter, with history on Up/Down at its edges."""

    class Submitted(Message):
        """Enter was pressed: ``value`` is the whole text, every line of it."""

        def __init__(self, chat_input: ChatInput, value: str) -> None:
            super().__init__()
            self.input = chat_input
            self.value = value

        @property
        def control(self) -> ChatInput:
            return self.input

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(
            placeholder=placeholder,
            id=id,
            soft_wrap=True,
            tab_behavior="focus",  # Tab moves between the panes, as the help screen says
            highlight_cursor_line=False,
            compact=False,
        )
        self.sent = InputHistory()  # not `history`: TextArea keeps its undo history there

    @property
    def value(self) -> str:
        """The text, as ``Input.value`` was (tests and callers set and read it)."""
        return self.text

    @value.setter
    def value(self, text: str) -> None:
        self._show(text)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            start, end = self.selection
            self._replace_via_keyboard("\n", start, end)
            return
        await super()._on_key(event)

    def action_cursor_up(self, select: bool = False) -> None:
        if not select and self.cursor_location[0] == 0:
            entry = self.sent.previous(self.text)
            if entry is not None:
                self._show(entry)
            return
        super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        if not select and self.cursor_location[0] == self.document.line_count - 1:
            entry = self.sent.following()
            if entry is not None:
                self._show(entry)
            return
        super().action_cursor_down(select)

    def _show(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)
