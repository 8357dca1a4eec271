"""The loading screen: which model, what stage (convert, tokenizer, weights), how far.

The app's loader worker posts ``LoadProgress``; the app forwards it here with ``show_progress``.
A stage of unknown length shows its elapsed seconds, ticked once a second, instead of an
indeterminate bar: that bar animates every frame, and on a busy 2-core machine its redraws
took the GIL from the loading thread often enough to make loading 1.6x slower (33 s vs 20 s).
A failure stays on this screen with its one-line reason, so the user reads it before quitting.

The message input is already there while the model loads (on a first run the load takes about a
minute): what is typed stays in it and moves into the chat's input once the chat opens; Enter
only says that the model is not ready yet, so nothing is sent to a model that is not there.
"""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, Static

from tui.formatting import literal
from tui.widgets.chat_input import NEWLINE_HINT, ChatInput

DRAFT_PLACEHOLDER = f"Write your message while the model loads · {NEWLINE_HINT}"

# Read through this name so snapshot tests can pin timings shown on screen.
clock = time.monotonic


class LoadingScreen(Screen[None]):
    """Shown from start until the assistant is ready (and again when switching models)."""

    BINDINGS = [
        # Ctrl+Q (the app's) quits at any time; q alone too once the input lost the focus.
        Binding("q", "app.quit", "Quit", show=False),
        Binding("escape", "back", "Back to the chat"),
    ]

    def __init__(self, model: str | None) -> None:
        super().__init__()
        self.model = model
        self.started = clock()
        self.stage = "starting"
        self.stage_started = self.started
        self.failed = False

    def compose(self) -> ComposeResult:
        with Center():
            with Vertical(id="loading-box"):
                yield Static(Content("lpm-local").stylize("bold"), id="loading-title")
                yield Static(
                    literal(f"loading {self.model or 'the default model'}"), id="loading-model"
                )
                yield Static("starting", markup=False, id="loading-stage")
                yield ProgressBar(total=100, show_eta=False, id="loading-progress")
                yield Static("", markup=False, id="loading-error")
        yield ChatInput(placeholder=DRAFT_PLACEHOLDER, id="draft")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#loading-error").display = False
        self.query_one("#loading-progress").display = False
        self._ticker = self.set_interval(1.0, self._tick)
        self.query_one(ChatInput).focus()

    def draft_text(self) -> str:
        """What the user typed meanwhile, for the chat's input."""
        return self.query_one(ChatInput).text

    def on_chat_input_submitted(self, event: ChatInput.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.notify(
                "The model is still loading: your message stays in the box, Enter sends it "
                "once the chat opens.",
                markup=False,
            )

    def show_progress(self, stage: str, fraction: float | None) -> None:
        if stage != self.stage:
            self.stage, self.stage_started = stage, clock()
        bar = self.query_one("#loading-progress", ProgressBar)
        bar.display = fraction is not None
        if fraction is not None:
            bar.update(total=100, progress=100 * max(0.0, min(1.0, fraction)))
        self._tick()

    def _tick(self) -> None:
        elapsed = clock() - self.stage_started
        self.query_one("#loading-stage", Static).update(literal(f"{self.stage}  ({elapsed:.0f} s)"))

    def show_error(self, error: str) -> None:
        self._ticker.stop()
        self.failed = True
        self.set_focus(None)  # so q quits; the draft stays on screen for copying
        self.query_one("#loading-progress").display = False
        self.query_one("#loading-stage", Static).update("could not load the model")
        back = (
            " Esc goes back to the chat with the model loaded before." if self._over_chat() else ""
        )
        box = self.query_one("#loading-error", Static)
        box.update(literal(f"{error}\n\nPress q (or Ctrl+Q) to quit.{back}"))
        box.display = True
        self.refresh_bindings()

    def _over_chat(self) -> bool:
        """True when switching models: a chat with the previous model is underneath."""
        return len(self.app.screen_stack) > 2

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return self.failed and self._over_chat()
        return True

    def action_back(self) -> None:
        self.app.pop_screen()
