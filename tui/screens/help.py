"""The help screen: every key and command (from ``tui.commands.COMMANDS``), plus what the app
promises about memory, in words a user can check against the memory panel."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.commands import COMMANDS, key_label

ABOUT_MEMORY = (
    "How memory works: lpm learns a few memory slots from your stored chats, in the background "
    "every few turns (or now, with F5). Before each reply, the slots become a short soft prompt. "
    "Temporary chats are never stored or learned. Memory off means no soft prompt and no "
    "learning. The inspector (F4) shows which slots a reply used; roll back (F7) or forget a "
    "chat (F9) from there. Everything stays on this machine."
)

OTHER_KEYS = (
    ("Enter", "Send the message"),
    ("Up / Down", "Previous / next message you sent (in the input)"),
    ("Tab / Shift+Tab", "Move between the chat list, the replies and the input"),
    ("Enter (chat list)", "Open the highlighted chat; r renames, d deletes it"),
    ("Ctrl+P", "Command palette: every command, by name"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(Content("Keys and commands").stylize("bold"), id="help-title")
            with VerticalScroll(id="help-body"):
                for command in COMMANDS:
                    yield from _row(key_label(command.key), command.title, command.help)
                for key, what in OTHER_KEYS:
                    yield from _row(key, what, "")
                yield Static(ABOUT_MEMORY, markup=False, id="help-about")
            yield Static("Esc closes", markup=False, classes="dim")


def _row(key: str, title: str, help_text: str) -> ComposeResult:
    """Key in a fixed column, title and help wrapping beside it (a hanging indent)."""
    text = Content(title)
    if help_text:
        text = Content.assemble(text, Content(f" — {help_text}").stylize("dim"))
    with Horizontal(classes="help-row"):
        yield Static(Content(key).stylize("bold"), classes="help-key")
        yield Static(text, classes="help-text")
