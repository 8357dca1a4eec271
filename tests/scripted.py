"""A scripted model (and a scripted memory runtime) for fast UI tests.

Only the expensive, external part is faked: the engine streams a scripted reply instead of
running a network, and ``ScriptedMemory`` stands in for the memory runtime that is not written
yet (it follows the contract in ARCHITECTURE.md: ``prefix``, ``after_turn``, ``state``,
``add_listener``, ``refit_now``, ``cancel_refit``, ``rollback``, ``forget``, ``slot_info``).
Everything else is real: the SQLite ``Store``, ``ChatSession`` (storing, titles, temporary
sessions) and the tokenizer's chat template when one is given.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

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


@dataclass
class RefitEvent:
    stage: str
    fraction: float | None
    done: bool
    result: Any = None
    error: str | None = None


class ScriptedMemory:
    """A memory runtime with N slots and M soft tokens; refits write real store versions."""

    def __init__(
        self,
        store: Any,
        profile: Any,
        *,
        slots: int = 8,
        queries: int = 4,
        heads: int = 2,
        hidden: int = 16,
    ) -> None:
        self.store, self.profile = store, profile
        self.n, self.m, self.heads, self.hidden = slots, queries, heads, hidden
        self.state = SimpleNamespace(
            running=False, stage="", fraction=None, last_refit_at=None, current_version_id=None
        )
        self.listeners: list[Callable[[RefitEvent], None]] = []
        self.turns_seen = 0
        self.release = threading.Event()  # tests hold a refit mid-way until they set this
        self.release.set()
        self.forgotten: list[int] = []

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

    def refit_now(self) -> None:
        self.state.running, self.state.stage, self.state.fraction = True, "fitting", 0.0
        threading.Thread(target=self._refit, daemon=True).start()

    def _refit(self) -> None:
        self._emit(RefitEvent("fitting", 0.5, False))
        self.state.fraction = 0.5
        self.release.wait(10)
        version = self._write_version(heldout=1.0 / (2 + len(self._versions())))
        self.state.running, self.state.stage, self.state.fraction = False, "", None
        self.state.current_version_id = version
        self.state.last_refit_at = self.store.get_memory_version(
            version, with_tensors=False
        ).created_at
        outcome = SimpleNamespace(
            status="committed",
            new_version_id=version,
            heldout_before=None,
            heldout_after=self.store.get_memory_version(version, with_tensors=False).heldout_loss,
            detail="",
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
        self.state.current_version_id = version_id

    def forget(self, conversation_id: int) -> None:
        """Like the runtime: the chat stays, excluded from memory."""
        self.forgotten.append(conversation_id)
        self.store.set_conversation_excluded(conversation_id, True)

    @property
    def enabled(self) -> bool:
        return self.store.get_profile_by_id(self.profile.id).memory_enabled

    def reload(self) -> None:
        self.state.current_version_id = self.store.get_profile_by_id(
            self.profile.id
        ).current_version_id

    def slot_info(self, attention: Any = None) -> list[dict]:
        """Hostile labels and sources on purpose: the inspector must show them literally."""
        return [
            {
                "index": i,
                "label": f"[b]slot {i}[/b] [@click=app.quit]x[/]",
                "usage": 1 / (i + 1),
                "usage_history": [0.1, 1 / (i + 1)],
                "sources": ["#1 [link=file:///etc/passwd]trip[/link]"],
            }
            for i in range(self.n)
        ]

    def close(self) -> None:
        self.release.set()


@dataclass
class ScriptedAssistant:
    """``lpm_local.chat.assistant.Assistant``'s shape, built on a real store and a scripted engine."""

    store: Any
    backbone: Any
    engine: ScriptedEngine
    profile: Any
    memory: Any = None
    closed: bool = False

    def new_session(self, *, temporary: bool = False, conversation_id: int | None = None):
        from lpm_local.chat.session import ChatSession

        enabled = self.store.get_profile(self.profile.name).memory_enabled
        return ChatSession(
            engine=self.engine,
            store=self.store,
            profile=self.profile,
            conversation_id=conversation_id,
            memory=self.memory if enabled else None,
            temporary=temporary,
        )

    def close(self) -> None:
        if self.memory is not None:
            self.memory.close()
        self.store.close()
        self.closed = True


@dataclass
class ScriptedFactory:
    """An ``assistant_factory`` for ``LpmApp``: opens the real store, scripts the rest.

    ``memory=True`` attaches a ``ScriptedMemory``; ``gate`` (an Event) holds the load, reporting
    ``stage``, so tests can look at the loading screen; ``fail`` raises instead of loading. ``made`` keeps every
    assistant built, and ``models`` every model name asked for.
    """

    memory: bool = False
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
        from lpm_local.storage.store import Store

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
            memory=ScriptedMemory(store, profile) if self.memory else None,
        )
        self.made.append(assistant)
        return assistant

    @property
    def assistant(self) -> ScriptedAssistant:
        return self.made[-1]

    @property
    def engine(self) -> ScriptedEngine:
        return self.made[-1].engine
