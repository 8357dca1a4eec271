"""The one seam between the TUI and the memory.

Everything the UI shows about memory goes through ``MemoryAdapter``. It reads what the store
knows (the on/off switch, versions and their losses) and asks the profile's memory runtime
(``lpm_local.memory.runtime.MemoryRuntime``, which ``open_assistant`` attaches as
``assistant.memory``) only for what only it knows: a refit in progress, slot labels and usage,
rollback and forget.

What the TUI asks of the runtime is written down once, as the ``MemoryControls`` protocol, and
what it asks of the assistant as ``AssistantParts``. ``MemoryRuntime`` and ``Assistant`` satisfy
them as they are (tests/test_tui_seams.py compares the signatures), and so do the UI tests' scripted
stand-ins; the adapter calls them directly, without probing for attributes.

``assistant.memory`` is None when the runtime could not be opened (a profile whose memory
failed to load: the chat goes on without it). Then the adapter says "memory: not available
yet" and every memory action raises ``MemoryUnavailable`` with that sentence, so the rest of
the app works the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from lpm_local.errors import LpmError
from lpm_local.storage.records import MemoryVersion, Profile
from lpm_local.storage.store import Store

if TYPE_CHECKING:  # these modules import torch: the TUI paints before the model loads
    import torch

    from lpm_local.memory.inspection import SlotDescription
    from lpm_local.memory.runtime import RefitEvent, RuntimeState

NOT_AVAILABLE = "memory: not available yet"


class MemoryUnavailable(RuntimeError):
    """A memory action was asked for while no memory runtime is attached."""

    def __init__(self, action: str = "") -> None:
        super().__init__(
            f"{NOT_AVAILABLE}" + (f" ({action} needs the memory runtime)" if action else "")
        )


class MemoryControls(Protocol):
    """What the TUI asks of a profile's memory runtime (``MemoryRuntime``).

    Besides these, ``ChatSession`` calls ``prefix`` and ``after_turn`` on the same object
    (``lpm_local.chat.session.MemoryConditioner``).
    """

    @property
    def state(self) -> RuntimeState:
        """A fresh snapshot: refit running, stage, fraction, current version, problem."""
        ...

    @property
    def enabled(self) -> bool:
        """The profile's memory switch, read from the store."""
        ...

    def add_listener(self, callback: Callable[[RefitEvent], None]) -> None: ...

    def remove_listener(self, callback: Callable[[RefitEvent], None]) -> None: ...

    def refit_now(self, reason: str = "on demand") -> None: ...

    def cancel_refit(self) -> None: ...

    def rollback(self, version_id: int) -> None: ...

    def forget(self, conversation_id: int) -> object: ...

    def reload(self) -> None: ...

    def slot_info(self, attention: torch.Tensor | None = None) -> list[SlotDescription]: ...

    def close(self) -> None: ...


class AssistantParts(Protocol):
    """The parts of ``lpm_local.chat.assistant.Assistant`` that memory and data actions use."""

    store: Store
    profile: Profile

    @property
    def memory(self) -> MemoryControls | None: ...


@dataclass(frozen=True)
class MemoryStatus:
    """What the memory panel shows, read in one go."""

    available: bool  # a runtime is attached (the app can refit, roll back, inspect)
    enabled: bool  # the profile's switch: off means no soft prompt and no learning
    version_id: int | None
    version_count: int
    last_refit_at: str | None
    heldout_losses: list[float] = field(default_factory=list)  # oldest first
    refit_running: bool = False
    refit_stage: str = ""
    refit_fraction: float | None = None
    problem: str | None = None  # why the current version cannot be used (runtime's word)
    last_summary: str | None = None  # what the last refit did, in the runtime's words


class MemoryAdapter:
    """Memory facts and actions for one assistant (store + profile + runtime, if any)."""

    def __init__(self, assistant: AssistantParts) -> None:
        self.assistant = assistant
        self._listening: list[Callable[[RefitEvent], None]] = []

    # -- what is there -------------------------------------------------------------------------

    @property
    def runtime(self) -> MemoryControls | None:
        return self.assistant.memory

    @property
    def available(self) -> bool:
        return self.runtime is not None

    @property
    def store(self) -> Store:
        return self.assistant.store

    @property
    def profile(self) -> Profile:
        return self.assistant.profile

    def status(self) -> MemoryStatus:
        profile = self.store.get_profile_by_id(self.profile.id)
        versions = self.versions()
        losses = [v.heldout_loss for v in versions if v.heldout_loss is not None]
        runtime = self.runtime
        state = runtime.state if runtime is not None else None
        newest = versions[-1].created_at if versions else None
        if state is None:
            return MemoryStatus(
                available=False,
                enabled=profile.memory_enabled,
                version_id=profile.current_version_id,
                version_count=len(versions),
                last_refit_at=newest,
                heldout_losses=losses,
            )
        return MemoryStatus(
            available=True,
            enabled=profile.memory_enabled,
            version_id=state.current_version_id or profile.current_version_id,
            version_count=len(versions),
            last_refit_at=state.last_refit_at or newest,
            heldout_losses=losses,
            refit_running=state.running,
            refit_stage=state.stage,
            refit_fraction=state.fraction,
            problem=state.problem,
            last_summary=state.last_summary,
        )

    def versions(self) -> list[MemoryVersion]:
        """The profile's memory versions, oldest first (listings never load the blobs)."""
        versions = self.store.list_memory_versions(self.profile.id)
        return sorted(versions, key=lambda v: (v.created_at, v.id))

    # -- actions ---------------------------------------------------------------------------------

    def set_enabled(self, enabled: bool) -> None:
        """Flip the profile's memory switch (works without a runtime: it is a stored setting)."""
        self.assistant.profile = self.store.set_memory_enabled(self.profile.id, enabled)

    def add_listener(self, callback: Callable[[RefitEvent], None]) -> bool:
        """Call ``callback`` (from the refit thread) on each refit event; False without runtime.

        The events are the runtime's frozen ``RefitEvent``s: safe to hand to the UI thread.
        """
        runtime = self.runtime
        if runtime is None:
            return False
        runtime.add_listener(callback)
        self._listening.append(callback)
        return True

    def remove_listeners(self) -> None:
        """Detach what ``add_listener`` attached (the screen that listened is going away)."""
        runtime = self.runtime
        if runtime is not None:
            for callback in self._listening:
                runtime.remove_listener(callback)
        self._listening.clear()

    def refit_now(self) -> None:
        self._require("refit").refit_now("on demand")

    def cancel_refit(self) -> None:
        self._require("cancel a refit").cancel_refit()

    def rollback(self, version_id: int) -> None:
        self._require("roll back").rollback(version_id)

    def forget(self, conversation_id: int) -> None:
        """Drop a conversation from memory: the runtime deletes it and refits from before it."""
        self._require("forget a conversation").forget(conversation_id)

    def slots(self, attention: torch.Tensor | None = None) -> list[SlotDescription]:
        """Per-slot label, usage and sources (``lpm_local.memory.inspection.describe``).

        ``attention`` ([heads, M, N]) of the selected reply is passed along so each slot also
        says how much this reply used it; without a runtime the list is empty.
        """
        runtime = self.runtime
        return [] if runtime is None else runtime.slot_info(attention)

    def reply_attention(self, message_id: int | None) -> torch.Tensor | None:
        """The attention stored with a reply of an earlier session ([heads, M, N]), or None."""
        if message_id is None or self.runtime is None:
            return None
        # Imported here: it pulls in torch, which the runtime has loaded by now anyway.
        from lpm_local.memory.inspection import reply_attention

        try:
            attention, _version = reply_attention(
                self.store, message_id, profile_id=self.profile.id
            )
        except LpmError:  # none recorded (memory was off, or it predates memory), or unreadable
            return None
        return attention

    def _require(self, action: str) -> MemoryControls:
        runtime = self.runtime
        if runtime is None:
            raise MemoryUnavailable(action)
        return runtime
