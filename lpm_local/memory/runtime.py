"""``MemoryRuntime``: a profile's Latent Personal Memory inside the running app.

It owns the frozen projector (``frozen.py``) and the profile's current slots, and gives the chat
what ``ChatSession`` asks for: ``prefix(user_text)`` before a turn, ``after_turn(profile_id)``
after it. Around that: background refits every ``refit_every`` user turns and on request
(``requests.pending_refit``, e.g. after `lpm import`), user control (``refit_now``,
``cancel_refit``, ``rollback``, ``forget``), and what the TUI shows (``state``, refit events via
``add_listener``, ``slot_info``).

- Memory off (the profile's switch, read fresh every turn): ``prefix`` returns None, so the turn
  is exactly the bare backbone, and nothing is learned.
- No usable version yet: None, the bare backbone. The first refit starts from the history's
  salient tokens and commits only if they fit held-out history better; until then unfitted
  slots would be a guess shown to the user.
- The slots in use are swapped only after a version is committed (or a rollback/forget), and
  re-read when another process moved the profile's pointer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from lpm_local.memory import inspection as memory_inspect
from lpm_local.memory import requests, versions
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.frozen import FrozenMemory, current_slots, load_frozen_memory
from lpm_local.memory.refit import RefitOutcome, RefitSettings, run_refit
from lpm_local.memory.refit_log import DEFAULT_REFIT_EVERY, parse_detail
from lpm_local.memory.scheduler import RefitBusy, RefitScheduler, locked_refit
from lpm_local.storage.records import Profile
from lpm_local.storage.store import Store

log = logging.getLogger(__name__)

# A refit waits between steps while a chat turn runs, but never longer than this: a turn whose
# after_turn never comes (a crash in generation) must not stall the memory forever.
MAX_PAUSE_S = 120.0
BUSY_RETRY_S = 30.0  # another process holds the refit lock: try again after this


@dataclass(frozen=True)
class RuntimeState:
    """A snapshot for the UI; ``state`` returns a fresh one each time."""

    running: bool = False
    stage: str = ""
    fraction: float | None = None
    last_refit_at: str | None = None
    last_status: str | None = None
    last_summary: str | None = None
    current_version_id: int | None = None
    problem: str | None = None  # why the current version could not be used, if it could not


@dataclass(frozen=True)
class RefitEvent:
    """Sent to listeners from the refit thread: progress, then one event with ``done=True``."""

    stage: str
    fraction: float | None
    done: bool = False
    result: RefitOutcome | None = None
    error: str | None = None


class MemoryRuntime:
    """The memory of one profile for one backbone; create one per open assistant."""

    def __init__(
        self,
        store: Store,
        backbone,
        profile: Profile,
        *,
        config: MemoryConfig | None = None,
        refit_every: int = DEFAULT_REFIT_EVERY,
        settings: RefitSettings | None = None,
        frozen: FrozenMemory | None = None,
        autostart: bool = True,
        background: bool = True,
    ):
        """``autostart``: look for a due or requested refit now. ``background=False``: never
        start refits on its own (a one-shot `lpm ask`; requests stay for the app), though
        ``refit_now`` still works."""
        if refit_every < 1:
            raise ValueError(f"refit_every must be >= 1, got {refit_every}")
        self.store, self.profile = store, profile
        self.frozen = frozen or load_frozen_memory(backbone, config)
        self.refit_every = refit_every
        self.background = background
        self.settings = settings or RefitSettings()
        self._lock = threading.RLock()
        self._listeners: list[Callable[[RefitEvent], None]] = []
        self._state = RuntimeState()
        self._slots: torch.Tensor | None = None
        self._turn = threading.Event()  # set while a chat turn is in flight
        self._turn_started = 0.0
        self._pending_attention: tuple[torch.Tensor, int | None, int] | None = None
        self._through = self._last_attempt_through()
        self.reload()
        self._scheduler = RefitScheduler(str(profile.id), self._job)
        if autostart:
            self._check_requests()

    # -- the chat's side -----------------------------------------------------------------------

    def prefix(self, user_text: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Soft prompt [M, H] (fp32) and attention [heads, M, N] for this message, or None."""
        self._turn_started = time.monotonic()
        self._turn.set()  # a running refit pauses at its next step until after_turn
        profile = self.store.get_profile_by_id(self.profile.id)
        if not profile.memory_enabled:
            return None
        if profile.current_version_id != self._state.current_version_id:
            self.reload()  # another process committed, rolled back or forgot
        slots, version_id = self.current()
        if slots is None:
            return None
        soft, attention = self.frozen.soft(slots, user_text)
        mark = memory_inspect.newest_message_id(self.store)
        self._pending_attention = (attention.detach().cpu(), version_id, mark)
        return soft, attention

    def after_turn(self, profile_id: int, *, reply_message_id: int | None = None) -> None:
        """A turn was stored: keep its attention, then schedule a refit if one is due."""
        self._turn.clear()
        pending, self._pending_attention = self._pending_attention, None
        if profile_id != self.profile.id:
            return
        if pending is not None:
            attention, version_id, mark = pending
            reply = reply_message_id or memory_inspect.newest_reply_after(
                self.store, profile_id, mark
            )
            if reply is not None:
                memory_inspect.record_reply_attention(self.store, reply, version_id, attention)
        if self.store.get_profile_by_id(profile_id).memory_enabled:
            self._check_requests()

    # -- what the UI reads ---------------------------------------------------------------------

    @property
    def state(self) -> RuntimeState:
        return self._state

    @property
    def enabled(self) -> bool:
        return self.store.get_profile_by_id(self.profile.id).memory_enabled

    def current(self) -> tuple[torch.Tensor | None, int | None]:
        """(slots [N, d_s] in use or None, current version id)."""
        with self._lock:
            return self._slots, self._state.current_version_id

    def add_listener(self, callback: Callable[[RefitEvent], None]) -> None:
        """``callback(event)`` is called from the refit thread; keep it short."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[RefitEvent], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def slot_info(
        self, attention: torch.Tensor | None = None
    ) -> list[memory_inspect.SlotDescription]:
        return memory_inspect.describe_slots(self, attention)

    # -- control -------------------------------------------------------------------------------

    def refit_now(self, reason: str = "on demand") -> None:
        """Queue a refit (it runs in the background; listen for its events)."""
        self._scheduler.request(reason)

    def cancel_refit(self) -> None:
        self._scheduler.cancel()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no refit runs or waits (tests, the CLI); False on timeout."""
        return self._scheduler.wait_idle(timeout)

    def rollback(self, version_id: int) -> None:
        """Make an earlier version current; a refit running from the old one is discarded."""
        self._scheduler.cancel()
        versions.rollback(self.store, self.profile.id, version_id)
        self.reload()

    def forget(self, conversation_id: int) -> versions.ForgetReport:
        """Exclude a conversation, return to the memory from before it, and refit the rest."""
        self._scheduler.cancel()
        report = versions.forget_conversation(self.store, self.profile.id, conversation_id)
        self.reload()
        if self.enabled:
            self._scheduler.request("forget")
        return report

    def reload(self) -> None:
        """Re-read the profile's current version (sha256 and shape checked) into use."""
        loaded = current_slots(self.store, self.frozen, self.profile.id)
        slots = loaded.slots
        with self._lock:
            self._slots = slots
            self._set_state(current_version_id=loaded.version_id, problem=loaded.problem)

    def close(self) -> None:
        """Cancel a running refit and join its thread (it stops within one optimiser step)."""
        self._scheduler.close()

    # -- the refit thread ----------------------------------------------------------------------

    def _check_requests(self, *, from_job: bool = False) -> None:
        """Queue a refit if one was requested (another process, an import) or is due.

        Not while one runs (it covers the turns so far); the job checks again when it ends."""
        if not self.background or not self.enabled or (self._scheduler.running and not from_job):
            return
        request = requests.pending_refit(self.store, self.profile.id)
        if request is not None:
            self._scheduler.request(str(request.get("reason") or "requested"))
            return
        turns = self.store.count_user_messages(self.profile.id, after_message_id=self._through)
        if turns >= self.refit_every:
            self._scheduler.request(f"{turns} new user turns")

    def _job(self, reason: str, cancel: threading.Event) -> None:
        self._set_state(running=True, stage="waiting", fraction=0.0)
        self._emit(RefitEvent("starting", 0.0))
        request = requests.pending_refit(self.store, self.profile.id)
        outcome, error = None, None
        try:
            outcome = locked_refit(
                self.store,
                self.profile.id,
                lambda: run_refit(
                    self.store,
                    self.frozen,
                    self.profile.id,
                    settings=self.settings,
                    reason=reason,
                    cancel=cancel,
                    progress=self._progress,
                    between_steps=lambda: self._yield_to_chat(cancel),
                ),
            )
        except RefitBusy as exc:
            error = str(exc)
            retry = threading.Timer(BUSY_RETRY_S, self._scheduler.request, [reason])
            retry.daemon = True  # never keeps the app from exiting
            retry.start()
        except Exception as exc:  # reported to the UI; the refit wrote nothing, memory unchanged
            log.exception("refit failed")
            error = f"{type(exc).__name__}: {exc}"
        self._finish(outcome, error, request)

    def _finish(
        self, outcome: RefitOutcome | None, error: str | None, request: dict | None
    ) -> None:
        if outcome is not None:
            if outcome.status in ("committed", "no_improvement"):
                self._through = outcome.trained_through
                if request is not None:
                    requests.clear_served_request(self.store, self.profile.id, request)
            if outcome.committed:
                self.reload()
        last = self.store.list_refits(self.profile.id)
        self._set_state(
            running=False,
            stage="",
            fraction=None,
            last_refit_at=last[0].finished_at if last else None,
            last_status=outcome.status if outcome else "failed",
            last_summary=outcome.summary() if outcome else error,
        )
        self._emit(
            RefitEvent(
                outcome.status if outcome else "failed", 1.0, done=True, result=outcome, error=error
            )
        )
        if outcome is not None and outcome.status in ("committed", "no_improvement"):
            self._check_requests(from_job=True)  # a request made meanwhile (never after failures)

    def _progress(self, stage: str, fraction: float | None = None) -> None:
        self._set_state(stage=stage, fraction=fraction)
        self._emit(RefitEvent(stage, fraction))

    def _yield_to_chat(self, cancel: threading.Event) -> None:
        """Between optimiser steps: wait while a chat turn is generating (bounded)."""
        while (
            self._turn.is_set()
            and not cancel.is_set()
            and time.monotonic() - self._turn_started < MAX_PAUSE_S
        ):
            self._set_state(stage="paused for the chat")
            time.sleep(0.05)

    def _emit(self, event: RefitEvent) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(event)
            except Exception:  # a broken listener must not kill the refit
                log.exception("refit listener failed")

    def _set_state(self, **changes) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def _last_attempt_through(self) -> int | None:
        """The message id the last finished refit read up to: turns after it are 'new'."""
        for record in self.store.list_refits(self.profile.id):
            if record.status in ("committed", "no_improvement"):
                through = parse_detail(record.detail).get("through")
                if isinstance(through, int):
                    return through
        current = self.store.get_profile_by_id(self.profile.id).current_version_id
        for version in self.store.list_memory_versions(self.profile.id):  # no blobs read
            if version.id == current:
                return version.trained_through_message_id
        return None
