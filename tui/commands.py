"""Every action of the chat screen, in one table: its key, its footer label, its palette entry.

The screen's ``BINDINGS``, the command palette (``LpmCommands``) and the help screen are all built
from ``COMMANDS``, so an action cannot exist in one and be missing from another (a test checks
that each one has a key and an action method).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class Command:
    title: str  # palette title and help-screen name
    key: str  # Textual key spec; several keys separated by commas
    action: str  # action on the chat screen ("app." prefix: on the app)
    help: str  # one sentence: what it does, and what it does not
    footer: str = ""  # label in the footer; empty: not shown there (but in help and palette)
    priority: bool = False  # fire even when the input has focus and binds the key itself

    def __post_init__(self) -> None:
        if not self.title or not self.key or not self.action:
            raise ValueError(f"a command needs a title, key and action: {self!r}")


COMMANDS: tuple[Command, ...] = (
    Command("New chat", "ctrl+n", "new_chat", "Start a new conversation.", "New"),
    Command(
        "Temporary chat on/off",
        "ctrl+t",
        "toggle_temporary",
        "A chat that is neither stored nor learned, and not shaped by memory.",
        "Temp",
    ),
    Command(
        "Stop the reply",
        "escape",
        "cancel_reply",
        "Stop the reply being written; what was written so far is kept.",
        "Stop",
        priority=True,
    ),
    Command(
        "Rename chat", "f2", "rename_chat", "Give the open conversation a new title.", "Rename"
    ),
    Command(
        "Delete chat",
        "f8",
        "delete_chat",
        "Delete the open conversation and its messages (asks first).",
        "Delete",
    ),
    Command("Show/hide chats", "ctrl+b", "toggle_sidebar", "Show or hide the conversation list."),
    Command(
        "Show/hide memory panel",
        "f3",
        "toggle_memory_panel",
        "Show or hide the memory panel.",
        "Memory",
    ),
    Command(
        "Inspect the reply's memory",
        "f4",
        "inspect",
        "Which memory slots the selected reply attended to, per slot label, usage and "
        "sources; roll back or forget from there.",
        "Inspect",
    ),
    Command(
        "Refit memory now",
        "f5",
        "refit_now",
        "Learn from recent conversations now, in the background (chatting goes on).",
    ),
    Command(
        "Memory on/off",
        "f6",
        "toggle_memory",
        "Switch memory off (no soft prompt, nothing learned) or back on.",
    ),
    Command("Roll back memory", "f7", "rollback", "Make an earlier memory version current."),
    Command(
        "Forget this conversation",
        "f9",
        "forget_chat",
        "Drop this conversation from memory and refit from before it (asks first).",
    ),
    Command(
        "Import a file",
        "ctrl+o",
        "import_file",
        "Import chat logs (ChatGPT, Claude, ...) with a preview of what will be added.",
    ),
    Command("Export memory", "ctrl+s", "export_memory", "Write the memory to a .lpm file."),
    Command(
        "Wipe",
        "f10",
        "wipe",
        "Delete memory, or a profile's data, or everything (says exactly what, asks first).",
    ),
    Command(
        "Switch profile",
        "ctrl+g",
        "app.switch_profile",
        "Chat as another profile; each profile has its own chats and memory.",
    ),
    Command("Switch model", "ctrl+l", "app.switch_model", "Load another backbone model."),
    Command("Help", "f1", "app.help", "All keys and commands.", "Help"),
    Command("Quit", "ctrl+q", "app.quit", "Leave lpm (a running refit is stopped safely)."),
)


def bindings() -> list[Binding]:
    """The chat screen's key bindings (Quit is the app's own, so it is skipped here)."""
    return [
        Binding(c.key, c.action, c.footer or c.title, show=bool(c.footer), priority=c.priority)
        for c in COMMANDS
        if c.action != "app.quit"
    ]


def key_label(key: str) -> str:
    """'ctrl+n,f2' -> 'Ctrl+N / F2' for the help screen."""

    def one(spec: str) -> str:
        return "+".join(
            part.capitalize() if len(part) > 1 else part.upper() for part in spec.split("+")
        )

    return " / ".join(one(k.strip()) for k in key.split(","))


class LpmCommands(Provider):
    """The command palette (Ctrl+P): every command of the table, fuzzy-matched by title."""

    async def discover(self) -> Hits:
        for command in COMMANDS:
            yield DiscoveryHit(command.title, partial(self._run, command), help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in COMMANDS:
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(command.title),
                    partial(self._run, command),
                    help=f"{key_label(command.key)} · {command.help}",
                )

    async def _run(self, command: Command) -> None:
        await self.app.run_action(command.action, self.screen)
