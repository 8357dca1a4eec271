"""The help screen: every key and command (from ``tui.commands.COMMANDS``), plus what the app
promises about memory, in words a user can check against the memory panel."""

from __future__ import annotations

from collections.abc import Mapping

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.commands import COMMANDS, effective_key, key_hint, key_label


def about_memory(keymap: Mapping[str, str] | None = None) -> str:
    def key(action: str) -> str:
        return key_hint(action, keymap)

    return (
        "How memory works: lpm learns a few memory slots from your stored chats, in the "
        f"background every few turns (or now, with {key('refit_now')}). Before each reply, the "
        "slots become a short soft prompt. Temporary chats are never stored or learned. Memory "
        "off means no soft prompt and no learning. The inspector "
        f"({key('inspect')}) shows which slots a reply used; roll back ({key('rollback')}) or "
        f"forget a chat ({key('forget_chat')}) from there. Everything stays on this machine."
    )


OTHER_KEYS = (
    ("Enter", "Send the message"),
    (
        "Ctrl+J",
        "New line in the message, in every terminal (Shift+Enter and Alt+Enter too, where the "
        "terminal reports them: kitty, WezTerm, foot, Ghostty); a paste keeps every line",
    ),
    ("Up / Down", "Previous / next message you sent (on the input's first / last line)"),
    ("Tab / Shift+Tab", "Move between the chat list, the replies and the input"),
    ("Enter (chat list)", "Open the highlighted chat; r renames, e exports, d deletes it"),
    ("Ctrl+P", "Command palette: every command, by name (and Textual's theme picker)"),
)
CONFIG_NOTE = (
    "Every key above can be changed: `lpm config set keys.<action> KEY` (the action names are "
    "in `lpm config list`); the theme is remembered, and `lpm config set theme NAME` applies "
    "to a running lpm too."
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(Content("Keys and commands").stylize("bold"), id="help-title")
            with VerticalScroll(id="help-body"):
                keymap = getattr(self.app, "keymap", None)
                for command in COMMANDS:
                    key = key_label(effective_key(command, keymap))
                    yield from _row(key, f"{command.title} ({command.id})", command.help)
                for key, what in OTHER_KEYS:
                    yield from _row(key, what, "")
                yield Static(about_memory(keymap), markup=False, id="help-about")
                yield Static(CONFIG_NOTE, markup=False, classes="help-config")
            yield Static("Esc closes", markup=False, classes="dim")


def _row(key: str, title: str, help_text: str) -> ComposeResult:
    """Key in a fixed column, title and help wrapping beside it (a hanging indent)."""
    text = Content(title)
    if help_text:
        text = Content.assemble(text, Content(f" — {help_text}").stylize("dim"))
    with Horizontal(classes="help-row"):
        yield Static(Content(key).stylize("bold"), classes="help-key")
        yield Static(text, classes="help-text")
