"""Per-user prompt tuning: M soft tokens fitted on the user's history, nothing else.

The prompt is peft's prompt tuning (``PromptTuningConfig``: M virtual tokens of the hidden size
prepended to the input embeddings, only they train; an equivalence test checks our loss against
peft's ``PeftModelForCausalLM``). It is initialised from random vocabulary embeddings (peft's
``SAMPLE_VOCAB``, drawn by ``init_slots`` from the user's seed) and fitted by ``fit_slots`` with
``projector=None``: the very optimiser, steps, batches and windows that fit LPM's slots, so the
two differ only in the projector (the recall table's baseline).
"""

from __future__ import annotations

from collections.abc import Sequence

from peft import PromptTuningConfig, PromptTuningInit

from lpm_local.chat.encoding import Turn
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.fitting import fit_slots
from lpm_local.memory.slots import init_slots
from lpm_local.research.eval.cases import EvalQuestion
from lpm_local.research.eval.methods.base import (
    BackboneMethod,
    Conditioning,
    MethodSettings,
    UserState,
)


class PromptTuning(BackboneMethod):
    name = "prompt_tuning"
    label = "per-user prompt tuning (peft)"
    tokens_setting = "soft_tokens"

    def __init__(self, backbone, settings: MethodSettings | None = None):
        super().__init__(backbone, settings)
        tokens = getattr(self.settings, self.tokens_setting) if self.tokens_setting else 1
        self.peft_config = PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=tokens,
            token_dim=backbone.hidden_size,
            num_transformer_submodules=1,
            prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB,
        )
        hidden = backbone.hidden_size
        self.memory_config = MemoryConfig(
            hidden_size=hidden, slot_dim=hidden, n_slots=tokens, n_soft_tokens=tokens, heads=1
        )

    def fit(self, history: Sequence[Turn]) -> UserState:
        seed = self.user_seed(history)
        weight = self.model.get_input_embeddings().weight
        prompt = init_slots(self.memory_config, weight, seed=seed)  # [M, H]: vocabulary samples
        windows = self.training_windows(history)
        if windows and self.settings.steps > 0:
            prompt = fit_slots(
                self.model,
                None,
                prompt,
                windows,
                steps=self.settings.steps,
                lr=self.settings.lr(self.name),
                batch_size=self.settings.batch_size,
                seed=seed,
            ).slots
        return UserState(tuple(history), trainable=int(prompt.numel()), tensor=prompt)

    def condition(self, state: UserState, question: EvalQuestion) -> Conditioning:
        return Conditioning(soft=state.tensor)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "virtual_tokens": self.peft_config.num_virtual_tokens,
            "lr": self.settings.lr(self.name),
            "steps": self.settings.steps,
        }
