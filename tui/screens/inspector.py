"""The memory inspector for one reply: which slots its soft prompt attended to, and what each
slot holds (label, usage, the conversations that shaped it). Roll back or forget from here.

Labels and sources are model output and conversation titles: untrusted, so every cell is a Rich
``Text`` built from plain text (a ``str`` cell in a ``DataTable`` would be parsed as markup).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalScroll, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from lpm_local.storage.records import Conversation
from tui.formatting import literal, one_line
from tui.memory_adapter import NOT_AVAILABLE, MemoryAdapter
from tui.messages import MemoryChanged
from tui.screens.memory_flows import ask_forget, ask_rollback
from tui.widgets.heatmap import Heatmap, slot_usage, to_grid

if TYPE_CHECKING:
    import torch

    from lpm_local.memory.inspection import SlotDescription

USAGE_BAR = 10  # cells of the usage bar in the slot table
TREND = "▁▂▃▄▅▆▇█"


class InspectorScreen(Screen[None]):
    """Full screen (the heatmap needs the width); Escape returns to the chat."""

    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("r", "rollback", "Roll back"),
        Binding("f", "forget", "Forget chat"),
    ]

    def __init__(
        self,
        adapter: MemoryAdapter,
        *,
        reply: str,
        attention: torch.Tensor | None,
        conversation: Conversation | None,
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.reply = reply
        self.attention = attention
        self.conversation = conversation

    def compose(self) -> ComposeResult:
        yield Static(Content("Memory inspector").stylize("bold"), id="inspector-title")
        with VerticalScroll(id="inspector-body"):
            yield Static(
                literal("Reply: " + one_line(self.reply, 200, "(empty)")), id="inspector-reply"
            )
            yield Static("", markup=False, id="inspector-status")
            with HorizontalScroll(id="heatmap-box"):
                yield Heatmap(self.attention, id="heatmap")
            yield Static(Content("Slots").stylize("bold"), classes="section-title")
            with Vertical(id="slots-box"):
                yield DataTable(id="slots", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_view()
        self.query_one(Heatmap).focus()

    def refresh_view(self) -> None:
        status = self.adapter.status()
        if not status.available:
            line = f"{NOT_AVAILABLE}: no slots to show."
        else:
            version = f"#{status.version_id}" if status.version_id else "none yet"
            line = f"memory version {version} · {status.version_count} saved · " + (
                "on" if status.enabled else "off"
            )
        self.query_one("#inspector-status", Static).update(line)
        self._fill_slots(self.adapter.slots(self.attention))

    def _fill_slots(self, slots: list[SlotDescription]) -> None:
        table = self.query_one(DataTable)
        table.clear(columns=True)
        # A routed bank is listed by group (``SlotDescription.kind``), a flat memory by slot.
        kind = slots[0].kind if slots else "slot"
        if self.attention is not None:
            from lpm_local.memory.inspection import by_group_attention  # torch: loaded by now

            # A bank's reply read 32 of its hundreds of rows: the map shows one column per group.
            grouped = by_group_attention(self.attention, slots)
            if grouped is not None:
                self.query_one(Heatmap).set_attention(grouped)
        table.add_columns(kind, "this reply", "usage", "recent", "label", "sources")
        this_reply = slot_usage(to_grid(self.attention)) if self.attention is not None else []
        if not slots:
            table.add_row(
                Text("-"),
                Text(""),
                Text(""),
                Text(""),
                Text("no slot information yet", style="dim"),
                Text(""),
            )
            return
        for slot in slots:
            share = slot.reply_usage
            if share is None and kind == "slot" and slot.index < len(this_reply):
                share = this_reply[slot.index]
            table.add_row(
                Text(str(slot.index)),
                Text("-" if share is None else f"{100 * share:.0f}%"),
                _bar(slot.usage),
                Text(_trend(slot.usage_history)),
                Text(one_line(slot.label, 40, "(no label)")),
                Text(one_line(", ".join(slot.sources), 60, "-")),
            )

    def action_rollback(self) -> None:
        ask_rollback(self.app, self, self.adapter)

    def action_forget(self) -> None:
        if self.conversation is None:
            self.notify("This reply is not in a stored conversation.", markup=False)
            return
        ask_forget(self.app, self, self.adapter, self.conversation)

    def on_memory_changed(self, event: MemoryChanged) -> None:
        self.refresh_view()
        # The chat screen underneath re-reads too when it is shown again.
        for screen in self.app.screen_stack:
            if screen is not self and hasattr(screen, "refresh_chrome"):
                screen.post_message(MemoryChanged(event.reason))


def _trend(history: list[float], width: int = 8) -> str:
    """The last ``width`` usages as a tiny sparkline (scaled to the slot's own peak)."""
    recent = history[-width:]
    peak = max(recent, default=0.0)
    if peak <= 0:
        return "-"
    return "".join(TREND[min(len(TREND) - 1, round(v / peak * (len(TREND) - 1)))] for v in recent)


def _bar(usage: float) -> Text:
    filled = round(max(0.0, min(1.0, usage)) * USAGE_BAR)
    return Text.assemble(
        ("█" * filled, "bold"), ("░" * (USAGE_BAR - filled), "dim"), f" {100 * usage:.0f}%"
    )
