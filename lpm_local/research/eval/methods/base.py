"""The one interface every compared method implements, and the shared machinery behind it.

A method turns a user's history (only the turns before the question's point in time) into a
``UserState`` (``fit``), and then, per question, into a ``Conditioning``: an optional soft prefix
[M, H] and the history turns to put in the prompt. Everything downstream (option scoring,
greedy answers, time to first token, KV-cache size) is shared here, so methods differ only in
what they fit and what they put before the question, never in how they are measured.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from lpm_local.chat.encoding import ChatFormat, Turn
from lpm_local.memory.windows import Window, WindowConfig, make_windows, qa_window
from lpm_local.research.eval.cases import EvalQuestion
from lpm_local.research.eval.scoring import ContextCache, prompt_length, score_windows

# Per-method default learning rates, used when no lr grid search ran (``lpm eval --lr-grid``).
# 3e-2 won the recall table's search for 8 full-width soft tokens at 10 steps (grid 1e-2, 3e-2,
# 1e-1 on validation users, by margin); LoRA updates weight matrices and takes less.
DEFAULT_LRS = {
    "prompt_tuning": 3e-2,
    "lpm": 3e-2,
    "lpm_untrained": 3e-2,
    "lpm_bank": 3e-2,
    "e2p": 3e-2,
    "lora": 1e-3,
}


@dataclass(frozen=True)
class MethodSettings:
    """The budget every fitted method shares, and each baseline's own knob."""

    # Adam steps per user fit, the same for prompt tuning, LoRA, LPM and E2P (equal budget);
    # 10 as in the recall table that ships with the projector (a refit in ~1 min on CPU).
    steps: int = 10
    # Windows per step: ~1-3 s of forward+backward for SmolLM2 on 2 cores.
    batch_size: int = 8
    # Learning rate per fitted method (missing: DEFAULT_LRS).
    lrs: tuple[tuple[str, float], ...] = ()
    # One exchange per window, no context: the cheapest windows covering the history.
    window: WindowConfig = field(
        default_factory=lambda: WindowConfig(context_turns=0, target_turns=2)
    )
    # Soft tokens of per-user prompt tuning: 8 x hidden, the same state as LPM's 8 slots (and
    # LPM's soft tokens on a backbone without a trained projector).
    soft_tokens: int = 8
    # LoRA rank and scale on the attention query/value maps: "small", as per-user adapters are.
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    # History turns retrieved per question (MiniLM cosine).
    retrieval_k: int = 5
    # Tokens of the backbone's window kept free for the question and the answer.
    answer_reserve: int = 256
    # A shared context at least this long is prefilled once per fit (``ContextCache``).
    cache_min_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.soft_tokens < 1 or self.lora_rank < 1:
            raise ValueError(
                f"bad method settings: steps={self.steps} batch_size={self.batch_size} "
                f"soft_tokens={self.soft_tokens} lora_rank={self.lora_rank}"
            )
        if self.retrieval_k < 1 or self.answer_reserve < 16:
            raise ValueError(
                f"retrieval_k must be >= 1 and answer_reserve >= 16, got "
                f"{self.retrieval_k}, {self.answer_reserve}"
            )
        for name, lr in self.lrs:
            if not 0 < lr < 10:
                raise ValueError(f"learning rate for {name} must be in (0, 10), got {lr}")

    def lr(self, method: str) -> float:
        return dict(self.lrs).get(method, DEFAULT_LRS.get(method, 1e-2))


@dataclass
class UserState:
    """What a method keeps for one user after ``fit`` (never shared between users)."""

    history: tuple[Turn, ...]
    trainable: int = 0  # per-user trainable numbers
    tensor: torch.Tensor | None = None  # fitted soft prompt / slots / vector (CPU fp32)
    extra: dict = field(default_factory=dict)  # method-specific (LoRA weights, retrieval index)


@dataclass(frozen=True)
class Conditioning:
    """What goes before the question: soft prefix [M, H] and history turns in the prompt."""

    soft: torch.Tensor | None = None
    context: tuple[Turn, ...] = ()
    cacheable: bool = False  # the same for every question of a state: prefill it once


@runtime_checkable
class Method(Protocol):
    name: str

    def fit(self, history: Sequence[Turn]) -> UserState: ...

    def score_options(
        self, state: UserState, question: EvalQuestion, options: Sequence[str] | None = None
    ) -> list[float]: ...

    def generate(
        self, state: UserState, question: EvalQuestion, *, max_new_tokens: int = 32
    ) -> str: ...

    def kv_tokens(self, state: UserState, question: EvalQuestion) -> int: ...

    def trainable_params(self, state: UserState) -> int: ...

    def time_to_first_token(self, state: UserState, question: EvalQuestion) -> float: ...

    def using(self, state: UserState): ...

    def describe(self) -> dict: ...


class BackboneMethod:
    """A method on a frozen ``Backbone``; subclasses implement ``fit`` and ``condition``."""

    name = "base"
    label = "base"

    def __init__(self, backbone, settings: MethodSettings | None = None):
        self.backbone = backbone
        self.settings = settings or MethodSettings()
        self.model = backbone.model
        self.chat = ChatFormat(backbone.tokenizer)
        self._cache: tuple[int, ContextCache] | None = None  # (id of the state, its cache)
        self._engine = None

    # -- what subclasses provide -------------------------------------------------------------

    def fit(self, history: Sequence[Turn]) -> UserState:
        return UserState(tuple(history))

    def condition(self, state: UserState, question: EvalQuestion) -> Conditioning:
        raise NotImplementedError

    @contextmanager
    def using(self, state: UserState) -> Iterator[None]:
        """Held around all questions of one state (LoRA attaches its adapter here)."""
        yield

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label}

    # -- shared measurement ------------------------------------------------------------------

    def score_options(
        self, state: UserState, question: EvalQuestion, options: Sequence[str] | None = None
    ) -> list[float]:
        """Mean token log-prob of each option after the conditioned prompt."""
        cond = self.condition(state, question)
        windows = self._windows(cond, question, options or question.options)
        cache = self._shared_cache(state, cond, question)
        if cache is not None:
            return cache.score(windows)
        return score_windows(self.model, cond.soft, windows)

    def generate(
        self, state: UserState, question: EvalQuestion, *, max_new_tokens: int = 32
    ) -> str:
        """Greedy answer to the question (for token F1)."""
        cond = self.condition(state, question)
        ids = self._prompt_ids(cond, question)
        cache = self._shared_cache(state, cond, question) or ContextCache(self.model, cond.soft, ())
        new = cache.greedy(ids, max_new_tokens, self.engine.eos_token_ids)
        return self.backbone.tokenizer.decode(new, skip_special_tokens=True).strip()

    def kv_tokens(self, state: UserState, question: EvalQuestion) -> int:
        """Tokens in the KV cache when the answer starts: soft tokens + prompt tokens."""
        cond = self.condition(state, question)
        soft = 0 if cond.soft is None else int(cond.soft.shape[-2])
        return soft + len(self._prompt_ids(cond, question))

    def trainable_params(self, state: UserState) -> int:
        return state.trainable

    def time_to_first_token(self, state: UserState, question: EvalQuestion) -> float:
        """Wall time from the question to the first generated token, with no cache reused:
        conditioning (projector, retrieval) + prefill + one decoding step."""
        engine = self.engine  # built outside the timed region (it prepares the tokenizer once)
        start = time.perf_counter()
        cond = self.condition(state, question)
        ids = torch.tensor([self._prompt_ids(cond, question)], device=self.backbone.device)
        engine.generate(ids, cond.soft, max_new_tokens=1)
        return time.perf_counter() - start

    @property
    def engine(self):
        if self._engine is None:
            from lpm_local.chat.engine import ChatEngine

            self._engine = ChatEngine(self.backbone)
        return self._engine

    # -- helpers -----------------------------------------------------------------------------

    def training_windows(self, history: Sequence[Turn]) -> list[Window]:
        return make_windows(self.chat, history, self.settings.window)

    def user_seed(self, history: Sequence[Turn]) -> int:
        """A per-user seed (the same for every fit of one user): inits differ across users,
        and prompt tuning and LPM start from the same point for the same user."""
        # The repr of (role, content) pairs: the seeds of every recorded run were made from it.
        head = repr(tuple((t.role, t.content) for t in history[:4]))
        head = head.encode("utf-8", "surrogatepass")
        return (self.settings.seed * 100_003 + zlib.crc32(head)) % (2**31)

    def context_ids(self, context: Sequence[Turn]) -> list[int]:
        return self.chat.context_ids(context)

    def _windows(
        self, cond: Conditioning, question: EvalQuestion, options: Sequence[str]
    ) -> list[Window]:
        return [
            qa_window(
                self.chat, question.prompt, question.answer_prefix, option, context=cond.context
            )
            for option in options
        ]

    def _prompt_ids(self, cond: Conditioning, question: EvalQuestion) -> list[int]:
        """Prompt through the answer prefix: what precedes an option (or a generated answer)."""
        window = qa_window(
            self.chat, question.prompt, question.answer_prefix, "x", context=cond.context
        )
        return list(window.input_ids[: prompt_length([window])])

    def _shared_cache(
        self, state: UserState, cond: Conditioning, question: EvalQuestion
    ) -> ContextCache | None:
        """The state's prefilled context, built on first use (one state cached at a time)."""
        if not cond.cacheable:
            return None
        ids = self.context_ids(cond.context)
        if len(ids) < self.settings.cache_min_tokens:
            return None
        if tuple(self._prompt_ids(cond, question)[: len(ids)]) != tuple(ids):
            return None  # a template that renders the context differently before a question
        if (
            self._cache is None
            or self._cache[0] != id(state)
            or self._cache[1].prefix_ids != tuple(ids)
        ):
            self._cache = None  # free the old cache before building the new one
            self._cache = (id(state), ContextCache(self.model, cond.soft, ids))
        return self._cache[1]

    def release(self) -> None:
        """Drop the cached context (call when a state is done)."""
        self._cache = None
