"""Every action of the chat screen, in one table: its key, its footer label, its palette entry.

The screen's ``BINDINGS``, the command palette (``LpmCommands``) and the help screen are all built
from ``COMMANDS``, so an action cannot exist in one and be missing from another (a test checks
that each one has a key and an action method).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class Command:
    title: str  # palette title and help-screen name
    key: str  # default Textual key spec; several keys separated by commas
    action: str  # action on the chat screen ("app." prefix: on the app)
    help: str  # one sentence: what it does, and what it does not
    footer: str = ""  # label in the footer; empty: not shown there (but in help and palette)

    def __post_init__(self) -> None:
        if not self.title or not self.key or not self.action:
            raise ValueError(f"a command needs a title, key and action: {self!r}")

    @property
    def id(self) -> str:
        """The binding id, and the setting's name: ``keys.<id>`` in the config file."""
        return self.action.removeprefix("app.")


# Default keys: ones no common terminal, multiplexer or desktop takes first. Not F1/F10 (GNOME
# Terminal's help and menu), not Ctrl+B (tmux's prefix) or Ctrl+A (screen's, and the input's
# line start), not the keys the input itself edits with (Ctrl+A/E/W/U/K/D/X/C/V/Z/Y). F-keys
# stay only as second keys (macOS needs fn for them); Alt+letter needs "Option as Meta" on
# macOS terminals, so every command is also in the palette (Ctrl+P).
COMMANDS: tuple[Command, ...] = (
    Command("New chat", "ctrl+n", "new_chat", "Start a new conversation.", "New"),
    Command(
        "Temporary chat on/off",
        "ctrl+t",
        "toggle_temporary",
        "A chat that is neither stored nor learned, and not shaped by memory.",
    ),
    Command(
        "Stop the reply",
        "escape",
        "cancel_reply",
        "Stop the reply being written; what was written so far is kept.",
        "Stop",
    ),
    Command(
        "Rename chat",
        "ctrl+r,f2",
        "rename_chat",
        "Give the open conversation (or the one highlighted in the list) a new title.",
        "Rename",
    ),
    Command(
        "Export chat",
        "alt+e",
        "export_chat",
        "Write the open conversation to a file (Markdown, JSON or JSON Lines, by its name).",
    ),
    Command(
        "Delete chat",
        "alt+d,f8",
        "delete_chat",
        "Delete the conversation and its messages, and forget it from memory (asks first).",
    ),
    Command("Show/hide chats", "alt+c", "toggle_sidebar", "Show or hide the conversation list."),
    Command(
        "Show/hide memory panel",
        "alt+m,f3",
        "toggle_memory_panel",
        "Show or hide the memory panel.",
        "Memory",
    ),
    Command(
        "Inspect the reply's memory",
        "alt+i,f4",
        "inspect",
        "Which memory slots the selected reply attended to, per slot label, usage and "
        "sources; roll back or forget from there.",
        "Inspect",
    ),
    Command(
        "Refit memory now",
        "alt+r,f5",
        "refit_now",
        "Learn from recent conversations now, in the background (chatting goes on).",
    ),
    Command(
        "Memory on/off",
        "alt+o,f6",
        "toggle_memory",
        "Switch memory off (no soft prompt, nothing learned) or back on.",
    ),
    Command("Roll back memory", "alt+b,f7", "rollback", "Make an earlier memory version current."),
    Command(
        "Forget this conversation",
        "alt+f,f9",
        "forget_chat",
        "Drop this conversation from memory and refit from before it; the chat stays (asks first).",
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
        "alt+w",
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
    Command("Help", "alt+h", "app.help", "All keys and commands.", "Help"),
    Command("Quit", "ctrl+q", "app.quit", "Leave lpm (a running refit is stopped safely)."),
)

# What `lpm config list` shows and `lpm config set keys.<action>` checks (read through the
# TUI's entry point module, tui.app, which re-exports it).
KEY_DEFAULTS: dict[str, str] = {c.id: c.key for c in COMMANDS}


def bindings() -> list[Binding]:
    """The chat screen's key bindings (Quit is the app's own, so it is skipped here).

    Every one is a priority binding: the message input is focused nearly all the time and
    would otherwise take keys it binds itself (F6/F7 select text in a TextArea). Each has an
    ``id``, so the user's ``keys.<id>`` settings apply through Textual's keymap.
    """
    return [
        Binding(c.key, c.action, c.footer or c.title, show=bool(c.footer), priority=True, id=c.id)
        for c in COMMANDS
        if c.action != "app.quit"
    ]


def keymap_from(overrides: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The user's ``keys.<id>`` settings as a Textual keymap, and a line per problem.

    Unknown actions are left out (and reported), and a key that two commands would share is
    reported, so a typo in the config file is said once instead of silently doing nothing.
    """
    keymap: dict[str, str] = {}
    problems: list[str] = []
    for action, spec in overrides.items():
        if action in KEY_DEFAULTS:
            keymap[action] = spec
        else:
            problems.append(f"keys.{action}: no such action (see the help screen)")
    owner: dict[str, str] = {}
    for command in COMMANDS:
        for key in effective_key(command, keymap).split(","):
            key = key.strip()
            if key in owner:
                problems.append(
                    f"keys.{command.id}: {key} is also the key of {owner[key]}; one of them "
                    "will not work"
                )
            owner.setdefault(key, command.id)
    return keymap, problems


def effective_key(command: Command, keymap: Mapping[str, str] | None = None) -> str:
    """The keys of ``command`` once the user's keymap applies."""
    return (keymap or {}).get(command.id, command.key)


def key_hint(action_id: str, keymap: Mapping[str, str] | None = None) -> str:
    """'Alt+I' for the first key of an action, for hints in the screen's own words."""
    command = next(c for c in COMMANDS if c.id == action_id)
    return key_label(effective_key(command, keymap).split(",")[0])


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
        keymap = getattr(self.app, "keymap", None)
        for command in COMMANDS:
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(command.title),
                    partial(self._run, command),
                    help=f"{key_label(effective_key(command, keymap))} · {command.help}",
                )

    async def _run(self, command: Command) -> None:
        await self.app.run_action(command.action, self.screen)
