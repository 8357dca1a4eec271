"""The TUI's multi-line input, configurable keys, remembered theme, and chat actions from the
sidebar and the palette; Pilot with a scripted model over a real store."""

from __future__ import annotations

import os
import stat
import threading

import pytest
from scripted import ScriptedFactory, chat_tokenizer
from test_tui import chat_ready, running, send, shown_text, wait_for
from textual import events

from lpm_local import locations
from lpm_local.settings import Settings, load_settings, save_setting
from tui.app import LpmApp
from tui.commands import COMMANDS, KEY_DEFAULTS, key_label, keymap_from
from tui.screens.chat import ChatScreen
from tui.screens.dialogs import ConfirmDialog, TextPrompt
from tui.screens.help import HelpScreen
from tui.screens.loading import LoadingScreen
from tui.widgets.chat_input import ChatInput
from tui.widgets.sidebar import ConversationList

pytestmark = pytest.mark.anyio

# Keys a terminal, a desktop or tmux takes before the app sees them.
TAKEN = {"f1", "f10", "f11", "ctrl+b", "ctrl+a", "ctrl+z", "ctrl+c", "ctrl+h", "ctrl+i", "ctrl+m"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True, scope="module")
def built_tokenizer():
    """Build the scripted tokenizer before any app starts: on a busy machine that takes longer
    than a test waits for the chat to open."""
    chat_tokenizer()


def test_default_keys_avoid_what_terminals_take_and_f_keys_are_never_the_only_way():
    for command in COMMANDS:
        keys = [k.strip() for k in command.key.split(",")]
        assert not set(keys) & TAKEN, command
        assert not keys[0].startswith("f") or keys[0] == "escape", command
    _, problems = keymap_from({})
    assert problems == []  # no two commands share a key


def test_keymap_reports_unknown_actions_and_clashes():
    keymap, problems = keymap_from({"new_chat": "ctrl+t", "fly": "ctrl+y"})
    assert keymap == {"new_chat": "ctrl+t"}
    assert any("keys.fly: no such action" in p for p in problems)
    assert any("ctrl+t is also the key of new_chat" in p for p in problems)


async def test_enter_sends_every_line_and_ctrl_j_alt_enter_shift_enter_insert_newlines():
    async with running() as (app, pilot, factory):
        chat_input = app.screen.query_one(ChatInput)
        await pilot.press("a", "ctrl+j", "b", "alt+enter", "c", "shift+enter", "d")
        assert chat_input.value == "a\nb\nc\nd"
        done = app.screen.turns_done
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen.turns_done > done)
        store, profile = factory.assistant.store, factory.assistant.profile
        (chat,) = store.list_conversations(profile.id)
        assert store.messages(chat.id)[0].content == "a\nb\nc\nd"
        assert factory.engine.calls[-1]["turns"][-1].content == "a\nb\nc\nd"
        assert chat_input.value == ""


async def test_a_paste_keeps_every_line():
    async with running() as (app, pilot, _):
        chat_input = app.screen.query_one(ChatInput)
        app.post_message(events.Paste("line one\nline two\n\nline four"))  # as a terminal does
        await pilot.pause()
        assert chat_input.value == "line one\nline two\n\nline four"


async def test_up_walks_history_only_from_the_first_line():
    async with running() as (app, pilot, _):
        await send(pilot, "earlier")
        chat_input = app.screen.query_one(ChatInput)
        await pilot.press("x", "ctrl+j", "y")
        await pilot.press("up")  # from the second line: the cursor moves up, no history
        assert chat_input.value == "x\ny"
        await pilot.press("up")  # now on the first line: history
        assert chat_input.value == "earlier"
        await pilot.press("down")
        assert chat_input.value == "x\ny"


async def test_configured_keys_work_and_the_help_shows_them():
    settings = Settings(keys={"new_chat": "ctrl+y", "help": "alt+q"})
    async with running(size=(100, 60), settings=settings) as (app, pilot, _):
        await send(pilot, "hello")
        assert app.screen.conversation_id is not None
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: app.screen.conversation_id is None)
        await pilot.press("alt+q")
        assert isinstance(app.screen, HelpScreen)
        text = shown_text(app)
        assert "Ctrl+Y" in text and "(new_chat)" in text
        assert key_label(KEY_DEFAULTS["rename_chat"]) in text


async def test_theme_picked_in_the_app_is_saved_and_a_config_change_is_applied():
    async with running() as (app, pilot, _):
        app.theme = "nord"
        await pilot.pause()
        assert load_settings().theme == "nord"
        path = locations.settings_path()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        save_setting("theme", "gruvbox")  # as `lpm config set theme gruvbox` would
        os.utime(path, ns=(1, 1))  # a new mtime even within the file system's granularity
        await wait_for(pilot, lambda: app.theme == "gruvbox", timeout=10)
        assert load_settings().theme == "gruvbox"  # applied, not re-saved as something else


async def test_typing_while_the_model_loads_is_kept_for_the_chat():
    factory = ScriptedFactory(gate=threading.Event())
    app = LpmApp(assistant_factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LoadingScreen))
        await pilot.press(*"hello", "ctrl+j", *"there")
        await pilot.press("enter")  # not sent: the model is not there yet
        assert "still loading" in " ".join(n.message for n in app._notifications)
        factory.gate.set()
        await wait_for(pilot, lambda: chat_ready(app), timeout=30)
        assert app.screen.query_one(ChatInput).value == "hello\nthere"
        assert factory.engine.calls == []


async def test_sidebar_exports_renames_and_deletes_with_memory_forgetting(tmp_path):
    factory = ScriptedFactory(memory=True)
    async with running(factory, size=(100, 30)) as (app, pilot, _):
        store, profile = factory.assistant.store, factory.assistant.profile
        await send(pilot, "about cats")
        (chat,) = store.list_conversations(profile.id)
        assert f"#{chat.id}" in shown_text(app)  # ids are shown where chats are named
        listing = app.screen.query_one(ConversationList)
        listing.focus()
        listing.highlighted = listing.get_option_index(str(chat.id))
        await pilot.press("e")
        assert isinstance(app.screen, TextPrompt)
        target = tmp_path / "cats.json"
        app.screen.query_one("#prompt-input").value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: target.exists())
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert '"about cats"' in target.read_text()

        await pilot.press("r")
        app.screen.query_one("#prompt-input").value = "Cats"
        await pilot.press("enter")
        await pilot.pause()
        assert store.get_conversation(chat.id).title == "Cats"

        forgotten = []
        factory.assistant.memory.forget = forgotten.append  # what the runtime is asked
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmDialog)
        assert "forgets it too" in shown_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: store.list_conversations(profile.id) == [])
        assert forgotten == [chat.id]


async def test_palette_exports_the_open_chat(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    async with running() as (app, pilot, _):
        await send(pilot, "keep this")
        await pilot.press("ctrl+p")
        await pilot.press(*"export chat")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt))
        await pilot.press("enter")  # the default: ./lpm-chat-<id>.md
        await wait_for(pilot, lambda: any(tmp_path.glob("lpm-chat-*.md")))
        (written,) = tmp_path.glob("lpm-chat-*.md")
        assert "## User\n\nkeep this\n" in written.read_text()
        assert isinstance(app.screen, ChatScreen)
