"""One refit of a profile's memory: history -> windows -> ``fit_slots`` -> maybe a new version.

1. The examples (``refit_examples``) are windows of the *learnable* history (excluded
   conversations never appear; temporary chats are never stored at all) plus a recall example
   per user message. The cost is bounded whatever the history's length (``max_windows``).
2. A seeded share of windows is held out; ``fit_slots`` starts from the current version's slots
   (fresh slots when there is none), moves only the slots and early-stops on the held-out loss.
3. A new version is written only if the held-out loss improved, by ``versions.commit_version``:
   version + pointer + refit row + pruning in one transaction, so a kill leaves the old memory or
   the new one. Anything that fails before it leaves the memory bitwise unchanged: ``fit_slots``
   never touches its input and nothing is written until the commit; the refit row then says
   ``failed``/``cancelled``/``no_improvement``.

Callers hold the profile's refit lock (``scheduler.ProfileLock``): one refit per profile, across
processes. The job is cancellable (``cancel`` checked every step) and reports progress.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from lpm_local.memory import inspection as memory_inspect
from lpm_local.memory.fitting import FitProgress, fit_slots
from lpm_local.memory.frozen import FrozenMemory, current_slots
from lpm_local.memory.refit_examples import (  # select_windows: re-exported
    add_recall_examples,
    recent_turns,
    select_windows,
)
from lpm_local.memory.refit_log import parse_detail  # noqa: F401 - re-exported
from lpm_local.memory.slots import slots_to_bytes
from lpm_local.memory.versions import StaleRefit, VersionBlob, commit_version
from lpm_local.memory.windows import (
    WindowConfig,
    split_heldout,
)
from lpm_local.storage.store import Store

Progress = Callable[[str, "float | None"], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefitSettings:
    # Every step is a forward+backward through the whole backbone, so steps are the cost.
    # Adam steps at most; early stopping may end sooner. None: one pass over the training
    # windows (``passes`` of them), kept within [min_steps, max_steps], so a refit reads the
    # whole selected history however long it is, at a bounded cost.
    steps: int | None = None
    passes: float = 1.0
    # A short history is read many times over: on a six-fact persona (Qwen2.5-0.5B, 32 soft
    # tokens) the memory answered 3 of 6 facts after 20 steps on its recall examples, and a
    # soft prompt needs tens of steps before it names a fact at all.
    min_steps: int = 40
    max_steps: int = 120
    # Adam's step moves every slot coordinate by about ``lr``, so the rate that suits a backbone
    # scales with its embedding size: 0.03 was chosen on validation users for SmolLM2 (card),
    # whose input embeddings have an RMS of 0.136; Qwen2.5-0.5B's is 0.017, and 0.03 there
    # would move a slot further in one step than the token it started from. None: that rate
    # relative to the backbone's embedding RMS (0.03 on SmolLM2, 0.0038 on Qwen2.5-0.5B).
    lr: float | None = None
    lr_per_embedding_rms: float = 0.03 / 0.1356
    batch_size: int = 8  # windows per step: ~1-3 s of forward+backward for SmolLM2 on 2 cores
    eval_every: int = 5
    patience: int = 2
    heldout_fraction: float = 0.2
    # The cost bound: windows tokenised and fitted per refit, whatever the history's length
    # (about 24K history tokens of one-exchange windows; recall examples come on top).
    max_windows: int = 400
    # User messages also become recall examples: questions the backbone writes about a message
    # ("Where did I grow up?"), answered by the message told back ("You grew up in Tampere").
    # History windows alone teach the memory to continue the user's text; a user sees the
    # memory only when it shapes what the assistant *says* about them, and that is what these
    # examples train (``refit_examples.add_recall_examples``).
    recall_examples: bool = True
    # How many user messages (newest first) the backbone writes recall questions about per
    # refit: each costs a share of one batched greedy generation, a few seconds on a CPU. A
    # routed bank probes only its filed messages: 32 covers all of a 32-group bank.
    probed_messages: int = 32
    # Share of the budget taken from the newest conversations; the rest samples older ones so
    # that what the memory knew is rehearsed, not only what is new.
    recent_share: float = 0.75
    # Below this many windows there is nothing to hold out: no version is written.
    min_windows: int = 2
    # Windows used to attribute slot changes to conversations ("what shaped this slot").
    attribution_windows: int = 16
    # A routed bank's fits learn a change of this rank (``fit_slots(rank=...)``), kept from one
    # refit to the next, so what a profile has learned is (n_slots + hidden) * rank numbers:
    # 9,472 on Qwen2.5-0.5B, 57x fewer than a rank-8 LoRA on its q and v (540,672). None: every
    # number of the bank is fitted. Flat memories are always fitted whole (already small).
    change_rank: int | None = 8
    seed: int = 0
    # One exchange per window and no context, as measured: context tokens cost compute and
    # carry no loss.
    window: WindowConfig = field(
        default_factory=lambda: WindowConfig(context_turns=0, target_turns=2)
    )

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"RefitSettings.steps must be >= 1 or None, got {self.steps}")
        if not 0 < self.passes <= 100 or not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(
                f"bad passes {self.passes} or steps range [{self.min_steps}, {self.max_steps}]"
            )
        if self.probed_messages < 0:
            raise ValueError(
                f"RefitSettings.probed_messages must be >= 0, got {self.probed_messages}"
            )
        ints = ("batch_size", "eval_every", "patience", "max_windows", "min_windows")
        for name in ints:
            if getattr(self, name) < 1:
                raise ValueError(f"RefitSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.change_rank is not None and self.change_rank < 1:
            raise ValueError(f"RefitSettings.change_rank must be >= 1 or None: {self.change_rank}")
        if self.min_windows > self.max_windows:
            raise ValueError(f"min_windows {self.min_windows} > max_windows {self.max_windows}")
        bad_lr = self.lr is not None and not 0 < self.lr < 10
        if bad_lr or not 0 < self.lr_per_embedding_rms < 100:
            raise ValueError(f"bad lr {self.lr} or lr/RMS {self.lr_per_embedding_rms}")
        if not 0 <= self.recent_share <= 1 or self.attribution_windows < 0:
            raise ValueError(
                f"bad recent_share {self.recent_share} or "
                f"attribution_windows {self.attribution_windows}"
            )
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)

    def lr_for(self, embedding_rms: float) -> float:
        """The learning rate for a backbone whose input embeddings have this RMS."""
        return self.lr if self.lr is not None else self.lr_per_embedding_rms * embedding_rms

    def steps_for(self, train_windows: int) -> int:
        """Adam steps for ``train_windows`` training windows (see ``steps``)."""
        if self.steps is not None:
            return self.steps
        one_pass = math.ceil(self.passes * train_windows / self.batch_size)
        return max(self.min_steps, min(self.max_steps, one_pass))


@dataclass(frozen=True)
class RefitOutcome:
    """What a refit did; ``status`` is a ``refits.status`` value."""

    refit_id: int | None
    status: str  # committed | no_improvement | cancelled | failed
    base_version_id: int | None
    new_version_id: int | None = None
    heldout_before: float | None = None
    heldout_after: float | None = None
    train_loss: float | None = None
    steps: int = 0
    windows: int = 0
    window_tokens: int = 0
    trained_through: int | None = None
    seconds: float = 0.0
    detail: str = ""

    @property
    def committed(self) -> bool:
        return self.status == "committed"

    def summary(self) -> str:
        """One line for people: losses and what happened to the memory."""
        losses = ""
        if self.heldout_before is not None and self.heldout_after is not None:
            losses = f"held-out loss {self.heldout_before:.4f} -> {self.heldout_after:.4f}; "
        if self.committed:
            return f"{losses}new memory version #{self.new_version_id} written"
        what = {
            "no_improvement": "no improvement",
            "cancelled": "cancelled",
            "failed": "failed",
        }.get(self.status, self.status)
        reason = f" ({self.detail})" if self.detail else ""
        return f"{losses}{what}{reason}: memory unchanged"


def run_refit(
    store: Store,
    frozen: FrozenMemory,
    profile_id: int,
    *,
    settings: RefitSettings | None = None,
    reason: str = "refit",
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    between_steps: Callable[[], None] | None = None,
) -> RefitOutcome:
    """Refit one profile's slots; see the module docstring. Call it holding the profile's lock.

    ``between_steps`` runs after every optimiser step (the runtime pauses there while a chat
    turn is generating). Exceptions propagate after the refit row is marked ``failed``."""
    settings = settings or RefitSettings()
    report = progress or (lambda stage, fraction=None: None)
    started = time.perf_counter()
    profile = store.get_profile_by_id(profile_id)
    base_id = profile.current_version_id
    refit_id = store.start_refit(profile_id, base_id)
    try:
        outcome = _refit(
            store,
            frozen,
            profile_id,
            refit_id,
            base_id,
            settings,
            reason,
            cancel,
            report,
            between_steps,
            started,
        )
    except BaseException as exc:
        detail = json.dumps({"reason": reason, "error": type(exc).__name__})
        try:
            store.finish_refit(refit_id, "failed", detail=detail)
        except Exception:  # the original error matters more; the row stays 'running'
            log.exception("could not mark refit #%s failed (the next lock holder will)", refit_id)
        raise
    report("done", 1.0)
    return outcome


def _refit(
    store,
    frozen,
    profile_id,
    refit_id,
    base_id,
    settings,
    reason,
    cancel,
    report,
    between_steps,
    started,
) -> RefitOutcome:
    report("reading history", 0.0)
    through = store.last_message_id(profile_id)
    loaded = current_slots(store, frozen, profile_id)
    examples = select_windows(store, frozen, profile_id, settings, salt=through or 0)
    base, change = loaded.slots, None
    rank = settings.change_rank if frozen.config.routed else None
    turns = recent_turns(examples)
    if base is None:  # no usable version yet: the salient tokens of the history being fitted
        base = frozen.fresh_slots(turns, seed=profile_id)
    else:  # a routed bank files the messages that have no group yet
        if rank is not None and loaded.change is not None:
            # Go on fitting the stored change over the bank the history wrote.
            a, b = loaded.change
            change, base = (a, b), base - a @ b
        base, change = frozen.grown_slots(base, turns, change)
    # The memory as this refit starts: what attribution reads and what the fit improves on.
    before = base if change is None else base + change[0] @ change[1]
    common = {
        "refit_id": refit_id,
        "base_version_id": base_id,
        "windows": len(examples.windows),
        "window_tokens": examples.tokens,
        "trained_through": through,
    }

    def finish(status: str, note: str = "", **values) -> RefitOutcome:
        outcome = RefitOutcome(
            status=status, detail=note, **common, **values, seconds=time.perf_counter() - started
        )
        store.finish_refit(refit_id, status, steps=outcome.steps, detail=_detail(outcome, reason))
        return outcome

    if len(examples.windows) < settings.min_windows:
        return finish(
            "no_improvement",
            f"not enough history yet ({len(examples.windows)} "
            f"windows, {settings.min_windows} needed)",
        )
    if settings.recall_examples:
        report("writing recall questions", 0.02)
        add_recall_examples(
            frozen,
            examples,
            probed_messages=settings.probed_messages,
            filed=frozen.filed_statements(base, turns),
            cancel=cancel,
            between_batches=between_steps,
        )
        if cancel is not None and cancel.is_set():
            return finish("cancelled", "cancelled")
    train, held = split_heldout(examples.windows, settings.heldout_fraction, seed=settings.seed)

    def on_step(p: FitProgress) -> None:
        report("fitting", 0.05 + 0.85 * p.step / max(p.steps, 1))
        if between_steps is not None:
            between_steps()

    result = fit_slots(
        frozen.backbone.model,
        frozen.projector,
        base,
        train,
        held,
        steps=settings.steps_for(len(train)),
        lr=settings.lr_for(frozen.embedding_rms),
        batch_size=settings.batch_size,
        eval_every=settings.eval_every,
        patience=settings.patience,
        seed=settings.seed,
        cancel=cancel,
        progress=on_step,
        rank=rank,
        change=change,
    )
    losses = {
        "heldout_before": result.heldout_loss_before,
        "heldout_after": result.heldout_loss_after,
        "train_loss": result.train_losses[-1] if result.train_losses else None,
        "steps": result.steps_run,
    }
    if result.stopped == "cancelled" or (cancel is not None and cancel.is_set()):
        return finish("cancelled", "cancelled", **losses)
    if not result.improved:
        return finish("no_improvement", "held-out loss did not improve", **losses)
    report("attributing", 0.92)
    sources = memory_inspect.conversation_shares(
        frozen, before, train, examples.owner, settings.attribution_windows, cancel=cancel
    )
    if cancel is not None and cancel.is_set():
        return finish("cancelled", "cancelled", **losses)
    report("saving", 0.96)
    parent_sources = _parent_sources(store, base_id)
    outcome = RefitOutcome(
        status="committed", **common, **losses, seconds=time.perf_counter() - started
    )
    blob = VersionBlob(
        tensors=slots_to_bytes(
            result.slots,
            frozen.config,
            {"backbone": frozen.backbone.name, "projector_sha256": frozen.projector_sha256},
            change=result.change,
        ),
        backbone=frozen.backbone.name,
        projector_sha256=frozen.projector_sha256,
        config_json=json.dumps(
            {
                "memory": asdict(frozen.config),
                "refit": settings.to_dict(),
                "fit": {
                    "reason": reason,
                    "windows": outcome.windows,
                    "tokens": outcome.window_tokens,
                    "stopped": result.stopped,
                    "best_step": result.best_step,
                    "heldout_before": result.heldout_loss_before,
                },
                "sources": memory_inspect.merge_sources(sources, parent_sources),
            },
            default=list,
        ),
        train_loss=losses["train_loss"],
        heldout_loss=result.heldout_loss_after,
        trained_through_message_id=through,
        reason=reason,
        sources=frozenset(examples.owner.values()),
    )
    try:
        version = commit_version(
            store,
            profile_id,
            refit_id=refit_id,
            base_version_id=base_id,
            blob=blob,
            steps=result.steps_run,
            detail=_detail(outcome, reason),
        )
    except StaleRefit as exc:
        return finish("cancelled", str(exc), **losses)
    return RefitOutcome(
        **{
            **asdict(outcome),
            "new_version_id": version.id,
            "seconds": time.perf_counter() - started,
        }
    )


def _parent_sources(store: Store, version_id: int | None) -> dict:
    if version_id is None:
        return {}
    try:
        raw = store.get_memory_version(version_id, with_tensors=False).config_json
        return json.loads(raw or "{}").get("sources", {}) or {}
    except Exception:  # noqa: BLE001 - attribution is a nicety; a missing parent is not an error
        return {}


def _detail(outcome: RefitOutcome, reason: str) -> str:
    """The ``refits.detail`` JSON: what `lpm memory status` and the scheduler read back."""
    return json.dumps(
        {
            "reason": reason,
            "through": outcome.trained_through,
            "windows": outcome.windows,
            "tokens": outcome.window_tokens,
            "heldout_before": outcome.heldout_before,
            "heldout_after": outcome.heldout_after,
            "seconds": round(outcome.seconds, 3),
            "note": outcome.detail,
        }
    )
