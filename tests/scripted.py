"""A scripted model (and a scripted memory runtime) for fast UI tests.

Only the expensive part is faked: the engine streams a scripted reply instead of running a
network, and ``ScriptedMemory`` stands in for ``lpm_local.memory.runtime.MemoryRuntime`` so a UI
test needs no refit on a real model (tests/test_tui.py has one end-to-end test with the real
runtime). ``ScriptedMemory`` implements what the TUI asks of the runtime, the
``tui.memory_adapter.MemoryControls`` protocol, with the library's own types (``RuntimeState``,
``RefitEvent``, ``RefitOutcome``, ``SlotDescription``), plus the chat's ``prefix`` and
``after_turn``. Everything else is real: the SQLite ``Store``, ``ChatSession`` (storing,
titles, temporary sessions) and the tokenizer's chat template when one is given.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import torch

from lpm_local.memory.inspection import SlotDescription
from lpm_local.memory.refit import RefitOutcome
from lpm_local.memory.runtime import RefitEvent, RuntimeState
from lpm_local.settings import Settings
from lpm_local.storage.records import Profile
from lpm_local.storage.store import Store

Reply = Callable[[str], str]


@functools.cache
def chat_tokenizer() -> Any:
    """A real ChatML tokenizer (the tiny Qwen3's), built once: ``ChatSession`` windows the
    conversation with it, exactly as with a real model."""
    from tiny_qwen3 import build_tokenizer

    return build_tokenizer()


def echo(text: str) -> str:
    return f"You said: **{text}**"


@dataclass
class ScriptedEngine:
    """``ChatEngine``'s streaming contract, with a scripted reply split into word chunks.

    ``hold`` makes the stream yield its first chunk and then wait for ``cancel`` (to test
    Escape); ``delay`` spaces the chunks out. ``calls`` records what each turn was given.
    """

    backbone: Any
    reply: Reply = echo
    delay: float = 0.0
    hold: bool = False
    calls: list[dict] = field(default_factory=list)

    def stream(
        self,
        turns: list,
        *,
        prefix: Any = None,
        cancel: threading.Event | None = None,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 0.95,
    ) -> Iterator[str]:
        self.calls.append({"turns": list(turns), "prefix": prefix})
        text = self.reply(turns[-1].content)
        words = text.split(" ")
        for i, word in enumerate(words):
            if cancel is not None and cancel.is_set():
                return
            yield word if i == 0 else " " + word
            if self.hold and i == 0:
                while cancel is not None and not cancel.wait(0.01):
                    pass
                return
            if self.delay:
                time.sleep(self.delay)


class ScriptedMemory:
    """A memory runtime with N slots and M soft tokens; refits write real store versions."""

    def __init__(
        self,
        store: Store,
        profile: Profile,
        *,
        slots: int = 8,
        queries: int = 4,
        heads: int = 2,
        hidden: int = 16,
        groups: int = 0,
    ) -> None:
        self.store, self.profile = store, profile
        self.groups = groups  # > 0: slot_info describes a routed bank, ``slots / groups`` rows each
        self.n, self.m, self.heads, self.hidden = slots, queries, heads, hidden
        self._state = RuntimeState()
        self.listeners: list[Callable[[RefitEvent], None]] = []
        self.turns_seen = 0
        self.release = threading.Event()  # tests hold a refit mid-way until they set this
        self.release.set()
        self.forgotten: list[int] = []

    @property
    def state(self) -> RuntimeState:
        return self._state

    def _set(self, **changes: Any) -> None:
        self._state = replace(self._state, **changes)

    def prefix(self, user_text: str) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(len(user_text))
        logits = torch.randn(self.heads, self.m, self.n, generator=generator)
        logits[:, :, 0] += 3.0  # slot 0 clearly dominates, so tests can find it
        return torch.zeros(self.m, self.hidden), logits.softmax(-1)

    def after_turn(self, profile_id: int, *, reply_message_id: int | None = None) -> None:
        self.turns_seen += 1

    def add_listener(self, callback: Callable[[RefitEvent], None]) -> None:
        self.listeners.append(callback)

    def remove_listener(self, callback: Callable[[RefitEvent], None]) -> None:
        self.listeners.remove(callback)

    def _emit(self, event: RefitEvent) -> None:
        for callback in self.listeners:
            callback(event)

    def refit_now(self, reason: str = "on demand") -> None:
        self._set(running=True, stage="fitting", fraction=0.0)
        threading.Thread(target=self._refit, daemon=True).start()

    def _refit(self) -> None:
        self._emit(RefitEvent("fitting", 0.5, False))
        self._set(fraction=0.5)
        self.release.wait(10)
        version = self._write_version(heldout=1.0 / (2 + len(self._versions())))
        stored = self.store.get_memory_version(version, with_tensors=False)
        outcome = RefitOutcome(
            refit_id=None,
            status="committed",
            base_version_id=None,
            new_version_id=version,
            heldout_after=stored.heldout_loss,
        )
        self._set(
            running=False,
            stage="",
            fraction=None,
            current_version_id=version,
            last_refit_at=stored.created_at,
            last_status="committed",
            last_summary=outcome.summary(),
        )
        self._emit(RefitEvent("committed", 1.0, True, outcome))

    def _versions(self) -> list:
        return self.store.list_memory_versions(self.profile.id)

    def _write_version(self, heldout: float) -> int:
        from safetensors.torch import save

        blob = save({"slots": torch.zeros(self.n, self.hidden)})
        current = self.store.get_profile_by_id(self.profile.id).current_version_id
        version = self.store.add_memory_version(
            self.profile.id,
            tensors=blob,
            backbone="scripted",
            projector_sha256=None,
            config_json=None,
            train_loss=heldout + 0.1,
            heldout_loss=heldout,
            parent_id=current,
            reason="scripted refit",
        )
        return version.id

    def cancel_refit(self) -> None:
        self.release.set()

    def rollback(self, version_id: int) -> None:
        self.store.set_current_version(self.profile.id, version_id)
        self._set(current_version_id=version_id)

    def forget(self, conversation_id: int) -> None:
        """Like the runtime: the chat stays, excluded from memory."""
        self.forgotten.append(conversation_id)
        self.store.set_conversation_excluded(conversation_id, True)

    @property
    def enabled(self) -> bool:
        return self.store.get_profile_by_id(self.profile.id).memory_enabled

    def reload(self) -> None:
        profile = self.store.get_profile_by_id(self.profile.id)
        self._set(current_version_id=profile.current_version_id)

    def slot_info(self, attention: torch.Tensor | None = None) -> list[SlotDescription]:
        """Hostile labels and sources on purpose: the inspector must show them literally."""
        if self.groups:
            size = self.n // self.groups
            return [
                SlotDescription(
                    index=g,
                    label=f"[b]group {g}[/b]",
                    usage=1 / (g + 1),
                    usage_history=[1 / (g + 1)],
                    kind="group",
                    rows=tuple(range(g * size, (g + 1) * size)),
                )
                for g in range(self.groups)
            ]
        return [
            SlotDescription(
                index=i,
                label=f"[b]slot {i}[/b] [@click=app.quit]x[/]",
                usage=1 / (i + 1),
                usage_history=[0.1, 1 / (i + 1)],
                sources=["#1 [link=file:///etc/passwd]trip[/link]"],
            )
            for i in range(self.n)
        ]

    def close(self) -> None:
        self.release.set()


@dataclass
class ScriptedAssistant:
    """``lpm_local.chat.assistant.Assistant``'s shape: a real store, a scripted engine."""

    store: Store
    backbone: Any
    engine: ScriptedEngine
    profile: Profile
    memory: ScriptedMemory | None = None
    closed: bool = False
    settings: Settings = field(default_factory=Settings)

    def new_session(
        self,
        *,
        temporary: bool = False,
        conversation_id: int | None = None,
        system_prompt: str | None = None,
    ):
        from lpm_local.chat.session import ChatSession

        enabled = self.store.get_profile(self.profile.name).memory_enabled
        return ChatSession(
            engine=self.engine,
            store=self.store,
            profile=self.profile,
            conversation_id=conversation_id,
            memory=self.memory if enabled else None,
            temporary=temporary,
            system_prompt=self.settings.system_prompt if system_prompt is None else system_prompt,
        )

    def reply_options(self, max_new_tokens: int | None = None) -> dict:
        from lpm_local.chat.assistant import Assistant

        return Assistant.reply_options(self, max_new_tokens)

    def close(self) -> None:
        if self.memory is not None:
            self.memory.close()
        self.store.close()
        self.closed = True


@dataclass
class ScriptedFactory:
    """An ``assistant_factory`` for ``LpmApp``: opens the real store, scripts the rest.

    ``memory=True`` attaches a ``ScriptedMemory``; ``gate`` (an Event) holds the load, reporting
    ``stage``, so tests can look at the loading screen; ``fail`` raises instead of loading.
    ``made`` keeps every assistant built, and ``models`` every model name asked for.
    """

    memory: bool = False
    memory_groups: int = 0  # a routed bank of this many groups (``ScriptedMemory(groups=)``)
    reply: Reply = echo
    hold: bool = False
    delay: float = 0.0
    tokenizer: Any = None
    gate: threading.Event | None = None
    stage: tuple[str, float | None] = ("loading tokenizer", None)  # reported while gated
    fail: BaseException | None = None
    made: list[ScriptedAssistant] = field(default_factory=list)
    models: list[str | None] = field(default_factory=list)

    def __call__(
        self, model: str | None, quantize: str | None, progress: Callable[[str, float | None], None]
    ) -> ScriptedAssistant:
        self.models.append(model)
        progress(*self.stage)
        if self.gate is not None:
            while not self.gate.wait(0.05):
                progress(*self.stage)  # raises once the app quits, as a real load would
        if self.fail is not None:
            raise self.fail
        progress("loading weights", 0.5)
        store = Store.open()
        profile = store.active_profile()
        backbone = SimpleNamespace(
            name=model or "scripted", tokenizer=self.tokenizer or chat_tokenizer()
        )
        engine = ScriptedEngine(backbone, reply=self.reply, hold=self.hold, delay=self.delay)
        assistant = ScriptedAssistant(
            store=store,
            backbone=backbone,
            engine=engine,
            profile=profile,
            memory=(
                ScriptedMemory(store, profile, groups=self.memory_groups) if self.memory else None
            ),
        )
        self.made.append(assistant)
        return assistant

    @property
    def assistant(self) -> ScriptedAssistant:
        return self.made[-1]

    @property
    def engine(self) -> ScriptedEngine:
        return self.made[-1].engine
