"""Snapshot tests of the main screens (pytest-textual-snapshot), at 80x24 and a larger size.

Update after an intended visual change with ``pytest tests/test_tui_snapshots.py
--snapshot-update`` and look at the SVGs in ``tests/__snapshots__/`` (or the HTML report a
failing run writes). Timings on screen are pinned (``clock``) and relative times read "just
now", so the pictures do not depend on the machine's speed.
"""

from __future__ import annotations

import threading
import time

import pytest
from scripted import ScriptedFactory
from textual.pilot import Pilot

from tui.app import LpmApp
from tui.screens.chat import ChatScreen
from tui.widgets.chat_input import ChatInput

SIZES = [(80, 24), (120, 36)]

MARKDOWN_REPLY = """Here is what I can do:

- answer questions, **privately**
- remember you across chats

```python
print("hello")
```"""


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch):
    monkeypatch.setattr("tui.screens.chat.clock", lambda: 0.0)
    monkeypatch.setattr("tui.screens.loading.clock", lambda: 0.0)


async def until(pilot: Pilot, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await pilot.pause(0.02)


async def ready(pilot: Pilot) -> None:
    await until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen) and pilot.app.screen.ready)
    for widget in pilot.app.screen.query(ChatInput):
        widget.cursor_blink = False


async def say(pilot: Pilot, text: str) -> None:
    screen = pilot.app.screen
    done = screen.turns_done
    screen.query_one(ChatInput).value = text
    await pilot.press("enter")
    await until(pilot, lambda: screen.turns_done > done)
    await pilot.pause(0.1)
    assert not screen.query(".failed"), "the reply failed"


def app_with(**factory_options) -> LpmApp:
    return LpmApp(assistant_factory=ScriptedFactory(**factory_options))


@pytest.mark.parametrize("size", SIZES)
def test_chat_after_a_turn(snap_compare, size):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        await say(pilot, "What can you do?")

    app = app_with(reply=lambda _: MARKDOWN_REPLY)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_chat_with_memory_panel(snap_compare, size):
    factory = ScriptedFactory(memory=True)

    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        memory = factory.assistant.memory
        for _ in range(3):
            memory.refit_now()
            await until(pilot, lambda: not memory.state.running)
        await say(pilot, "I live in Lyon and I like green tea")
        if size[0] < 110:
            await pilot.press("f3")  # 80 columns: the panel replaces the chat list
        pilot.app.clear_notifications()
        await pilot.pause()

    app = LpmApp(assistant_factory=factory)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_temporary_chat(snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        await pilot.press("ctrl+t")
        await say(pilot, "just between us")
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(app_with(), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_inspector(snap_compare, size):
    factory = ScriptedFactory(memory=True)

    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        factory.assistant.memory.refit_now()
        await until(pilot, lambda: not factory.assistant.memory.state.running)
        await say(pilot, "what do you remember?")
        await pilot.press("f4")
        pilot.app.clear_notifications()
        await pilot.pause(0.2)

    assert snap_compare(
        LpmApp(assistant_factory=factory), terminal_size=size, run_before=run_before
    )


def test_help(snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        await pilot.press("alt+h")

    assert snap_compare(app_with(), terminal_size=(80, 24), run_before=run_before)


def test_loading(snap_compare):
    gate = threading.Event()

    async def run_before(pilot: Pilot) -> None:
        await until(
            pilot,
            lambda: "dequantizing" in str(pilot.app.screen.query_one("#loading-stage").visual),
        )
        pilot.app.screen.query_one(ChatInput).cursor_blink = False
        await pilot.press(*"typed while it loads")
        await pilot.pause()

    stage = ("dequantizing GGUF weights (first run only)", 0.4)
    app = LpmApp(assistant_factory=ScriptedFactory(gate=gate, stage=stage))
    try:
        assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
    finally:
        gate.set()


def test_multiline_message_being_written(snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        await say(pilot, "first line\nsecond line\n\nfourth, after a blank one")
        await pilot.press(*"a draft", "ctrl+j", *"on two lines")
        await pilot.pause()

    assert snap_compare(app_with(), terminal_size=(80, 24), run_before=run_before)


def test_delete_confirmation_and_hostile_titles(snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)
        await say(pilot, "[@click=app.quit]x[/] and [link=file:///etc/passwd]x[/link]")
        await pilot.press("f8")
        await pilot.pause(0.1)

    assert snap_compare(app_with(), terminal_size=(100, 30), run_before=run_before)
