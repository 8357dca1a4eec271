"""The chat screen: conversations on the left, the chat in the middle, memory on the right.

The reply streams from a thread worker (``@work(thread=True, exclusive=True)``): the model runs
off the UI thread and only appends fragments to a list; a UI timer moves them into the Markdown
widget (through ``MarkdownStream``) at most ``FLUSH_HZ`` times a second, and the end of the turn
arrives as a ``ReplyFinished`` message. Per-token UI work (a blocking ``call_from_thread`` and a
re-render per token) made decoding ~35% slower on a busy 2-core machine; batching removes it.
Escape sets the turn's ``threading.Event``, which the engine's stopping criterion checks between
tokens. Memory, import, export and wipe actions live in ``MemoryActions``, and rename, export
and delete of a chat in ``ChatActions`` (next door), to keep this file about chatting.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Markdown, Static

from lpm_local.errors import LpmError
from tui.commands import LpmCommands, bindings, key_hint
from tui.formatting import literal, one_line
from tui.memory_adapter import MemoryAdapter
from tui.messages import ConversationChosen, ReplyFinished, ReplyStarted
from tui.screens.chat_actions import ChatActions
from tui.screens.chat_memory import MemoryActions
from tui.widgets.chat_input import NEWLINE_HINT, ChatInput
from tui.widgets.memory_panel import MemoryPanel
from tui.widgets.message_list import AssistantMessage, MessageList, ShownMessage
from tui.widgets.sidebar import Sidebar

# Read through this name so snapshot tests can pin timings shown on screen.
clock = time.monotonic

TEMPORARY_BANNER = "TEMPORARY CHAT · not stored · not learned · no memory"
FLUSH_HZ = 10  # streamed text reaches the screen this often: smooth to read, cheap to draw
SIDEBAR_MIN_WIDTH = 70  # below this the sidebar starts hidden (80x24 still shows it)
MEMORY_PANEL_MIN_WIDTH = 110  # the memory panel starts visible only on wide terminals


def empty_note(keymap=None) -> str:
    return (
        f"New chat. Type a message and press Enter ({NEWLINE_HINT}). "
        f"{key_hint('help', keymap)}: help, Ctrl+P: all commands."
    )


class ChatScreen(ChatActions, MemoryActions, Screen[None]):
    """One screen for chatting; the app swaps the assistant in when a model or profile changes."""

    BINDINGS = bindings()
    COMMANDS = {LpmCommands}

    def __init__(self, assistant: Any, *, temporary: bool = False, draft: str = "") -> None:
        super().__init__()
        self.assistant = assistant
        self.draft = draft  # typed while the model loaded: it lands in the input, unsent
        self.adapter = MemoryAdapter(assistant)
        self.temporary = temporary
        self.session = assistant.new_session(temporary=temporary)
        self.streaming = False
        self.cancel_event = threading.Event()
        self._reply_widget: AssistantMessage | None = None
        self._pending: list[str] = []  # fragments from the worker, not yet on screen
        self.reply_idle = threading.Event()  # clear while a reply thread runs
        self.reply_idle.set()
        self.ready = False  # True once mounted and showing its first conversation
        self.turns_done = 0  # replies finished on this screen (complete, stopped or failed)

    # -- layout ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("", markup=False, id="topbar")
        with Horizontal(id="body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="main"):
                yield Static(TEMPORARY_BANNER, markup=False, id="temporary-banner")
                yield MessageList(id="messages")
                yield Static("", markup=False, id="reply-status")
                yield ChatInput(placeholder="Message · Enter sends", id="input")
            yield MemoryPanel(id="memory")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        width = self.app.size.width
        self.query_one("#sidebar").display = width >= SIDEBAR_MIN_WIDTH
        self.query_one("#memory").display = width >= MEMORY_PANEL_MIN_WIDTH
        self.adapter.add_listener(self._on_refit_event)
        await self.open_conversation(None)
        if self.draft:
            self.query_one(ChatInput).value = self.draft
        self._flusher = self.set_interval(1 / FLUSH_HZ, self._flush, pause=True)
        self.ready = True

    @property
    def conversation_id(self) -> int | None:
        return None if self.session.temporary else self.session.conversation_id

    def refresh_chrome(self) -> None:
        """Top bar, banner, sidebar and memory panel, from the store and the session."""
        self.set_class(self.temporary, "-temporary")
        self.query_one("#temporary-banner").display = self.temporary
        status = self.adapter.status()
        memory = (
            "memory off"
            if not status.enabled
            else ("memory on" + (f" v#{status.version_id}" if status.version_id else ""))
        )
        title = "temporary chat" if self.temporary else self._title()
        bar = Content.assemble(
            Content("lpm").stylize("bold"),
            " · ",
            literal(str(self.assistant.backbone.name)),
            " · ",
            literal(self.assistant.profile.name),
            " · ",
            Content("memory unused" if self.temporary else memory).stylize("italic"),
            " · ",
            literal(one_line(title, 40), "bold"),
        )
        self.query_one("#topbar", Static).update(bar)
        self.refresh_sidebar()
        self.query_one(MemoryPanel).show_status(status, temporary=self.temporary)
        placeholder = "Temporary" if self.temporary else "Message"  # the banner says the rest
        chat_input = self.query_one(ChatInput)
        chat_input.placeholder = f"{placeholder} · Enter sends · {NEWLINE_HINT}"

    def refresh_sidebar(self) -> None:
        store, profile = self.assistant.store, self.assistant.profile
        self.query_one(Sidebar).conversations.set_conversations(
            store.list_conversations(profile.id), self.conversation_id
        )

    def _title(self) -> str:
        if self.conversation_id is None:
            return "new chat"
        return self.assistant.store.get_conversation(self.conversation_id).title or "Untitled"

    # -- conversations ---------------------------------------------------------------------------

    async def open_conversation(self, conversation_id: int | None) -> None:
        """Show a stored conversation (or a fresh chat for None) and continue it."""
        if self.temporary and conversation_id is not None:
            self.temporary = False  # opening a stored chat leaves temporary mode
        self.session = self.assistant.new_session(
            temporary=self.temporary, conversation_id=conversation_id
        )
        stored = self.assistant.store.messages(conversation_id) if conversation_id else []
        shown = [ShownMessage(m.role, m.content, m.id) for m in stored]
        await self.query_one(MessageList).show(
            shown, empty_note=empty_note(getattr(self.app, "keymap", None))
        )
        self.query_one(ChatInput).sent.seed(m.content for m in stored if m.role == "user")
        self.refresh_chrome()
        self.query_one(ChatInput).focus()

    def _busy(self) -> bool:
        if self.streaming:
            self.notify("A reply is being written: Esc stops it.", severity="warning", markup=False)
        return self.streaming

    async def action_new_chat(self) -> None:
        if not self._busy():
            await self.open_conversation(None)

    async def action_toggle_temporary(self) -> None:
        if self._busy():
            return
        self.temporary = not self.temporary
        await self.open_conversation(None)
        self.notify(
            "Temporary chat: not stored, not learned."
            if self.temporary
            else "Back to a normal chat: stored, and memory learns from it.",
            markup=False,
        )

    @on(ConversationChosen)
    async def _chosen(self, event: ConversationChosen) -> None:
        if not self._busy():
            await self.open_conversation(event.conversation_id)

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        """Links in replies are never followed (model output is untrusted): say where it points,
        open nothing."""
        event.stop()
        self.notify(f"Links are not opened from lpm. It points to: {event.href}", markup=False)

    def action_toggle_sidebar(self) -> None:
        self._toggle_side("#sidebar", other="#memory")

    def action_toggle_memory_panel(self) -> None:
        self._toggle_side("#memory", other="#sidebar")

    def _toggle_side(self, selector: str, *, other: str) -> None:
        """Show/hide a side column; below ``MEMORY_PANEL_MIN_WIDTH`` only one of the two shows,
        so the chat keeps a readable width in 80 columns."""
        panel = self.query_one(selector)
        panel.display = not panel.display
        if panel.display and self.app.size.width < MEMORY_PANEL_MIN_WIDTH:
            self.query_one(other).display = False

    # -- one turn ---------------------------------------------------------------------------------

    @on(ChatInput.Submitted)
    async def _submitted(self, event: ChatInput.Submitted) -> None:
        event.stop()
        text = event.value
        if not text.strip() or self._busy():
            return
        chat_input = self.query_one(ChatInput)
        chat_input.sent.push(text)
        chat_input.clear()
        messages = self.query_one(MessageList)
        await messages.add_user(text)
        widget = await messages.add_assistant()
        widget.start_stream()
        self._reply_widget = widget
        self._pending = []
        self.streaming = True
        self.cancel_event = threading.Event()
        self.reply_idle.clear()
        self.query_one("#reply-status", Static).update("thinking…  (Esc stops)")
        self.refresh_bindings()
        self._flusher.resume()
        self.generate(self.session, text, self._pending, self.cancel_event)

    async def _flush(self) -> None:
        """Move the fragments the worker appended so far into the reply (UI thread)."""
        widget, pending = self._reply_widget, self._pending
        if widget is None or not pending:
            return
        count = len(pending)  # the worker only appends, so the first `count` are complete
        text = "".join(pending[:count])
        del pending[:count]
        await widget.write(text)

    @work(thread=True, exclusive=True, group="reply")
    def generate(
        self, session: Any, text: str, pending: list[str], cancel: threading.Event
    ) -> None:
        """Run one turn in a thread; it appends to ``pending`` and posts messages, nothing else."""
        try:
            self._run_turn(session, text, pending, cancel)
        finally:
            self.reply_idle.set()

    def _run_turn(
        self, session: Any, text: str, pending: list[str], cancel: threading.Event
    ) -> None:
        started = clock()
        first: float | None = None
        error: str | None = None
        try:
            options = self.assistant.reply_options(getattr(self.app, "max_new_tokens", None))
            for chunk in session.send(text, cancel=cancel, **options):
                if first is None:
                    first = clock() - started
                    self.post_message(ReplyStarted(first))
                pending.append(chunk)  # list.append is atomic: no lock, no UI round trip
        except LpmError as failure:
            error = str(failure)
        except Exception as failure:  # a bug: keep the app alive, say what happened
            error = f"{type(failure).__name__}: {failure}"
            self.app.log.error(f"reply failed: {failure!r}")
        result = session.last
        stats = getattr(session.engine, "last_stats", None)
        self.post_message(
            ReplyFinished(
                reply=getattr(result, "reply", ""),
                cancelled=bool(getattr(result, "cancelled", False)) or cancel.is_set(),
                conversation_id=None if session.temporary else session.conversation_id,
                reply_message_id=getattr(result, "reply_message_id", None),
                attention=getattr(result, "attention", None),
                first_token_s=first,
                total_s=clock() - started,
                new_tokens=getattr(stats, "new_tokens", None),
                tokens_per_s=getattr(stats, "decode_tokens_per_s", None),
                error=error,
            )
        )

    def on_reply_started(self, event: ReplyStarted) -> None:
        self.query_one("#reply-status", Static).update("writing…  (Esc stops)")
        self.refresh_chrome()  # a first message has created the conversation: list it now

    async def on_reply_finished(self, event: ReplyFinished) -> None:
        self._flusher.pause()
        await self._flush()  # the worker has ended: everything it appended is here
        widget = self._reply_widget
        self.streaming = False
        self._reply_widget = None
        self.refresh_bindings()
        self.query_one("#reply-status", Static).update("")
        if widget is not None:
            widget.message_id = event.reply_message_id
            widget.attention = event.attention
            await widget.finish(
                _reply_note(event, self.temporary, getattr(self.app, "keymap", None)),
                failed=bool(event.error),
            )
        if event.error:
            self.notify(event.error, title="The reply failed", severity="error", markup=False)
        self.refresh_chrome()
        self.turns_done += 1

    def action_cancel_reply(self) -> None:
        self.cancel_event.set()
        self.query_one("#reply-status", Static).update("stopping…")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_reply":
            return self.streaming  # Esc shows (and works) only while a reply streams
        return True

    def on_unmount(self) -> None:
        self.cancel_event.set()  # a reply still streaming stops at its next token
        self.adapter.remove_listeners()


def _reply_note(event: ReplyFinished, temporary: bool, keymap=None) -> str:
    parts = []
    if event.error:
        parts.append("failed")
    elif event.cancelled:
        parts.append("stopped")
    if event.first_token_s is not None:
        parts.append(f"first token {event.first_token_s:.1f} s")
    if event.new_tokens:
        speed = f" at {event.tokens_per_s:.0f} tok/s" if event.tokens_per_s else ""
        parts.append(f"{event.new_tokens} tokens{speed}")
    elif event.first_token_s is not None:
        parts.append(f"{event.total_s:.1f} s")
    if temporary:
        parts.append("temporary: not stored")
    elif event.attention is not None:
        parts.append(f"shaped by memory ({key_hint('inspect', keymap)} inspects)")
    return " · ".join(parts)
