"""Latent Personal Memory: the backbone's frozen projector, slots fitted per user.

Slots start from the embeddings of the history's salient tokens (``memory/salient.py``) and are
fitted with ``fit_slots``: the same
optimiser, steps, batches and windows as prompt tuning. Before each question the projector reads
the slots, conditioned on the question, and writes M soft tokens. Without shipped weights the
projector is the identity (``load_frozen_memory``): LPM then *is* prompt tuning, and the report
says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from lpm_local.chat.encoding import Turn
from lpm_local.memory.fitting import fit_slots
from lpm_local.memory.frozen import load_frozen_memory, prompt_tuning_config
from lpm_local.research.eval.cases import EvalQuestion
from lpm_local.research.eval.methods.base import (
    BackboneMethod,
    Conditioning,
    MethodSettings,
    UserState,
)


class LatentPersonalMemory(BackboneMethod):
    name = "lpm"
    label = "LPM (projector + per-user slots)"
    # Rank of the change a fit learns (``fit_slots(rank=...)``); None: every slot number.
    change_rank: int | None = None

    def __init__(self, backbone, settings: MethodSettings | None = None):
        super().__init__(backbone, settings)
        self.frozen = load_frozen_memory(backbone)
        if not self.frozen.shipped:
            # Without a trained projector LPM is prompt tuning from the salient start: it gets
            # prompt tuning's number of soft tokens, so both hold the same per-user state (the
            # app's own memory for such a backbone is a routed bank: the ``lpm_bank`` method).
            config = prompt_tuning_config(backbone.hidden_size, self.settings.soft_tokens)
            self.frozen = load_frozen_memory(backbone, config)

    def fit(self, history: Sequence[Turn]) -> UserState:
        seed = self.user_seed(history)
        slots = self.frozen.fresh_slots(list(history), seed=seed)
        windows = self.training_windows(history)
        trainable = (
            slots.numel() if self.change_rank is None else self.change_rank * sum(slots.shape)
        )
        if windows and self.settings.steps > 0:
            slots = fit_slots(
                self.model,
                self.frozen.projector,
                slots,
                windows,
                steps=self.settings.steps,
                lr=self.settings.lr(self.name),
                batch_size=self.settings.batch_size,
                seed=seed,
                rank=self.change_rank,
            ).slots
        return UserState(tuple(history), trainable=int(trainable), tensor=slots)

    def condition(self, state: UserState, question: EvalQuestion) -> Conditioning:
        soft, _ = self.frozen.soft(state.tensor, question.prompt)  # [M, H], question-conditioned
        return Conditioning(soft=soft)

    def describe(self) -> dict:
        c = self.frozen.config
        return {
            **super().describe(),
            "projector": "shipped" if self.frozen.shipped else "identity (untrained)",
            "slot_init": "salient tokens",
            "projector_sha256": self.frozen.projector_sha256,
            "slots": [c.n_slots, c.slot_dim],
            "soft_tokens": c.n_soft_tokens,
            "lr": self.settings.lr(self.name),
            "steps": self.settings.steps,
            "change_rank": self.change_rank,
        }
