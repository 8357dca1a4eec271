"""``LpmApp``: the Textual app behind ``lpm chat``.

Start-up: the loading screen shows at once while a thread worker opens the assistant (store
first, then the model, converting it on first run); progress arrives as ``LoadProgress``
messages. The assistant comes from ``assistant_factory(model, quantize, progress)``, which is
``open_assistant`` in real use and a scripted assistant in tests, so UI tests never load a
model. Switching model reloads through the same path; switching profile keeps the model.

Settings: the theme and the key bindings come from the settings file. A theme picked in the
app (Ctrl+P, "Change theme") is saved there; a change of the file while the app runs (`lpm
config set theme nord` in another terminal) is seen within ``SETTINGS_POLL_S`` and applied,
key bindings included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding

from lpm_local import locations
from lpm_local.errors import LpmError
from lpm_local.settings import Settings, load_settings, save_setting
from tui.commands import KEY_DEFAULTS, keymap_from
from tui.messages import AssistantReady, LoadFailed, LoadProgress
from tui.screens.chat import ChatScreen
from tui.screens.dialogs import ChoiceDialog, TextPrompt
from tui.screens.help import HelpScreen
from tui.screens.loading import LoadingScreen

Progress = Callable[[str, float | None], None]
REPLY_STOP_TIMEOUT_S = 10.0  # at quit, how long a stopping reply may take to store itself
# How often the settings file is checked for a change: a stat() every 2 s costs nothing, and a
# theme set from another terminal shows up before the user looks back.
SETTINGS_POLL_S = 2.0
__all__ = ["KEY_DEFAULTS", "LpmApp", "run_app"]  # KEY_DEFAULTS: read by `lpm config`
AssistantFactory = Callable[[str | None, str | None, Progress], Any]


class LoadAborted(Exception):
    """Raised from the progress callback when the app quits during a load, to stop the load."""


def default_factory(model: str | None, quantize: str | None, progress: Progress) -> Any:
    from lpm_local.chat.assistant import open_assistant

    return open_assistant(model, quantize=quantize, progress=progress)


class LpmApp(App[None]):
    """The terminal UI; ``assistant_factory`` is injectable so tests skip model loading."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "lpm-local"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True, id="quit")]

    def __init__(
        self,
        *,
        model: str | None = None,
        quantize: str | None = None,
        temporary: bool = False,
        max_new_tokens: int | None = None,
        assistant_factory: AssistantFactory = default_factory,
        settings: Settings | None = None,
    ) -> None:
        super().__init__()
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens  # None: the max_reply_tokens setting
        self.settings = settings if settings is not None else Settings()
        self.keymap: dict[str, str] = {}
        self._applied_theme: str | None = None  # the theme last read from (or saved to) the file
        self._settings_stamp = _stamp()
        self.model = model
        self.quantize = quantize
        self.start_temporary = temporary
        self.assistant_factory = assistant_factory
        self.assistant: Any | None = None
        self._quitting = threading.Event()
        self._chat: ChatScreen | None = None  # the current chat screen, even while unmounting
        self._requested: str | None = model  # the model being loaded

    def on_mount(self) -> None:
        self.apply_settings(self.settings)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.set_interval(SETTINGS_POLL_S, self._poll_settings)
        self.load_assistant(self.model)

    # -- settings --------------------------------------------------------------------------------

    def apply_settings(self, settings: Settings) -> None:
        """Theme and key bindings from ``settings``; problems are said once, as a toast."""
        self.settings = settings
        keymap, problems = keymap_from(settings.keys)
        self.keymap = keymap
        self.set_keymap(keymap)
        if settings.theme in self.available_themes:
            self._applied_theme = settings.theme
            self.theme = settings.theme
        else:
            problems.append(f"theme {settings.theme!r}: not a theme here; keeping {self.theme}")
        for problem in problems:
            self.notify(problem, title="Settings", severity="warning", markup=False)

    def _theme_changed(self, theme: Any) -> None:
        """A theme chosen in the app is remembered; one applied from the file is not re-saved."""
        name = getattr(theme, "name", None)
        if not name or name == self._applied_theme:
            return
        self._applied_theme = name
        try:
            save_setting("theme", name)
        except LpmError as error:
            self.notify(str(error), title="Settings", severity="warning", markup=False)
        self._settings_stamp = _stamp()

    def _poll_settings(self) -> None:
        stamp = _stamp()
        if stamp == self._settings_stamp:
            return
        self._settings_stamp = stamp
        try:
            settings = load_settings()
        except LpmError as error:  # a half-edited file: say so, keep what runs
            self.notify(str(error), title="Settings", severity="warning", markup=False)
            return
        self.apply_settings(settings)

    # -- loading ---------------------------------------------------------------------------------

    def load_assistant(self, model: str | None) -> None:
        """Show the loading screen and load ``model``; ``self.model`` changes once it loaded."""
        self._requested = model
        self.push_screen(LoadingScreen(model or self.settings.model or None))
        self._load(model)

    @work(thread=True, exclusive=True, group="load")
    def _load(self, model: str | None) -> None:
        """Open the assistant off the UI thread; the result comes back as a message."""

        def progress(stage: str, fraction: float | None) -> None:
            if self._quitting.is_set():
                raise LoadAborted()  # unwinds the loader instead of finishing a load nobody sees
            self.post_message(LoadProgress(stage, fraction))

        try:
            assistant = self.assistant_factory(model, self.quantize, progress)
        except LoadAborted:
            return
        except LpmError as error:
            self.post_message(LoadFailed(str(error)))
            return
        except Exception as error:  # a bug, but the user must see it rather than a frozen screen
            self.post_message(LoadFailed(f"{type(error).__name__}: {error}"))
            return
        if self._quitting.is_set():
            assistant.close()
            return
        self.post_message(AssistantReady(assistant))

    def on_load_progress(self, event: LoadProgress) -> None:
        if isinstance(self.screen, LoadingScreen):
            self.screen.show_progress(event.stage, event.fraction)

    def on_load_failed(self, event: LoadFailed) -> None:
        if isinstance(self.screen, LoadingScreen):
            self.screen.show_error(event.error)

    async def on_assistant_ready(self, event: AssistantReady) -> None:
        previous, self.assistant = self.assistant, event.assistant
        self.model = self._requested
        temporary = self.start_temporary
        draft = ""
        if isinstance(self.screen, LoadingScreen):
            draft = self.screen.draft_text()
            self.pop_screen()
        chat = self._chat_screen()
        if chat is not None:
            temporary = chat.temporary
        self._chat = ChatScreen(event.assistant, temporary=temporary, draft=draft)
        if chat is not None:
            await self.switch_screen_chat(self._chat)
        else:
            await self.push_screen(self._chat)
        if previous is not None and previous is not event.assistant:
            previous.close()
        notice = getattr(event.assistant, "notice", None)  # scripted test assistants have none
        if notice:
            self.notify(notice, markup=False, timeout=8)

    async def switch_screen_chat(self, screen: ChatScreen) -> None:
        while len(self.screen_stack) > 2:  # dialogs above the chat screen
            self.pop_screen()
        await self.switch_screen(screen)

    def _chat_screen(self) -> ChatScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, ChatScreen):
                return screen
        return None

    # -- app-wide actions ------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_switch_model(self) -> None:
        chat = self._chat_screen()
        if chat is not None and chat.streaming:
            self.notify("A reply is being written: Esc stops it first.", markup=False)
            return
        choices = _model_choices()
        current = getattr(getattr(self.assistant, "backbone", None), "name", None)

        def chosen(name: str | None) -> None:
            if name == "__path__":
                self.push_screen(
                    TextPrompt("Model directory", placeholder="/path/to/hf-model"), chosen
                )
            elif name and name != current:
                self.load_assistant(name)

        if choices:
            self.push_screen(
                ChoiceDialog(
                    "Switch model", choices + [("__path__", "a local directory…")], current=current
                ),
                chosen,
            )
        else:
            self.push_screen(
                TextPrompt(
                    "Switch model", placeholder="registry name or local path", value=current or ""
                ),
                chosen,
            )

    def action_switch_profile(self) -> None:
        chat = self._chat_screen()
        if self.assistant is None or chat is None or chat.streaming:
            return
        store = self.assistant.store
        profiles = [(p.name, p.name) for p in store.list_profiles()]

        async def chosen(name: str | None) -> None:
            if name == "__new__":
                self.push_screen(
                    TextPrompt("New profile name", hint="letters, digits, - and _"), created
                )
            elif name and name != self.assistant.profile.name:
                await self._use_profile(name)

        async def created(name: str | None) -> None:
            if name:
                try:
                    store.create_profile(name)
                except LpmError as error:
                    self.notify(str(error), severity="error", markup=False)
                    return
                await self._use_profile(name)

        self.push_screen(
            ChoiceDialog(
                "Switch profile",
                profiles + [("__new__", "a new profile…")],
                current=self.assistant.profile.name,
            ),
            chosen,
        )

    async def _use_profile(self, name: str) -> None:
        """Make ``name`` active, keeping the loaded model; its memory runtime is per profile."""
        if self.assistant.memory is not None:
            self.notify(f"Opening the memory of profile {name}…", markup=False)
            self._swap_runtime(self.assistant, name)
            return
        await self._show_profile(self.assistant.store.set_active_profile(name))

    @work(thread=True, exclusive=True, group="load")
    def _swap_runtime(self, assistant: Any, name: str) -> None:
        """Off the UI thread: closing the old runtime joins its refit, and opening the new one
        reads and checks the profile's current memory version."""
        try:
            profile = assistant.use_profile(name)
        except LpmError as error:
            # The chat goes on without memory (use_profile left it None), and says so.
            profile = assistant.store.get_profile(name)
            self.call_from_thread(self.notify, str(error), severity="error", markup=False)
        self.call_from_thread(self._show_profile, profile)

    async def _show_profile(self, profile: Any) -> None:
        self.assistant.profile = profile
        self._chat = ChatScreen(self.assistant, temporary=False)
        await self.switch_screen_chat(self._chat)
        self.notify(f"Profile: {profile.name}", markup=False)

    async def action_quit(self) -> None:
        self._quitting.set()
        chat = self._chat_screen()
        if chat is not None:
            chat.cancel_event.set()
        self.exit()

    def on_unmount(self) -> None:
        self._quitting.set()
        chat = self._chat
        if chat is not None:
            chat.cancel_event.set()
            # The reply thread stores the partial reply after it stops: let it, then close.
            chat.reply_idle.wait(timeout=REPLY_STOP_TIMEOUT_S)
        if self.assistant is not None:
            self.assistant.close()
            self.assistant = None


def _model_choices() -> list[tuple[str, str]]:
    """Registry backbones with a word on whether each would load here (nothing is loaded)."""
    try:
        from lpm_local.backbones.loader import backbone_status
        from lpm_local.backbones.registry import registry
    except ImportError:
        return []
    choices = []
    for name, spec in registry().items():
        try:
            status = backbone_status(spec)
        except Exception:  # noqa: BLE001 - a status we cannot tell must not break the dialog
            status = "status unknown"
        choices.append((name, f"{name}  ({status})"))
    return choices


def _stamp() -> tuple[int, int] | None:
    """(mtime, size) of the settings file, None when there is none: what the poll compares."""
    try:
        info = locations.settings_path().stat()
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size)


def run_app(
    model: str | None,
    quantize: str | None,
    temporary: bool,
    max_new_tokens: int | None = None,
) -> None:
    """Entry point used by ``lpm chat`` (inside its ``InstanceLock``)."""
    LpmApp(
        model=model,
        quantize=quantize,
        temporary=temporary,
        max_new_tokens=max_new_tokens,
        settings=load_settings(),
    ).run()
