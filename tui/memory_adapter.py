"""The one seam between the TUI and the memory runtime.

Everything the UI shows about memory goes through ``MemoryAdapter``. It reads what the store
knows (the on/off switch, versions and their losses) and asks the runtime
(``lpm_local.memory.runtime.MemoryRuntime``, attached to the assistant as ``assistant.memory``)
only for what only it knows: a refit in progress, slot labels and usage, rollback and forget.
When no runtime is attached (no projector for this backbone, or an older ``open_assistant``),
the adapter says "memory: not available yet" and every memory action answers with that
sentence instead of failing, so the rest of the app works the same.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lpm_local.errors import LpmError

NOT_AVAILABLE = "memory: not available yet"


class MemoryUnavailable(RuntimeError):
    """A memory action was asked for while no memory runtime is attached."""

    def __init__(self, action: str = "") -> None:
        super().__init__(
            f"{NOT_AVAILABLE}" + (f" ({action} needs the memory runtime)" if action else "")
        )


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


@dataclass(frozen=True)
class SlotInfo:
    """One memory slot as the inspector shows it; all text fields are untrusted."""

    index: int
    label: str
    usage: float  # share of attention over recent replies, 0..1
    sources: list[str]  # titles of the conversations that shaped it most
    usage_history: list[float] = field(default_factory=list)  # oldest reply first
    reply_usage: float | None = None  # this slot's share in the reply being inspected


@dataclass(frozen=True)
class RefitEventView:
    """A refit event, copied out of the runtime's object so the UI thread never shares it."""

    stage: str
    fraction: float | None
    done: bool
    result: Any = None
    error: str | None = None


class MemoryAdapter:
    """Memory facts and actions for one assistant (store + profile + optional runtime)."""

    def __init__(self, assistant: Any) -> None:
        self.assistant = assistant
        self._forwarders: list[Callable[[Any], None]] = []

    # -- what is there -------------------------------------------------------------------------

    @property
    def runtime(self) -> Any | None:
        """The assistant's memory if it is a full runtime (has ``state``), else None."""
        memory = getattr(self.assistant, "memory", None)
        return memory if memory is not None and hasattr(memory, "state") else None

    @property
    def available(self) -> bool:
        return self.runtime is not None

    @property
    def store(self) -> Any:
        return self.assistant.store

    @property
    def profile(self) -> Any:
        return self.assistant.profile

    def status(self) -> MemoryStatus:
        profile = self.store.get_profile_by_id(self.profile.id)
        versions = self.versions()
        losses = [v.heldout_loss for v in versions if getattr(v, "heldout_loss", None) is not None]
        state = getattr(self.runtime, "state", None)
        last = getattr(state, "last_refit_at", None) or (
            versions[-1].created_at if versions else None
        )
        return MemoryStatus(
            available=state is not None,
            enabled=bool(profile.memory_enabled),
            version_id=getattr(state, "current_version_id", None) or profile.current_version_id,
            version_count=len(versions),
            last_refit_at=last,
            heldout_losses=[float(x) for x in losses],
            refit_running=bool(getattr(state, "running", False)),
            refit_stage=str(getattr(state, "stage", "") or ""),
            refit_fraction=getattr(state, "fraction", None),
            problem=getattr(state, "problem", None),
            last_summary=getattr(state, "last_summary", None),
        )

    def versions(self) -> list[Any]:
        """The profile's memory versions, oldest first (what the store lists)."""
        listing = getattr(self.store, "list_memory_versions", None)
        if listing is None:
            return []
        versions = list(listing(self.profile.id))
        return sorted(versions, key=lambda v: (v.created_at, v.id))

    # -- actions ---------------------------------------------------------------------------------

    def set_enabled(self, enabled: bool) -> None:
        """Flip the profile's memory switch (works without a runtime: it is a stored setting)."""
        self.assistant.profile = self.store.set_memory_enabled(self.profile.id, enabled)

    def add_listener(self, callback: Callable[[RefitEventView], None]) -> bool:
        """Call ``callback`` (from the refit thread) on each refit event; False without runtime."""
        runtime = self.runtime
        if runtime is None or not hasattr(runtime, "add_listener"):
            return False

        def forward(event: Any) -> None:
            callback(
                RefitEventView(
                    stage=str(getattr(event, "stage", "")),
                    fraction=getattr(event, "fraction", None),
                    done=bool(getattr(event, "done", False)),
                    result=getattr(event, "result", None),
                    error=getattr(event, "error", None),
                )
            )

        runtime.add_listener(forward)
        self._forwarders.append(forward)
        return True

    def remove_listeners(self) -> None:
        """Detach what ``add_listener`` attached (the screen that listened is going away)."""
        runtime = self.runtime
        remove = getattr(runtime, "remove_listener", None) if runtime is not None else None
        for forward in self._forwarders:
            if remove is not None:
                remove(forward)
        self._forwarders.clear()

    def refit_now(self) -> None:
        self._require("refit_now", "refit")()

    def cancel_refit(self) -> None:
        self._require("cancel_refit", "cancel a refit")()

    def rollback(self, version_id: int) -> None:
        self._require("rollback", "roll back")(version_id)

    def forget(self, conversation_id: int) -> None:
        """Drop a conversation from memory: the runtime deletes it and refits from before it."""
        self._require("forget", "forget a conversation")(conversation_id)

    def slots(self, attention: Any = None) -> list[SlotInfo]:
        """Per-slot label, usage and sources (``runtime.slot_info``, from ``memory.inspect``).

        ``attention`` ([heads, M, N]) of the selected reply is passed along so each slot also
        says how much this reply used it; without a runtime the list is empty.
        """
        runtime = self.runtime
        describe = getattr(runtime, "slot_info", None) if runtime is not None else None
        if describe is None:
            return []
        return [_slot_view(i, raw) for i, raw in enumerate(describe(attention))]

    def reply_attention(self, message_id: int | None) -> Any | None:
        """The attention stored with a reply of an earlier session ([heads, M, N]), or None."""
        if message_id is None or self.runtime is None:
            return None
        module = optional_module("lpm_local.memory.inspection")
        lookup = getattr(module, "reply_attention", None) if module else None
        if lookup is None:
            return None
        try:
            attention, _version = lookup(self.store, message_id, profile_id=self.profile.id)
        except LpmError:  # NotFound: memory was off for that reply, or it predates memory
            return None
        return attention

    def _require(self, name: str, action: str) -> Callable[..., Any]:
        runtime = self.runtime
        method = getattr(runtime, name, None) if runtime is not None else None
        if method is None:
            raise MemoryUnavailable(action)
        return method


def optional_module(name: str) -> Any | None:
    """Import a module that may not exist yet; a missing *module* is None, other errors raise."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            return None
        raise


def _slot_view(index: int, raw: Any) -> SlotInfo:
    """Normalise whatever the inspection helper returns (record or dict) into a ``SlotInfo``."""
    get = raw.get if isinstance(raw, dict) else lambda key, default=None: getattr(raw, key, default)
    usage = get("usage", 0.0)
    if isinstance(usage, Sequence) and not isinstance(usage, str):
        usage = usage[-1] if usage else 0.0  # a usage history: the panel shows the latest
    sources = get("sources", None) or []
    history = get("usage_history", None) or []
    reply = get("reply_usage", None)
    return SlotInfo(
        index=int(get("index", index)),
        label=str(get("label", "") or ""),
        usage=float(usage or 0.0),
        sources=[s if isinstance(s, str) else str(getattr(s, "title", s)) for s in sources],
        usage_history=[float(x) for x in history],
        reply_usage=None if reply is None else float(reply),
    )
