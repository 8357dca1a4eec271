"""The terminal UI, driven by Pilot with a scripted model over a real store (fast)."""

from __future__ import annotations

import threading
import time
from contextlib import asynccontextmanager

import pytest
from scripted import ScriptedFactory
from textual.widgets import DataTable, Markdown, OptionList, Sparkline

from lpm_local.errors import ModelNotAvailable
from tui.app import LpmApp
from tui.commands import COMMANDS
from tui.screens.chat import ChatScreen
from tui.screens.dialogs import ChoiceDialog, ConfirmDialog, TextPrompt
from tui.screens.help import HelpScreen
from tui.screens.import_preview import ImportScreen
from tui.screens.inspector import InspectorScreen
from tui.screens.loading import LoadingScreen
from tui.widgets.chat_input import ChatInput, InputHistory
from tui.widgets.heatmap import Heatmap
from tui.widgets.memory_panel import MemoryPanel
from tui.widgets.message_list import (
    MAX_RENDERED,
    AssistantMessage,
    MessageList,
    UserMessage,
)
from tui.widgets.sidebar import ConversationList

pytestmark = pytest.mark.anyio

HOSTILE = [
    "[/]",
    "[@click=app.quit]x[/]",
    "[link=file:///etc/passwd]x[/link]",
    "see [the docs](file:///etc/passwd) now",
]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def wait_for(pilot, predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.02)


@asynccontextmanager
async def running(factory: ScriptedFactory | None = None, size=(80, 24), **app_options):
    factory = factory or ScriptedFactory()
    app = LpmApp(assistant_factory=factory, **app_options)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: chat_ready(app))
        yield app, pilot, factory


def chat_ready(app) -> bool:
    return isinstance(app.screen, ChatScreen) and app.screen.ready


async def send(pilot, text: str, timeout: float = 5.0) -> None:
    screen = pilot.app.screen
    done = screen.turns_done
    screen.query_one(ChatInput).value = text
    await pilot.press("enter")
    await wait_for(pilot, lambda: screen.turns_done > done, timeout)
    await pilot.pause()
    assert not screen.query(AssistantMessage).last().has_class("failed"), [
        n.message for n in pilot.app._notifications
    ]


def shown_text(app) -> str:
    """Every character on screen, as the user sees it."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


# -- loading -------------------------------------------------------------------------------------


async def test_loading_screen_shows_progress_then_chat():
    factory = ScriptedFactory(gate=threading.Event())
    app = LpmApp(assistant_factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "loading tokenizer" in shown_text(app))
        assert isinstance(app.screen, LoadingScreen)
        factory.gate.set()
        await wait_for(pilot, lambda: chat_ready(app))
        assert app.focused is app.screen.query_one(ChatInput)


async def test_load_failure_is_shown_not_raised():
    factory = ScriptedFactory(
        fail=ModelNotAvailable("qwen3-4b needs CUDA; try --model smollm2-135m")
    )
    app = LpmApp(assistant_factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "needs CUDA" in shown_text(app))
        assert isinstance(app.screen, LoadingScreen)
        await pilot.press("q")
        await wait_for(pilot, lambda: app._exit_renderables is not None or not app.is_running)


# -- chatting ------------------------------------------------------------------------------------


async def test_reply_streams_as_markdown_and_is_stored():
    async with running() as (app, pilot, factory):
        await send(pilot, "hello there")
        reply = app.screen.query_one(AssistantMessage)
        assert reply.text == "You said: **hello there**"
        body = reply.query_one(Markdown)
        assert body._open_links is False
        assert "You said: hello there" in shown_text(app)  # bold rendered, not raw asterisks
        store = factory.assistant.store
        [conversation] = store.list_conversations(factory.assistant.profile.id)
        assert [(m.role, m.content) for m in store.messages(conversation.id)] == [
            ("user", "hello there"),
            ("assistant", "You said: **hello there**"),
        ]
        assert app.screen.query_one(ConversationList).open_id == conversation.id


async def test_escape_stops_the_reply_and_keeps_the_part_written():
    async with running(ScriptedFactory(hold=True)) as (app, pilot, factory):
        screen = app.screen
        screen.query_one(ChatInput).value = "tell me a long story"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.query_one(AssistantMessage).text == "You")
        assert screen.streaming
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.streaming)
        reply = screen.query_one(AssistantMessage)
        assert "stopped" in reply.query_one(".note").visual.plain
        store = factory.assistant.store
        conversation = store.list_conversations(factory.assistant.profile.id)[0]
        assert store.messages(conversation.id)[-1].content == "You"


async def test_input_history_walks_back_and_forth():
    async with running() as (app, pilot, _):
        await send(pilot, "first")
        await send(pilot, "second")
        chat_input = app.screen.query_one(ChatInput)
        chat_input.value = "draft"
        await pilot.press("up")
        assert chat_input.value == "second"
        await pilot.press("up", "up")
        assert chat_input.value == "first"
        await pilot.press("down", "down")
        assert chat_input.value == "draft"


def test_input_history_skips_blanks_and_repeats_and_is_bounded():
    history = InputHistory(limit=3)
    for text in ["a", "a", "  ", "b", "c", "d"]:
        history.push(text)
    assert history.entries == ["b", "c", "d"]
    assert history.previous("") == "d"
    assert history.following() == ""
    with pytest.raises(ValueError, match="limit"):
        InputHistory(limit=0)


async def test_long_conversation_opens_at_the_end_with_bounded_widgets():
    async with running(size=(100, 30)) as (app, pilot, factory):
        store, profile = factory.assistant.store, factory.assistant.profile
        conversation = store.create_conversation(profile.id, "long one")
        total = MAX_RENDERED + 150
        with store.transaction():  # one fsync, not one per message
            for i in range(total):
                store.add_message(conversation.id, "user" if i % 2 == 0 else "assistant", f"m{i}")
        await app.screen.open_conversation(conversation.id)
        await pilot.pause(0.2)
        messages = app.screen.query_one(MessageList)
        assert (
            len(messages.query(UserMessage)) + len(messages.query(AssistantMessage)) == MAX_RENDERED
        )
        assert messages.query_one("SystemNote").visual.plain.startswith("150 earlier messages")
        await wait_for(pilot, lambda: messages.scroll_y == messages.max_scroll_y > 0)
        assert f"m{total - 1}" in shown_text(app)


@pytest.mark.parametrize("size", [(80, 24), (140, 40)])
async def test_layout_fits(size):
    async with running(size=size) as (app, pilot, _):
        screen = app.screen
        for selector in ("#topbar", "#sidebar", "#messages", "#input"):
            region = screen.query_one(selector).region
            assert region.width > 0 and region.right <= size[0] and region.bottom <= size[1]
        panel, sidebar = screen.query_one(MemoryPanel), screen.query_one("#sidebar")
        wide = size[0] >= 110
        assert (sidebar.display, panel.display) == (True, wide)
        await pilot.press("alt+m")
        # Narrow: the panel replaces the chat list, so the chat keeps a readable width.
        assert (sidebar.display, panel.display) == ((True, False) if wide else (False, True))
        await pilot.press("alt+c")
        assert (sidebar.display, panel.display) == ((False, False) if wide else (True, False))


# -- conversations -------------------------------------------------------------------------------


async def test_new_switch_rename_delete_conversations():
    async with running(size=(100, 30)) as (app, pilot, factory):
        store, profile = factory.assistant.store, factory.assistant.profile
        await send(pilot, "about cats")
        await pilot.press("ctrl+n")
        await send(pilot, "about dogs")
        cats, dogs = sorted(store.list_conversations(profile.id), key=lambda c: c.id)
        assert app.screen.conversation_id == dogs.id

        app.screen.query_one(ConversationList).focus()
        options = app.screen.query_one(ConversationList)
        options.highlighted = options.get_option_index(str(cats.id))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen.conversation_id == cats.id)
        assert "about cats" in shown_text(app)

        await pilot.press("f2")
        assert isinstance(app.screen, TextPrompt)
        app.screen.query_one("#prompt-input").value = "Cats [b]!"
        await pilot.press("enter")
        await pilot.pause()
        assert store.get_conversation(cats.id).title == "Cats [b]!"
        assert "Cats [b]!" in shown_text(app)

        await pilot.press("f8")
        assert isinstance(app.screen, ConfirmDialog)
        assert "2 messages" in shown_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.screen.conversation_id is None)
        assert [c.id for c in store.list_conversations(profile.id)] == [dogs.id]


async def test_temporary_chat_is_marked_not_stored_not_learned():
    async with running(ScriptedFactory(memory=True), size=(120, 30)) as (app, pilot, factory):
        await pilot.press("ctrl+t")
        assert app.screen.query_one("#temporary-banner").display
        assert "TEMPORARY" in shown_text(app)
        await send(pilot, "a secret")
        assert factory.assistant.store.list_conversations(factory.assistant.profile.id) == []
        assert factory.engine.calls[-1]["prefix"] is None  # not shaped by memory
        assert factory.assistant.memory.turns_seen == 0  # not learned
        await pilot.press("ctrl+t")
        assert not app.screen.query_one("#temporary-banner").display


async def test_start_temporary_from_the_command_line():
    async with running(temporary=True) as (app, _pilot, _factory):
        assert app.screen.temporary and "TEMPORARY" in shown_text(app)


# -- memory --------------------------------------------------------------------------------------


async def test_memory_panel_without_runtime_says_so_and_switch_is_stored():
    async with running(size=(120, 30)) as (app, pilot, factory):
        assert "memory: not available yet" in shown_text(app)
        await pilot.press("f5")
        await pilot.pause()
        assert any("not available yet" in n.message for n in app._notifications)
        await pilot.press("f6")
        assert not factory.assistant.store.get_profile_by_id(
            factory.assistant.profile.id
        ).memory_enabled
        assert "memory is off" in shown_text(app)


async def test_refit_progress_shows_while_chatting_goes_on():
    factory = ScriptedFactory(memory=True)
    async with running(factory, size=(120, 36)) as (app, pilot, _):
        memory = factory.assistant.memory
        memory.release.clear()
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.screen.query_one("#refit-box").display)
        assert "refit: fitting 50%" in shown_text(app)
        await send(pilot, "still here?")  # the chat is not blocked by the refit
        assert app.screen.query_one(AssistantMessage).text.startswith("You said")
        memory.release.set()
        await wait_for(pilot, lambda: not app.screen.query_one("#refit-box").display)
        await pilot.press("f5")
        await wait_for(pilot, lambda: len(memory._versions()) == 2)
        await wait_for(pilot, lambda: app.screen.query_one(Sparkline).display)
        assert list(app.screen.query_one(Sparkline).data) == [0.5, 1 / 3]
        assert "version  #2 (2 saved)" in shown_text(app)


async def inspect_a_reply(app, pilot, memory, *, refits: int) -> Heatmap:
    """Refit the scripted memory, send a message, open the inspector on the reply (F4)."""
    for _ in range(refits):
        memory.refit_now()
        await wait_for(pilot, lambda: not memory.state.running)
    await send(pilot, "what do you know?")
    await pilot.press("f4")
    assert isinstance(app.screen, InspectorScreen)
    return app.screen.query_one(Heatmap)


async def test_inspector_heatmap_slots_rollback_and_forget():
    factory = ScriptedFactory(memory=True)
    async with running(factory, size=(120, 40)) as (app, pilot, _):
        memory, store = factory.assistant.memory, factory.assistant.store
        heatmap = await inspect_a_reply(app, pilot, memory, refits=2)
        assert len(heatmap.matrix()) == memory.m and len(heatmap.matrix()[0]) == memory.n
        text = shown_text(app)
        assert (
            "q3" in text and "[@click=app.quit]x[/]" in text and "[link=file:///etc/passwd]" in text
        )
        await pilot.press("h")
        assert heatmap.head == 0

        await pilot.press("r")
        assert isinstance(app.screen, ChoiceDialog)
        first = store.list_memory_versions(factory.assistant.profile.id)[0].id
        options = app.screen.query_one(OptionList)
        options.highlighted = options.get_option_index(str(first))
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: (
                store.get_profile_by_id(factory.assistant.profile.id).current_version_id == first
            ),
        )

        conversation_id = app.screen.conversation.id
        await pilot.press("f")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: memory.forgotten == [conversation_id])
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        await wait_for(pilot, lambda: "not learned" in shown_text(app))  # marked in the sidebar


async def test_inspector_shows_a_routed_bank_by_group():
    factory = ScriptedFactory(memory=True, memory_groups=4)
    async with running(factory, size=(120, 40)) as (app, pilot, _):
        memory = factory.assistant.memory
        heatmap = await inspect_a_reply(app, pilot, memory, refits=1)
        # One column per group (8 rows summed into 4), the table listed by group.
        assert len(heatmap.matrix()) == memory.m and len(heatmap.matrix()[0]) == 4
        assert sum(heatmap.matrix()[0]) == pytest.approx(1.0)
        table = app.screen.query_one(DataTable)
        assert str(table.ordered_columns[0].label) == "group" and table.row_count == 4


async def test_inspector_without_memory_explains():
    async with running() as (app, pilot, _):
        await send(pilot, "hi")
        await pilot.press("f4")
        assert "No attention recorded" in shown_text(app)
        await pilot.press("r")
        assert isinstance(app.screen, InspectorScreen)  # no dialog: nothing to roll back to


# -- commands, help, import, export, wipe, profiles, models --------------------------------------


def test_every_command_has_an_action():
    for command in COMMANDS:
        target = LpmApp if command.action.startswith("app.") else ChatScreen
        name = command.action.removeprefix("app.").split("(")[0]
        assert hasattr(target, f"action_{name}"), command


async def test_command_palette_runs_commands():
    async with running() as (app, pilot, _):
        await send(pilot, "hi")
        await pilot.press("ctrl+p")
        await pilot.press(*"new chat")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.conversation_id is None
        )


async def test_help_lists_every_key():
    async with running(size=(100, 50)) as (app, pilot, _):
        await pilot.press("alt+h")
        assert isinstance(app.screen, HelpScreen)
        text = shown_text(app)
        for command in COMMANDS:
            assert command.title in text
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)


SHAREGPT = (
    '[{"conversations": [{"from": "human", "value": "I keep bees [@click=app.quit]x[/]"},'
    ' {"from": "gpt", "value": "Lovely!"}]}]'
)


async def test_import_previews_then_imports_once(tmp_path):
    log = tmp_path / "sharegpt.json"
    log.write_text(SHAREGPT)
    async with running(size=(100, 30)) as (app, pilot, factory):
        store, profile = factory.assistant.store, factory.assistant.profile
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, ImportScreen)
        app.screen.query_one("#import-path").value = str(tmp_path / "missing.json")
        await pilot.press("enter")
        assert "No such file" in shown_text(app) and app.screen.query_one("#confirm").disabled

        app.screen.query_one("#import-path").value = str(log)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "would add 1 conversations, 2 messages" in shown_text(app))
        assert store.list_conversations(profile.id) == []  # the preview wrote nothing
        await pilot.click("#confirm")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        [conversation] = store.list_conversations(profile.id)
        assert conversation.message_count == 2
        # The import's notice is posted from its worker, possibly after the screen switched back.
        await wait_for(
            pilot, lambda: any("added 1 conversations" in n.message for n in app._notifications)
        )
        await wait_for(pilot, lambda: "imported" in shown_text(app))  # listed in the sidebar
        await app.screen.open_conversation(conversation.id)
        assert "I keep bees [@click=app.quit]x[/]" in shown_text(app)  # shown literally

        await pilot.press("ctrl+o")  # the same file again: nothing new
        app.screen.query_one("#import-path").value = str(log)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Nothing new to add." in shown_text(app))
        assert app.screen.query_one("#confirm").disabled


async def test_export_memory_writes_a_private_bundle(tmp_path):
    factory = ScriptedFactory(memory=True)
    async with running(factory, size=(100, 30)) as (app, pilot, _):
        await send(pilot, "remember me")
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, TextPrompt)
        target = tmp_path / "me.lpm"
        app.screen.query_one("#prompt-input").value = str(target)
        await pilot.press("enter")
        assert isinstance(app.screen, ChoiceDialog)
        await pilot.press("enter")  # memory only
        # No memory version yet: refused with the library's own one-line reason.
        await wait_for(pilot, lambda: any("no memory yet" in n.message for n in app._notifications))
        assert not target.exists()

        await pilot.press("ctrl+s")  # with the chats it has something to write
        app.screen.query_one("#prompt-input").value = str(target)
        await pilot.press("enter", "down", "enter")
        await wait_for(pilot, lambda: target.exists())
        assert target.stat().st_mode & 0o777 == 0o600


async def test_wipe_confirmation_names_what_is_deleted():
    async with running(size=(100, 30)) as (app, pilot, factory):
        await send(pilot, "keep or wipe")
        await pilot.press("alt+w")
        assert isinstance(app.screen, ChoiceDialog)
        app.screen.query_one(OptionList).highlighted = 1  # everything of this profile
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmDialog)
        assert "Profile default: 1 conversations, 2 messages, 0 memory versions" in shown_text(app)
        await pilot.press("n")
        assert len(factory.assistant.store.list_conversations(factory.assistant.profile.id)) == 1


async def test_wipe_memory_keeps_chats():
    factory = ScriptedFactory(memory=True)
    async with running(factory, size=(100, 30)) as (app, pilot, _):
        store, profile = factory.assistant.store, factory.assistant.profile
        await send(pilot, "a chat to keep")
        factory.assistant.memory.refit_now()
        await wait_for(pilot, lambda: len(store.list_memory_versions(profile.id)) == 1)
        await pilot.press("alt+w")
        await pilot.press("enter")  # "Forget the memory (keep chats)"
        assert "Profile default: 1 memory versions" in shown_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: store.list_memory_versions(profile.id) == [])
        assert len(store.list_conversations(profile.id)) == 1


async def test_switch_profile_and_model():
    async with running(size=(100, 30)) as (app, pilot, factory):
        await send(pilot, "as default")
        await pilot.press("ctrl+g")
        app.screen.query_one(OptionList).highlighted = 1  # "a new profile…"
        await pilot.press("enter")
        app.screen.query_one("#prompt-input").value = "work"
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, ChatScreen) and app.screen.assistant.profile.name == "work"
            ),
        )
        assert "as default" not in shown_text(app)
        await pilot.press("ctrl+l")
        assert isinstance(app.screen, ChoiceDialog)  # registry names, then "a local directory…"
        assert "smollm2-135m" in shown_text(app)
        options = app.screen.query_one(OptionList)
        options.highlighted = options.option_count - 1
        await pilot.press("enter")
        assert isinstance(app.screen, TextPrompt)
        app.screen.query_one("#prompt-input").value = "other-model"
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: (
                len(factory.made) == 2
                and isinstance(app.screen, ChatScreen)
                and app.screen.assistant is factory.made[1]
            ),
        )
        assert factory.models[-1] == "other-model" and factory.made[0].closed
        assert factory.made[1].profile.name == "work"


async def test_failed_model_switch_goes_back_to_the_chat():
    async with running(size=(100, 30)) as (app, pilot, factory):
        first = factory.assistant
        factory.fail = ModelNotAvailable("no-such-model: not in the registry and not a directory")
        app.load_assistant("no-such-model")
        await wait_for(pilot, lambda: "not in the registry" in shown_text(app))
        await pilot.press("escape")
        await wait_for(pilot, lambda: chat_ready(app))
        assert app.assistant is first and not first.closed and app.model is None
        await send(pilot, "still works")


# -- untrusted text is shown literally and never acts (R14) -------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_untrusted_text_is_shown_literally_and_never_acts(hostile):
    async with running(size=(120, 30)) as (app, pilot, factory):
        opened: list[str] = []
        app.open_url = lambda url, **kw: opened.append(url)  # would open a browser/file
        await send(pilot, hostile)
        text = shown_text(app)
        assert hostile in text  # the user message, literally
        if "](" not in hostile:
            assert f"You said: {hostile}" in text  # the reply (Markdown) too
        assert app.is_running
        conversation = factory.assistant.store.list_conversations(factory.assistant.profile.id)[0]
        assert conversation.title == hostile  # and the sidebar title is the same literal text
        for widget in app.screen.query("AssistantMessage, UserMessage, ConversationList"):
            await pilot.click(widget, offset=(4, 1))
            await pilot.click(widget, offset=(14, 1))
        body = app.screen.query_one(AssistantMessage).body
        body.post_message(Markdown.LinkClicked(body, "file:///etc/passwd"))  # a click on a link
        await pilot.pause()
        assert app.is_running and opened == []
        assert any(n.message.endswith("points to: file:///etc/passwd") for n in app._notifications)


# -- end to end: the real engine on a tiny Qwen3 -------------------------------------------------


@pytest.mark.slow
async def test_end_to_end_with_tiny_qwen3(tiny_qwen3_dir):
    """``open_assistant`` + ``ChatEngine`` for real: load screen, stream, Esc, stored turn."""
    app = LpmApp(model=str(tiny_qwen3_dir), quantize="none", max_new_tokens=24)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: chat_ready(app), timeout=120)
        screen = app.screen
        await send(pilot, "Hello! What is the capital of France?", timeout=60)
        reply = screen.query_one(AssistantMessage)
        assert reply.text.strip()  # a random tiny model, but a real streamed reply
        assert "tokens" in reply.query_one(".note").visual.plain  # the engine's own stats

        app.max_new_tokens = 2000  # long enough that only Escape can end it in time
        screen.query_one(ChatInput).value = "and of Italy?"
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: (
                len(screen.query(AssistantMessage)) == 2 and screen.query(AssistantMessage)[-1].text
            ),
        )
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.turns_done == 2, timeout=20)
        assert "stopped" in screen.query(AssistantMessage)[-1].query_one(".note").visual.plain
        store = app.assistant.store
        [conversation] = store.list_conversations(app.assistant.profile.id)
        roles = [m.role for m in store.messages(conversation.id)]
        assert roles == ["user", "assistant", "user", "assistant"]


@pytest.mark.slow
async def test_end_to_end_with_the_real_memory_runtime(tiny_qwen3_dir):
    """The adapter against ``MemoryRuntime`` itself (``open_assistant`` attaches it): refit
    progress, a version, the inspector's heatmap and slots."""
    app = LpmApp(model=str(tiny_qwen3_dir), quantize="none", max_new_tokens=16)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: chat_ready(app), timeout=120)
        for text in ["I live in Lyon.", "My sister is a nurse.", "I like green tea."]:
            await send(pilot, text, timeout=60)
        await pilot.press("f5")
        runtime = app.assistant.memory
        await wait_for(pilot, lambda: runtime.state.running or runtime.state.last_status, 30)
        assert runtime.wait_idle(300)
        await wait_for(pilot, lambda: not app.screen.query_one("#refit-box").display, 30)
        status = app.screen.adapter.status()
        assert status.available and status.version_count == len(
            app.assistant.store.list_memory_versions(app.assistant.profile.id)
        )
        if status.version_id is None:
            pytest.skip(f"the refit committed no version ({runtime.state.last_status})")
        await send(pilot, "What do you know about me?", timeout=60)
        await pilot.press("f4")
        assert isinstance(app.screen, InspectorScreen)
        heatmap = app.screen.query_one(Heatmap)
        assert heatmap.matrix(), "the reply was shaped by memory, so attention is recorded"
        slots = app.screen.adapter.slots(app.screen.attention)
        assert slots and all(s.reply_usage is not None for s in slots)
        await pilot.press("escape")

        # Another profile keeps the loaded model and opens that profile's own memory.
        backbone, old_runtime = app.assistant.backbone, app.assistant.memory
        app.assistant.store.create_profile("work")
        await app._use_profile("work")
        await wait_for(
            pilot,
            lambda: chat_ready(app) and app.screen.assistant.profile.name == "work",
            timeout=60,
        )
        assert app.assistant.backbone is backbone and app.assistant.memory is not old_runtime
        assert app.assistant.memory.profile.name == "work"
        assert app.screen.adapter.status().version_count == 0
