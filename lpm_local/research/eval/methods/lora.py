"""Per-user LoRA: low-rank adapters on the attention maps, fitted on the user's history.

peft's ``LoraConfig`` (rank ``lora_rank`` on ``lora_targets``) is attached to the shared backbone
only while it is in use, in place, and removed with ``unload()``, which puts the original layers
back: other methods (and other users) always see the bare backbone. A user's state is the adapter
weights (CPU). Fitting uses the same windows, batches, steps and Adam as the soft-prompt methods,
with the loss of ``lpm_local.memory.lm`` on the adapted model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from lpm_local.chat.encoding import Turn
from lpm_local.memory.fitting import _batches as fitting_batches  # the soft-prompt fits' batches
from lpm_local.memory.lm import mean_loss
from lpm_local.research.eval.cases import EvalQuestion
from lpm_local.research.eval.methods.base import (
    BackboneMethod,
    Conditioning,
    MethodSettings,
    UserState,
)


class PerUserLora(BackboneMethod):
    name = "lora"
    label = "per-user LoRA (peft)"

    def __init__(self, backbone, settings: MethodSettings | None = None):
        super().__init__(backbone, settings)
        s = self.settings
        self.config = LoraConfig(
            r=s.lora_rank,
            lora_alpha=s.lora_alpha,
            lora_dropout=0.0,
            bias="none",
            target_modules=list(s.lora_targets),
            task_type="CAUSAL_LM",
        )
        self._attached: UserState | None = None

    def fit(self, history: Sequence[Turn]) -> UserState:
        seed = self.user_seed(history)
        windows = self.training_windows(history)
        with self._adapter(None, seed) as peft_model:
            params = [p for p in peft_model.parameters() if p.requires_grad]
            trainable = sum(p.numel() for p in params)
            if windows and self.settings.steps > 0:
                self._train(params, windows, seed)
            weights = {
                k: v.detach().cpu().clone()
                for k, v in get_peft_model_state_dict(peft_model).items()
            }
        return UserState(tuple(history), trainable=trainable, extra={"lora": weights, "seed": seed})

    @contextmanager
    def using(self, state: UserState) -> Iterator[None]:
        with self._adapter(state.extra["lora"], state.extra["seed"]):
            self._attached = state
            try:
                yield
            finally:
                self._attached = None

    def condition(self, state: UserState, question: EvalQuestion) -> Conditioning:
        if self._attached is not state:
            raise RuntimeError("LoRA: score a state inside `with method.using(state):`")
        return Conditioning()

    def describe(self) -> dict:
        s = self.settings
        return {
            **super().describe(),
            "rank": s.lora_rank,
            "alpha": s.lora_alpha,
            "targets": list(s.lora_targets),
            "lr": s.lr(self.name),
            "steps": s.steps,
        }

    def _train(self, params: list[torch.nn.Parameter], windows, seed: int) -> None:
        optimizer = torch.optim.Adam(params, lr=self.settings.lr(self.name))
        batches = fitting_batches(list(windows), self.settings.batch_size, seed)
        with torch.enable_grad():
            for _ in range(self.settings.steps):
                loss = mean_loss(self.model, None, next(batches))
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    @contextmanager
    def _adapter(self, weights: dict | None, seed: int):
        """Attach a LoRA adapter to the backbone (seeded init, or ``weights``), then remove it."""
        device = self.backbone.device
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)  # LoRA A is random at init: same user, same start
            peft_model = get_peft_model(self.model, self.config)
        try:
            if weights is not None:
                result = set_peft_model_state_dict(peft_model, weights)
                if getattr(result, "unexpected_keys", None):
                    raise RuntimeError(f"LoRA weights do not fit: {result.unexpected_keys[:3]}")
            yield peft_model
        finally:
            peft_model.unload()  # the original layers go back: the backbone is bare again
