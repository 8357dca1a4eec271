"""The conversation view: user messages shown literally, replies as Markdown, streamed.

Message text is untrusted (typed, imported, or written by the model). User messages are a
``Static`` with ``markup=False``; replies are ``Markdown(open_links=False)``, whose inline text
becomes ``Content`` (never Textual markup), and whose links only post ``LinkClicked``: the app
shows the target in a toast and opens nothing. Streaming goes through ``MarkdownStream``, which
batches fragments when tokens arrive faster than the widget can re-parse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

from tui.formatting import literal

# Widgets kept on screen when a conversation opens: Markdown widgets are not free, and a
# conversation of thousands of messages must open (and scroll) without a stall.
MAX_RENDERED = 200


@dataclass(frozen=True)
class ShownMessage:
    """The part of a stored message the view needs."""

    role: str
    content: str
    message_id: int | None = None


class UserMessage(Static):
    """What the user wrote, exactly as written."""

    def __init__(self, text: str, message_id: int | None = None) -> None:
        super().__init__(text, markup=False, classes="message user")
        self.text = text
        self.message_id = message_id


class AssistantMessage(Widget, can_focus=True):
    """A reply: Markdown body plus a one-line note (stopped, timings, memory used)."""

    def __init__(self, text: str = "", message_id: int | None = None) -> None:
        super().__init__(classes="message assistant")
        self.text = text
        self.message_id = message_id
        self.attention = None  # [heads, M, N] when memory shaped this reply (this session only)
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Markdown(self.text, open_links=False)
        yield Static("", markup=False, classes="note")

    @property
    def body(self) -> Markdown:
        return self.query_one(Markdown)

    def start_stream(self) -> MarkdownStream:
        self.add_class("streaming")
        self._stream = Markdown.get_stream(self.body)
        return self._stream

    async def write(self, fragment: str) -> None:
        """Append a streamed fragment (called on the UI thread)."""
        self.text += fragment
        if self._stream is None:
            self.start_stream()
        await self._stream.write(fragment)

    async def finish(self, note: str = "", *, failed: bool = False) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.remove_class("streaming")
        self.set_class(failed, "failed")
        self.set_note(note)

    def set_note(self, note: str) -> None:
        widget = self.query_one(".note", Static)
        widget.update(literal(note))
        widget.display = bool(note)


class SystemNote(Static):
    """A line from the app inside the conversation (e.g. how many messages are not shown)."""

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False, classes="message system")


class MessageList(VerticalScroll, can_focus=False):
    """Scrolling list of messages; stays pinned to the bottom while a reply streams."""

    def on_mount(self) -> None:
        # Anchored: new content keeps the view at the end, unless the user scrolled up to read.
        self.anchor()

    async def show(self, messages: Iterable[ShownMessage], *, empty_note: str = "") -> None:
        """Replace the view with ``messages`` (only the last ``MAX_RENDERED`` get widgets)."""
        items = list(messages)
        await self.remove_children()
        widgets: list[Widget] = []
        hidden = len(items) - MAX_RENDERED
        if hidden > 0:
            widgets.append(SystemNote(f"{hidden} earlier messages are not shown here."))
            items = items[hidden:]
        widgets.extend(_widget_for(item) for item in items)
        if not widgets and empty_note:
            widgets.append(SystemNote(empty_note))
        await self.mount_all(widgets)
        self.scroll_end(animate=False, immediate=True)
        self.anchor()

    async def add_user(self, text: str) -> UserMessage:
        await self._drop_empty_note()
        widget = UserMessage(text)
        await self.mount(widget)
        self.anchor()
        return widget

    async def add_assistant(self) -> AssistantMessage:
        widget = AssistantMessage()
        await self.mount(widget)
        self.anchor()
        return widget

    def replies(self) -> list[AssistantMessage]:
        return list(self.query(AssistantMessage))

    async def _drop_empty_note(self) -> None:
        if len(self.children) == 1 and isinstance(self.children[0], SystemNote):
            await self.children[0].remove()


def _widget_for(item: ShownMessage) -> Widget:
    if item.role == "assistant":
        return AssistantMessage(item.content, item.message_id)
    if item.role == "user":
        return UserMessage(item.content, item.message_id)
    return SystemNote(item.content)
