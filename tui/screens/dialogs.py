"""Small modal dialogs: confirm, ask for a line of text, pick one of a list.

Each is a ``ModalScreen`` that dismisses with its answer (``bool``, ``str | None``,
``str | None``), so callers use ``push_screen(dialog, callback)`` or ``push_screen_wait``.
All text that may come from the user or a file (titles, paths, profile names) is shown as
``Content`` or with ``markup=False``. Escape always means "no".
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.formatting import literal


class ConfirmDialog(ModalScreen[bool]):
    """Yes/no, with the consequences spelled out line by line (e.g. what a wipe deletes)."""

    BINDINGS = [
        Binding("escape,n", "dismiss(False)", "Cancel"),
        Binding("y", "dismiss(True)", "Confirm", show=False),
    ]

    def __init__(
        self, title: str, lines: Sequence[str], *, confirm: str = "Delete", danger: bool = True
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.lines = list(lines)
        self.confirm_label = confirm
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(literal(self.title_text, "bold"), classes="dialog-title")
            for line in self.lines:
                yield Static(literal(line), classes="dialog-line")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (n)", id="cancel")
                yield Button(
                    Content(f"{self.confirm_label} (y)"),
                    id="confirm",
                    variant="error" if self.danger else "primary",
                )

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()  # the safe choice has the focus

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")


class TextPrompt(ModalScreen[str | None]):
    """One line of text (a new title, a file path, a model name); Enter accepts."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(
        self, title: str, *, value: str = "", placeholder: str = "", hint: str = ""
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.initial = value
        self.placeholder = placeholder
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(literal(self.title_text, "bold"), classes="dialog-title")
            yield Input(value=self.initial, placeholder=self.placeholder, id="prompt-input")
            if self.hint:
                yield Static(literal(self.hint, "dim"), classes="dialog-line")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        self.dismiss(value or None)


class ChoiceDialog(ModalScreen[str | None]):
    """Pick one option; ``choices`` are (key, label) pairs, labels shown literally."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(
        self,
        title: str,
        choices: Sequence[tuple[str, str]],
        *,
        current: str | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.choices = list(choices)
        self.current = current
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(literal(self.title_text, "bold"), classes="dialog-title")
            yield OptionList(
                *[
                    Option(literal(label + ("  (current)" if key == self.current else "")), id=key)
                    for key, label in self.choices
                ],
                id="choices",
            )
            if self.hint:
                yield Static(literal(self.hint, "dim"), classes="dialog-line")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.focus()
        if self.current is not None:
            keys = [key for key, _ in self.choices]
            if self.current in keys:
                options.highlighted = keys.index(self.current)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)
