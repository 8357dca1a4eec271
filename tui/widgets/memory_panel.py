"""The memory panel: what the assistant remembers about the user, and what it is doing now.

Honest by construction: every line is read from the store or the runtime through
``MemoryAdapter``; when there is no runtime it says "memory: not available yet", in a temporary
chat it says memory is not used, and with the switch off it says nothing is learned. A refit
running in the background shows its stage and a progress bar; chatting goes on meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Label, ProgressBar, Sparkline, Static, Switch

from tui.formatting import ago, loss, percent
from tui.memory_adapter import NOT_AVAILABLE, MemoryStatus


class MemoryPanel(Vertical):
    """Right-hand panel; F3 shows or hides it."""

    @dataclass
    class Toggled(Message):
        """The user flipped the memory switch."""

        enabled: bool

    def compose(self) -> ComposeResult:
        yield Static(Content("Memory").stylize("bold"), classes="panel-title")
        with Horizontal(id="memory-switch-row"):
            yield Switch(value=True, id="memory-switch")
            yield Label("on", id="memory-switch-label")
        yield Static("", markup=False, id="memory-version")
        yield Static("", markup=False, id="memory-last-refit")
        yield Static("held-out loss", markup=False, classes="dim")
        yield Sparkline([], id="memory-losses")
        yield Static("", markup=False, id="memory-loss-latest")
        with Vertical(id="refit-box"):
            yield Static("", markup=False, id="refit-stage")
            yield ProgressBar(total=100, show_eta=False, id="refit-progress")
        yield Static("", markup=False, id="memory-note")

    def on_mount(self) -> None:
        self.query_one("#refit-box").display = False

    def show_status(self, status: MemoryStatus, *, temporary: bool = False) -> None:
        """Re-render everything from one ``MemoryStatus`` snapshot."""
        switch = self.query_one("#memory-switch", Switch)
        with self.prevent(Switch.Changed):
            switch.value = status.enabled
        self.query_one("#memory-switch-label", Label).update("on" if status.enabled else "off")
        version = "none yet" if status.version_id is None else f"#{status.version_id}"
        self._set("#memory-version", f"version  {version} ({status.version_count} saved)")
        self._set("#memory-last-refit", f"last refit  {ago(status.last_refit_at)}")
        losses = status.heldout_losses
        sparkline = self.query_one("#memory-losses", Sparkline)
        sparkline.data = losses
        sparkline.display = len(losses) >= 2  # one point is not a trend
        if losses:
            self._set("#memory-loss-latest", f"latest {loss(losses[-1])}  best {loss(min(losses))}")
        else:
            self._set("#memory-loss-latest", "no versions yet")
        self.show_refit(status.refit_stage, status.refit_fraction, running=status.refit_running)
        self._set("#memory-note", _note(status, temporary))

    def show_refit(self, stage: str, fraction: float | None, *, running: bool) -> None:
        """A refit's progress. No bar when ``fraction`` is unknown: an indeterminate bar redraws
        every frame, and those redraws would take the GIL from the reply being generated."""
        box = self.query_one("#refit-box")
        box.display = running
        if not running:
            return
        self._set("#refit-stage", f"refit: {stage or 'running'} {percent(fraction)}".rstrip())
        bar = self.query_one("#refit-progress", ProgressBar)
        bar.display = fraction is not None
        if fraction is not None:
            bar.update(total=100, progress=100 * max(0.0, min(1.0, fraction)))

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self.query_one("#memory-switch-label", Label).update("on" if event.value else "off")
        self.post_message(self.Toggled(event.value))

    def _set(self, selector: str, text: str) -> None:
        self.query_one(selector, Static).update(text)


def _note(status: MemoryStatus, temporary: bool) -> str:
    if status.problem:
        return f"memory problem: {status.problem}"
    if temporary:
        return "temporary chat: memory is not used, nothing is stored or learned"
    if not status.enabled:
        return "memory is off: replies are not shaped by memory and nothing is learned"
    if not status.available:
        return NOT_AVAILABLE
    if status.version_id is None:
        return "nothing learned yet: memory grows after a few turns"
    return "replies are shaped by this memory version"
